//! The HTTP side: OpenID discovery and the client-credentials token request
//! (RFC 6749 §4.4), with every answer bounded and every error reduced to
//! what the IdP said (`error`, `error_description`), redacted and capped.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use mlflow_secrets_auth_core::secrecy::{ExposeSecret, SecretString};
use mlflow_secrets_auth_core::{ErrorKind, Result, SecretError, classify};
use url::Url;
use url::form_urlencoded;
use zeroize::Zeroizing;

use crate::client::{Client, Proof};
use crate::config::{AUDIENCE, ClientAuth, ISSUER, OAuthConfig, RESOURCE, SCOPE, endpoint_url};

/// The largest answer read from the IdP.
const MAX_ANSWER: usize = 64 * 1024;

/// The shortest token lifetime taken: one that ends sooner would bring a
/// token request per request.
const MIN_LIFETIME: Duration = Duration::from_secs(1);

/// The longest access token accepted.
const MAX_TOKEN: usize = 16 * 1024;

/// An access token and how long it lives.
pub(crate) struct Token {
    pub(crate) value: SecretString,
    pub(crate) lifetime: Duration,
}

/// Why a token request failed.
pub(crate) enum Refused {
    /// The IdP did not accept the client (`invalid_client`, or a 401): its
    /// secret may have been rotated.
    Client(SecretError),
    /// Anything else.
    Other(SecretError),
}

impl From<SecretError> for Refused {
    fn from(error: SecretError) -> Self {
        Self::Other(error)
    }
}

/// A client for the IdP: no redirects followed (the client secret must not
/// travel on), rustls; a proxy from the environment for https only (over
/// plain http, loopback only, it would read the secret).
pub(crate) fn http_client() -> Result<reqwest::Client> {
    mlflow_secrets_auth_core::proxy::https_only(reqwest::Client::builder())
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| {
            SecretError::new(
                ErrorKind::Config,
                format!("cannot build the HTTP client: {e}"),
            )
        })
}

/// The body of `response`, at most [`MAX_ANSWER`] bytes.
async fn bounded(response: reqwest::Response) -> Result<Vec<u8>> {
    mlflow_secrets_auth_core::http::bounded_body(response, MAX_ANSWER, "the IdP").await
}

fn transport(error: reqwest::Error) -> SecretError {
    let kind = if error.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::Transient
    };
    // reqwest's text names the URL, which holds nothing secret here.
    SecretError::new(kind, format!("the IdP could not be reached: {error}")).with_source(error)
}

/// The token endpoint named by `issuer`'s discovery document, whose
/// `issuer` must be the one configured.
pub(crate) async fn discover(http: &reqwest::Client, issuer: &Url) -> Result<Url> {
    let base = issuer.as_str().trim_end_matches('/');
    let document = format!("{base}/.well-known/openid-configuration");
    let response = http.get(&document).send().await.map_err(transport)?;
    let status = response.status().as_u16();
    let body = bounded(response).await?;
    if status != 200 {
        return Err(SecretError::new(
            classify::status_kind(status),
            format!("the discovery document {document} answered {status}"),
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(&body).map_err(|_| {
        SecretError::config(
            ISSUER,
            format!("{document} is not a JSON discovery document"),
        )
    })?;
    let said = value.get("issuer").and_then(|v| v.as_str()).unwrap_or("");
    if said.trim_end_matches('/') != base {
        return Err(SecretError::config(
            ISSUER,
            format!(
                "the discovery document names the issuer {}, not {base}",
                classify::server_said(said)
            ),
        ));
    }
    let endpoint = value
        .get("token_endpoint")
        .and_then(|v| v.as_str())
        .ok_or_else(|| {
            SecretError::config(ISSUER, format!("{document} names no token_endpoint"))
        })?;
    // The same rule as a configured one: https, or http on loopback.
    endpoint_url(endpoint, ISSUER, "https://idp.example.com/oauth2/token").map_err(|e| {
        SecretError::config(
            ISSUER,
            format!(
                "the discovery document's token_endpoint is refused: {}",
                e.message()
            ),
        )
    })
}

/// `application/x-www-form-urlencoded` of one value (RFC 6749 §2.3.1
/// encodes the id and the secret so before Basic's base64).
fn form(value: &str) -> Zeroizing<String> {
    Zeroizing::new(form_urlencoded::byte_serialize(value.as_bytes()).collect())
}

/// The form of a token request, with the client in it for
/// `client_secret_post` and `private_key_jwt` (an assertion for `endpoint`).
fn request_body(
    config: &OAuthConfig,
    client: &Client,
    endpoint: &Url,
) -> Result<Zeroizing<String>> {
    let mut body = form_urlencoded::Serializer::new(String::new());
    body.append_pair("grant_type", "client_credentials");
    for (name, value) in [
        ("scope", &config.scope),
        ("audience", &config.audience),
        ("resource", &config.resource),
    ] {
        if let Some(value) = value {
            body.append_pair(name, value);
        }
    }
    match (&client.proof, config.client_auth) {
        (Proof::Secret(secret), ClientAuth::SecretPost) => {
            body.append_pair("client_id", &client.id);
            body.append_pair("client_secret", secret.expose_secret());
        }
        (Proof::Key(key), _) => {
            let assertion = client.assertion(key, endpoint.as_str())?;
            // Single use, but an IdP may echo it in an error.
            mlflow_secrets_auth_core::hide_while_current("oauth assertion", &assertion);
            body.append_pair("client_id", &client.id);
            body.append_pair(
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            );
            body.append_pair("client_assertion", &assertion);
        }
        (Proof::Secret(_), _) => {}
    }
    Ok(Zeroizing::new(body.finish()))
}

/// Asks `endpoint` for a token for `client`.
pub(crate) async fn request_token(
    http: &reqwest::Client,
    endpoint: &Url,
    config: &OAuthConfig,
    client: &Client,
) -> std::result::Result<Token, Refused> {
    let body = request_body(config, client, endpoint)?;
    let mut request = http
        .post(endpoint.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        );
    if let (Proof::Secret(secret), ClientAuth::SecretBasic) = (&client.proof, config.client_auth) {
        let pair = Zeroizing::new(format!(
            "{}:{}",
            *form(&client.id),
            *form(secret.expose_secret())
        ));
        let encoded = Zeroizing::new(STANDARD.encode(pair.as_bytes()));
        // An IdP may echo the header it was sent.
        mlflow_secrets_auth_core::hide_everywhere(&encoded);
        let mut value = reqwest::header::HeaderValue::try_from(format!("Basic {}", *encoded))
            .map_err(|_| {
                SecretError::invalid_secret("the OAuth2 client cannot be written in a header")
            })?;
        value.set_sensitive(true);
        request = request.header(reqwest::header::AUTHORIZATION, value);
    }
    let response = request
        .body(body.as_bytes().to_vec())
        .send()
        .await
        .map_err(transport)?;
    let status = response.status().as_u16();
    let retry_after = mlflow_secrets_auth_core::http::retry_after(&response);
    let answer = Zeroizing::new(bounded(response).await?);
    if status == 200 {
        return Ok(token(&answer)?);
    }
    Err(refusal(status, &answer, retry_after, config, client))
}

/// The token in a 200 answer.
fn token(answer: &[u8]) -> Result<Token> {
    let value: serde_json::Value = serde_json::from_slice(answer).map_err(|_| {
        SecretError::new(
            ErrorKind::Rejected,
            "the token endpoint's answer is not JSON",
        )
    })?;
    let access = value
        .get("access_token")
        .and_then(|v| v.as_str())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            SecretError::new(
                ErrorKind::Rejected,
                "the token endpoint's answer has no access_token",
            )
        })?;
    if access.len() > MAX_TOKEN {
        return Err(SecretError::new(
            ErrorKind::Rejected,
            format!("the access token is longer than {MAX_TOKEN} bytes"),
        ));
    }
    let kind = value.get("token_type").and_then(|v| v.as_str());
    if kind.is_some_and(|k| !k.eq_ignore_ascii_case("bearer")) {
        return Err(SecretError::new(
            ErrorKind::Rejected,
            format!(
                "the token endpoint gave a token_type of {} where `Bearer` was expected",
                classify::server_said(kind.unwrap_or_default())
            ),
        ));
    }
    // A number, or a number in a string (some IdPs); whole seconds.
    let expires_in = match value.get("expires_in") {
        None | Some(serde_json::Value::Null) => None,
        Some(given) => Some(
            given
                .as_f64()
                .or_else(|| given.as_str().and_then(|s| s.trim().parse::<f64>().ok()))
                .filter(|secs| secs.is_finite() && *secs >= 0.0)
                .ok_or_else(|| {
                    SecretError::new(
                        ErrorKind::Rejected,
                        "the token endpoint's expires_in is not a number of seconds",
                    )
                })?,
        ),
    };
    let stated = expires_in
        .map(|secs| Duration::from_secs_f64(secs.min(crate::MAX_LIFETIME.as_secs_f64()).floor()));
    let lifetime = match (stated, jwt_lifetime(access, SystemTime::now())) {
        // Both: the earlier end (an IdP counts `exp` from a whole second,
        // so `expires_in` can outlast it by almost one). An `exp` already
        // past says this clock is ahead of the IdP's: `expires_in` then.
        (Some(stated), Some(left)) if !left.is_zero() => stated.min(left),
        (Some(stated), _) => stated,
        (None, Some(left)) => left,
        // Nothing says how long it lives: assume not long.
        (None, None) => crate::UNSTATED_LIFETIME,
    };
    if lifetime < MIN_LIFETIME {
        // Served, it would bring a token request per request: an error,
        // retried with backoff (and counted by the circuit breaker).
        return Err(SecretError::new(
            ErrorKind::Transient,
            "the token endpoint gave a token that expires at once (expires_in 0, or a JWT exp within a second)",
        ));
    }
    Ok(Token {
        value: access.into(),
        lifetime: mlflow_secrets_auth_core::capped(lifetime),
    })
}

/// What is left of a JWT's `exp`, when the token is one.
fn jwt_lifetime(token: &str, now: SystemTime) -> Option<Duration> {
    let at = crate::claims(token)?.expires?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The error for a refused token request.
fn refusal(
    status: u16,
    answer: &[u8],
    retry_after: Option<Duration>,
    config: &OAuthConfig,
    client: &Client,
) -> Refused {
    let value: serde_json::Value = serde_json::from_slice(answer).unwrap_or_default();
    let code = value.get("error").and_then(|v| v.as_str()).unwrap_or("");
    let description = value
        .get("error_description")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let said = match (code, description) {
        ("", _) => String::new(),
        (code, "") => format!(": {}", classify::server_said(code)),
        (code, description) => format!(
            ": {} ({})",
            classify::server_said(code),
            classify::server_said(description)
        ),
    };
    let id = classify::server_said(&client.id);
    match code {
        "invalid_client" => Refused::Client(SecretError::new(
            ErrorKind::PermissionDenied,
            format!("the token endpoint refused the client `{id}` ({status}{said})"),
        )),
        _ if status == 401 => Refused::Client(SecretError::new(
            ErrorKind::PermissionDenied,
            format!("the token endpoint refused the client `{id}` ({status}{said})"),
        )),
        "invalid_scope" => Refused::Other(SecretError::config(
            SCOPE,
            format!(
                "{} was refused by the token endpoint ({status}{said})",
                shown(config.scope.as_deref())
            ),
        )),
        "invalid_target" => {
            let variable = if config.resource.is_some() {
                RESOURCE
            } else {
                AUDIENCE
            };
            Refused::Other(SecretError::config(
                variable,
                format!("was refused by the token endpoint ({status}{said})"),
            ))
        }
        "unauthorized_client" | "unsupported_grant_type" | "invalid_grant" => {
            Refused::Other(SecretError::config(
                crate::config::CLIENT_ID,
                format!(
                    "the client `{id}` may not use the client_credentials grant at this token endpoint ({status}{said}); allow it at the IdP"
                ),
            ))
        }
        _ => Refused::Other(
            SecretError::new(
                classify::status_kind(status),
                format!("the token endpoint answered {status}{said}"),
            )
            .with_retry_after(retry_after),
        ),
    }
}

/// A scope as an error shows it (scopes are names, not secrets).
fn shown(scope: Option<&str>) -> String {
    scope.map_or_else(
        || "no scope".to_owned(),
        |s| format!("the scope `{}`", classify::server_said(s)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_answer_is_read_with_its_lifetime() {
        let read =
            token(br#"{"access_token":"at-1","token_type":"bearer","expires_in":"300"}"#).unwrap();
        assert_eq!(read.value.expose_secret(), "at-1");
        assert_eq!(read.lifetime, Duration::from_secs(300));
        let floored = token(br#"{"access_token":"at-1","expires_in":2.9}"#).unwrap();
        assert_eq!(floored.lifetime, Duration::from_secs(2));
        // A JWT whose `exp` ends before `expires_in` does.
        let exp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 100;
        let claims = URL_SAFE_NO_PAD.encode(format!(r#"{{"exp":{exp}}}"#));
        let answer = format!(r#"{{"access_token":"e30.{claims}.c2ln","expires_in":300}}"#);
        let jwt = token(answer.as_bytes()).unwrap();
        assert!(
            jwt.lifetime <= Duration::from_secs(100),
            "{:?}",
            jwt.lifetime
        );
        // A JWT already past its `exp`, with nothing else said: refused.
        let past = URL_SAFE_NO_PAD.encode(format!(r#"{{"exp":{}}}"#, exp - 200));
        let answer = format!(r#"{{"access_token":"e30.{past}.c2ln"}}"#);
        assert!(token(answer.as_bytes()).is_err());
        let unstated = token(br#"{"access_token":"at-1"}"#).unwrap();
        assert_eq!(unstated.lifetime, crate::UNSTATED_LIFETIME);
        for bad in [
            &br#"{"token_type":"Bearer"}"#[..],
            br#"{"access_token":"x","token_type":"DPoP"}"#,
            br#"{"access_token":"x","expires_in":-1}"#,
            br#"{"access_token":"x","expires_in":"soon"}"#,
            br#"{"access_token":"x","expires_in":0}"#,
            br#"{"access_token":"x","expires_in":0.9}"#,
            b"<html>",
        ] {
            assert!(token(bad).is_err());
        }
    }

    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    #[test]
    fn a_jwt_without_expires_in_lives_until_its_exp() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let claims = URL_SAFE_NO_PAD.encode(br#"{"exp":1600,"aud":"mlflow"}"#);
        let jwt = format!("eyJhbGciOiJSUzI1NiJ9.{claims}.c2ln");
        assert_eq!(jwt_lifetime(&jwt, now), Some(Duration::from_secs(600)));
        assert_eq!(jwt_lifetime("opaque-token", now), None);
    }

    #[test]
    fn the_basic_pair_is_form_encoded_first() {
        assert_eq!(*form("id:with %/+ space"), "id%3Awith+%25%2F%2B+space");
    }
}
