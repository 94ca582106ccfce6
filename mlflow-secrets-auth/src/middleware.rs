//! [`SecretsAuthMiddleware`] for `reqwest-middleware`: every hop of a request
//! — the request, each redirect, the resend after a 401/403 — is decided by
//! the hop policy ([`mlflow_secrets_auth_core::HopPolicy`]) on the URL exactly as reqwest
//! will send it. On a change of origin every credential header is removed
//! before anything is attached again; after an https→http downgrade nothing is
//! attached; a 401/403 is resent once, only when the body can be replayed and
//! the backend hands out a different credential ([`SecretsAuth::refused`]).
//!
//! Build clients with [`client`] or [`client_from`] (redirects off,
//! middleware on): the middleware follows redirects itself.

use http::Extensions;
use http::header::{self, HeaderValue};
use mlflow_secrets_auth_core::secrecy::ExposeSecret;
use mlflow_secrets_auth_core::{AuthHeader, CREDENTIAL_HEADERS};
use reqwest::{Method, Request, Response, StatusCode};
use reqwest_middleware::{ClientWithMiddleware, Error, Middleware, Next};
use url::Url;

use crate::SecretsAuth;

/// Redirects followed at most per request.
pub const MAX_REDIRECTS: usize = 10;

/// Marks a request that was already resent after a 401/403, so it is never
/// resent twice (whatever other middleware does).
#[derive(Debug, Clone, Copy)]
pub struct CredentialResent;

/// The middleware. Cheap to clone.
///
/// Install it only on a client whose redirects are off (build it with
/// [`client`] or [`client_from`]): a client that follows redirects itself
/// copies a custom header to any host and keeps every header across an
/// https→http downgrade, before this middleware can decide. When a response
/// shows that the client followed a redirect itself, an error is logged.
#[derive(Debug, Clone)]
pub struct SecretsAuthMiddleware {
    auth: SecretsAuth,
}

impl SecretsAuthMiddleware {
    /// A middleware attaching `auth`'s credential.
    pub fn new(auth: SecretsAuth) -> Self {
        Self { auth }
    }

    /// Applies the hop policy to `request` (whose URL is the hop's):
    /// strips what must go, attaches what may. Returns the attached header.
    async fn hop(
        &self,
        request: &mut Request,
        previous: Option<&Url>,
        left_https: &mut bool,
    ) -> reqwest_middleware::Result<Option<AuthHeader>> {
        let (hop, header) = self
            .auth
            .hop(previous, *left_https, request.url())
            .await
            .map_err(Error::middleware)?;
        *left_https = hop.left_https;
        let headers = request.headers_mut();
        if hop.strip_credentials {
            for name in CREDENTIAL_HEADERS {
                headers.remove(name);
            }
        }
        if previous.is_some() {
            headers.remove(self.auth.config().header_name.as_str());
        }
        if let Some(header) = &header {
            set(request, header)?;
        }
        Ok(header)
    }
}

/// Sets `header` on `request`, marked sensitive.
fn set(request: &mut Request, header: &AuthHeader) -> reqwest_middleware::Result<()> {
    let mut value = HeaderValue::from_str(header.value().expose_secret()).map_err(|_| {
        Error::middleware(mlflow_secrets_auth_core::SecretError::invalid_secret(
            "the credential is not a valid HTTP header value",
        ))
    })?;
    value.set_sensitive(true);
    let name = header::HeaderName::from_bytes(header.name().as_str().as_bytes())
        .map_err(Error::middleware)?;
    request.headers_mut().insert(name, value);
    Ok(())
}

/// A client with redirects turned off (this middleware follows them) and the
/// middleware installed.
pub fn client(auth: SecretsAuth) -> reqwest_middleware::Result<ClientWithMiddleware> {
    client_from(reqwest::Client::builder(), auth)
}

/// [`client`] from a builder of your own (timeouts, root certificates,
/// proxies); its redirect policy is replaced: the middleware follows redirects.
pub fn client_from(
    builder: reqwest::ClientBuilder,
    auth: SecretsAuth,
) -> reqwest_middleware::Result<ClientWithMiddleware> {
    let inner = builder
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    Ok(reqwest_middleware::ClientBuilder::new(inner)
        .with(SecretsAuthMiddleware::new(auth))
        .build())
}

/// The next request of a redirect, or `None` when the response is not one we
/// follow (no usable `Location`, a body that cannot be replayed). Credential
/// headers are left to the hop policy.
fn follow(response: &Response, copy: Option<Request>) -> Option<Request> {
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
    *next.url_mut() = target;
    Some(next)
}

/// `url` without its query and fragment (presigned signatures stay out of logs).
fn loggable(url: &Url) -> String {
    format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or_default(),
        url.port().map(|p| format!(":{p}")).unwrap_or_default()
    ) + url.path()
}

#[async_trait::async_trait]
impl Middleware for SecretsAuthMiddleware {
    async fn handle(
        &self,
        mut request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let mut resent = extensions.get::<CredentialResent>().is_some();
        let mut left_https = false;
        let mut hops = 0;
        let mut attached = self.hop(&mut request, None, &mut left_https).await?;
        loop {
            let copy = request.try_clone();
            let url = request.url().clone();
            let response = next.clone().run(request, extensions).await?;
            if response.url() != &url {
                tracing::error!(
                    "the HTTP client followed a redirect itself: build it with `middleware::client` (redirects off) so every hop is checked"
                );
            }
            let status = response.status();
            if let Some(sent) = &attached
                && !resent
                && matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
            {
                // A streamed body cannot be replayed: the refusal goes back as it is.
                let Some(mut again) = copy else {
                    return Ok(response);
                };
                let Some(fresh) = self
                    .auth
                    .refused(sent.value().expose_secret())
                    .await
                    .map_err(Error::middleware)?
                else {
                    return Ok(response);
                };
                tracing::info!(
                    status = status.as_u16(),
                    "server refused the credential: resending once with the new one"
                );
                extensions.insert(CredentialResent);
                resent = true;
                // The same hop again: the policy's verdict stands, only the value changes.
                set(&mut again, &fresh)?;
                attached = Some(fresh);
                request = again;
                continue;
            }
            if hops < MAX_REDIRECTS
                && let Some(mut redirected) = follow(&response, copy)
            {
                tracing::debug!(to = %loggable(redirected.url()), "following redirect");
                hops += 1;
                attached = self
                    .hop(&mut redirected, Some(&url), &mut left_https)
                    .await?;
                request = redirected;
                continue;
            }
            return Ok(response);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_urls_keep_no_query() {
        let url = Url::parse("https://bucket.example:8443/a/b?X-Amz-Signature=abc#f").unwrap();
        assert_eq!(loggable(&url), "https://bucket.example:8443/a/b");
    }
}
