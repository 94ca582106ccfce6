//! OAuth2 access tokens for mlflow-secrets-auth: the secret manager holds an
//! OAuth2 *client* (id and secret, or a private key), and what MLflow's gateway accepts is a
//! short-lived access token obtained with it (client-credentials grant,
//! RFC 6749 §4.4) — Keycloak, Entra ID, Okta, Auth0, oauth2-proxy,
//! Databricks.
//!
//! [`OAuthProvider`] wraps any provider: its fetch reads the client from
//! the wrapped provider (kept apart, for an hour at most or until the IdP
//! refuses it) and exchanges it at the token endpoint. The token comes back
//! as the fetched secret with its lifetime, so the cache above keeps it
//! until just before it expires, refreshes it ahead in the background, makes
//! one token request for any number of callers, and never serves it past
//! its expiry. It is written as `Bearer`.
//!
//! ```no_run
//! use mlflow_secrets_auth_core::{Env, FileProvider, SecretProvider};
//! use mlflow_secrets_auth_oauth::{OAuthConfig, OAuthProvider};
//! # async fn run() -> mlflow_secrets_auth_core::Result<()> {
//! let env = Env::process();
//! let config = OAuthConfig::from_env(&env)?.expect("MLFLOW_SECRETS_OAUTH_TOKEN_URL is set");
//! let client = FileProvider::from_env(&env)?; // {"client_id": …, "client_secret": …}
//! let tokens = OAuthProvider::new(client, config)?;
//! let token = tokens.fetch().await?; // an access token and how long it lives
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod client;
mod config;
mod exchange;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mlflow_secrets_auth_core::secrecy::ExposeSecret;
use mlflow_secrets_auth_core::{
    AuthMode, FetchedSecret, ProviderDescription, Result, SecretMeta, SecretProvider,
};
use tokio::sync::Mutex;
use url::Url;

pub use client::Client;
pub use config::{
    AUDIENCE, CLIENT_AUTH, CLIENT_ID, ClientAuth, Endpoint, ISSUER, OAuthConfig, RESOURCE, SCOPE,
    TOKEN_URL, VARIABLES,
};

use exchange::Refused;

/// How long a client read from the wrapped provider is used before it is
/// read again (sooner when the IdP refuses it).
const CLIENT_MAX_AGE: Duration = Duration::from_secs(3600);

/// The lifetime assumed for a token when neither `expires_in` nor a JWT
/// `exp` says (RFC 6749 makes `expires_in` only recommended).
pub const UNSTATED_LIFETIME: Duration = Duration::from_secs(300);

/// The longest `expires_in` taken as given (a year; longer is cut).
const MAX_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// Taken off a token's lifetime, so it is renewed before the gateway would
/// refuse it: a tenth of the lifetime, at most 30 seconds.
fn skewed(lifetime: Duration) -> Duration {
    lifetime.saturating_sub((lifetime / 10).min(Duration::from_secs(30)))
}

/// A provider of OAuth2 access tokens for the client another provider holds.
pub struct OAuthProvider {
    inner: Arc<dyn SecretProvider>,
    config: OAuthConfig,
    http: reqwest::Client,
    /// The client last read, and when.
    client: Mutex<Option<(Client, Instant)>>,
    /// The token endpoint the issuer named, once discovered.
    discovered: Mutex<Option<Url>>,
}

impl std::fmt::Debug for OAuthProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthProvider")
            .field("inner", &self.inner.name())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl OAuthProvider {
    /// Tokens for the client `inner` holds, as `config` says.
    pub fn new(inner: impl SecretProvider + 'static, config: OAuthConfig) -> Result<Self> {
        Self::wrapping(Arc::new(inner), config)
    }

    /// [`Self::new`] for a shared provider.
    pub fn wrapping(inner: Arc<dyn SecretProvider>, config: OAuthConfig) -> Result<Self> {
        Ok(Self {
            inner,
            http: exchange::http_client()?,
            config,
            client: Mutex::new(None),
            discovered: Mutex::new(None),
        })
    }

    /// The settings.
    pub fn config(&self) -> &OAuthConfig {
        &self.config
    }

    /// The client: the one kept, or read from the wrapped provider (`again`:
    /// the IdP refused the one kept, so the provider is asked to refetch).
    async fn client(&self, again: bool) -> Result<Client> {
        let mut kept = self.client.lock().await;
        if !again
            && let Some((client, at)) = kept.as_ref()
            && at.elapsed() < CLIENT_MAX_AGE
        {
            return Ok(client.clone());
        }
        let fetched = if again {
            self.inner.refetch().await?
        } else {
            self.inner.fetch().await?
        };
        let client = Client::parse(
            fetched.text.expose_secret(),
            self.config.client_id.as_deref(),
            self.config.client_auth,
        )
        .map_err(|e| e.with_provider(self.inner.name()))?;
        mlflow_secrets_auth_core::hide_everywhere(client.hidden());
        *kept = Some((client.clone(), Instant::now()));
        Ok(client)
    }

    /// The token endpoint, discovered once from the issuer when not given.
    async fn endpoint(&self) -> Result<Url> {
        let issuer = match &self.config.endpoint {
            Endpoint::TokenUrl(url) => return Ok(url.clone()),
            Endpoint::Issuer(issuer) => issuer,
        };
        let mut known = self.discovered.lock().await;
        if let Some(url) = known.as_ref() {
            return Ok(url.clone());
        }
        let url = exchange::discover(&self.http, issuer).await?;
        *known = Some(url.clone());
        Ok(url)
    }

    /// A new token: the client kept; if the IdP refuses it, the client read
    /// again once (it may have been rotated); if refused still, the error
    /// names the client and the provider holding it.
    async fn exchange(&self) -> Result<FetchedSecret> {
        let endpoint = self.endpoint().await?;
        let client = self.client(false).await?;
        let http = &self.http;
        let token = match exchange::request_token(http, &endpoint, &self.config, &client).await {
            Ok(token) => token,
            Err(Refused::Other(error)) => return Err(error),
            Err(Refused::Client(first)) => {
                tracing::info!(client = %client.id, "the IdP refused the client; reading it again");
                let again = self.client(true).await?;
                if again.same_as(&client) {
                    return Err(self.refused(first));
                }
                match exchange::request_token(http, &endpoint, &self.config, &again).await {
                    Ok(token) => token,
                    Err(Refused::Client(error)) => return Err(self.refused(error)),
                    Err(Refused::Other(error)) => return Err(error),
                }
            }
        };
        mlflow_secrets_auth_core::hide_while_current("oauth token", token.value.expose_secret());
        let mut meta = SecretMeta::default()
            .with_valid_for(skewed(token.lifetime))
            .with_lifetime(token.lifetime);
        meta.auth_mode = Some(AuthMode::Bearer);
        // A token as the JSON form, so that no `:` in it is read as a
        // username and password.
        let text = zeroize::Zeroizing::new(
            serde_json::json!({ "token": token.value.expose_secret() }).to_string(),
        );
        Ok(FetchedSecret::new(text.as_str().into()).with_meta(meta))
    }

    fn refused(
        &self,
        error: mlflow_secrets_auth_core::SecretError,
    ) -> mlflow_secrets_auth_core::SecretError {
        let message = format!(
            "{}; the client comes from provider `{}`: check the client secret stored there and at the IdP",
            error.message(),
            self.inner.name()
        );
        mlflow_secrets_auth_core::SecretError::new(error.kind(), message)
    }
}

/// What a JWT access token says of itself — read, not verified: the token
/// is ours to send, not to trust. Shown by `doctor` so that an `aud` the
/// gateway does not expect is visible; never the token or its signature.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    /// `iss`.
    pub issuer: Option<String>,
    /// `aud` (a string or a list).
    pub audience: Vec<String>,
    /// `exp`.
    pub expires: Option<std::time::SystemTime>,
    /// `scope` (or `scp`, Entra ID's).
    pub scope: Option<String>,
}

/// The claims of `token` when it is a JWT (three dot-separated parts, the
/// second base64url JSON), else `None`.
pub fn claims(token: &str) -> Option<Claims> {
    use base64::Engine as _;
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    let words = |v: &serde_json::Value| match v {
        serde_json::Value::Array(items) => Some(
            items
                .iter()
                .filter_map(serde_json::Value::as_str)
                .collect::<Vec<_>>()
                .join(" "),
        ),
        other => text(other),
    };
    Some(Claims {
        issuer: value.get("iss").and_then(text),
        audience: match value.get("aud") {
            Some(serde_json::Value::Array(items)) => items.iter().filter_map(&text).collect(),
            Some(one) => text(one).into_iter().collect(),
            None => Vec::new(),
        },
        expires: value
            .get("exp")
            .and_then(serde_json::Value::as_u64)
            .and_then(|exp| {
                std::time::SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(exp))
            }),
        scope: value
            .get("scope")
            .or_else(|| value.get("scp"))
            .and_then(words),
    })
}

#[async_trait]
impl SecretProvider for OAuthProvider {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn fetch(&self) -> Result<FetchedSecret> {
        self.exchange().await
    }

    /// The gateway refused the token: a new one (the client is read again
    /// only if the IdP refuses it).
    async fn refetch(&self) -> Result<FetchedSecret> {
        self.exchange().await
    }

    fn describe(&self) -> ProviderDescription {
        let mut description = self.inner.describe();
        let (key, url) = match &self.config.endpoint {
            Endpoint::TokenUrl(url) => ("oauth token endpoint", url),
            Endpoint::Issuer(url) => ("oauth issuer", url),
        };
        description = description.field(key, url.as_str());
        if let Some(id) = &self.config.client_id {
            description = description.field("oauth client id", id.clone());
        }
        for (key, value) in [
            ("oauth scope", &self.config.scope),
            ("oauth audience", &self.config.audience),
            ("oauth resource", &self.config.resource),
        ] {
            if let Some(value) = value {
                description = description.field(key, value.clone());
            }
        }
        description.field("oauth client auth", self.config.client_auth.name())
    }

    fn warnings(&self) -> Vec<String> {
        self.inner.warnings()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_skew_is_a_tenth_at_most_thirty_seconds() {
        assert_eq!(skewed(Duration::from_secs(10)), Duration::from_secs(9));
        assert_eq!(skewed(Duration::from_secs(3600)), Duration::from_secs(3570));
        assert_eq!(skewed(Duration::ZERO), Duration::ZERO);
    }
}
