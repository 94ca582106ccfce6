//! [`SecretsAuthMiddleware`] for `reqwest-middleware`: attaches the credential
//! to each request whose host may receive it, refetches it once when the
//! server answers 401/403, and follows redirects itself so that every hop is
//! checked against the allowlist — with the standard `Authorization` header
//! and with a custom header name alike (reqwest only strips `Authorization`).
//!
//! Build clients with [`client`] (redirects off, middleware on).

use http::Extensions;
use http::header::{self, HeaderValue};
use reqwest::{Method, Request, Response, StatusCode};
use reqwest_middleware::{ClientWithMiddleware, Error, Middleware, Next};
use secrets_core::secrecy::ExposeSecret;

use crate::SecretsAuth;

/// Redirects followed at most per request.
pub const MAX_REDIRECTS: usize = 10;

/// Marks a request that was already resent after a 401/403, so it is never
/// resent twice (whatever other middleware does).
#[derive(Debug, Clone, Copy)]
pub struct CredentialResent;

/// The middleware. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SecretsAuthMiddleware {
    auth: SecretsAuth,
}

impl SecretsAuthMiddleware {
    /// A middleware attaching `auth`'s credential.
    pub fn new(auth: SecretsAuth) -> Self {
        Self { auth }
    }

    /// Removes the credential header, then sets it when the request's URL may
    /// receive it. Returns whether it was set.
    async fn attach(&self, request: &mut Request, strip: bool) -> reqwest_middleware::Result<bool> {
        let name = self.auth.config().header_name.as_str();
        if strip {
            request.headers_mut().remove(name);
        }
        let Some(header) = self
            .auth
            .header_for_url(request.url())
            .await
            .map_err(Error::middleware)?
        else {
            return Ok(false);
        };
        let mut value = HeaderValue::from_str(header.value().expose_secret()).map_err(|_| {
            Error::middleware(secrets_core::SecretError::invalid_secret(
                "the credential is not a valid HTTP header value",
            ))
        })?;
        value.set_sensitive(true);
        let name = header::HeaderName::from_bytes(name.as_bytes()).map_err(Error::middleware)?;
        request.headers_mut().insert(name, value);
        Ok(true)
    }
}

/// A client with redirects turned off (this middleware follows them) and the
/// middleware installed.
pub fn client(auth: SecretsAuth) -> reqwest_middleware::Result<ClientWithMiddleware> {
    let inner = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    Ok(reqwest_middleware::ClientBuilder::new(inner)
        .with(SecretsAuthMiddleware::new(auth))
        .build())
}

/// The next request of a redirect, or `None` when the response is not one we
/// follow (no `Location`, too many hops, a body that cannot be replayed).
fn follow(response: &Response, copy: Option<Request>, header_name: &str) -> Option<Request> {
    let status = response.status();
    if !matches!(
        status,
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    ) {
        return None;
    }
    let location = response.headers().get(header::LOCATION)?.to_str().ok()?;
    let target = response.url().join(location).ok()?;
    let mut next = copy?;
    let same_origin = next.url().origin() == target.origin();
    let to_get = status == StatusCode::SEE_OTHER
        || (matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND)
            && *next.method() == Method::POST);
    if to_get {
        *next.method_mut() = Method::GET;
        *next.body_mut() = None;
        for name in [header::CONTENT_TYPE, header::CONTENT_LENGTH] {
            next.headers_mut().remove(name);
        }
    }
    if !same_origin {
        for name in [
            header::AUTHORIZATION,
            header::COOKIE,
            header::PROXY_AUTHORIZATION,
        ] {
            next.headers_mut().remove(name);
        }
    }
    next.headers_mut().remove(header_name);
    *next.url_mut() = target;
    Some(next)
}

#[async_trait::async_trait]
impl Middleware for SecretsAuthMiddleware {
    async fn handle(
        &self,
        mut request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let header_name = self.auth.config().header_name.as_str().to_owned();
        let mut resent = extensions.get::<CredentialResent>().is_some();
        let mut hops = 0;
        let mut strip = false;
        loop {
            let attached = self.attach(&mut request, strip).await?;
            let copy = request.try_clone();
            let response = next.clone().run(request, extensions).await?;
            let status = response.status();
            if attached
                && !resent
                && matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
                && let Some(copy) = copy
            {
                tracing::info!(
                    status = status.as_u16(),
                    "server refused the credential: fetching it again and resending once"
                );
                self.auth.invalidate();
                extensions.insert(CredentialResent);
                resent = true;
                request = copy;
                strip = true;
                continue;
            }
            if hops < MAX_REDIRECTS
                && let Some(redirected) = follow(&response, copy, &header_name)
            {
                tracing::debug!(to = %redirected.url(), "following redirect");
                hops += 1;
                request = redirected;
                strip = true;
                continue;
            }
            return Ok(response);
        }
    }
}
