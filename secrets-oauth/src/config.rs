//! The OAuth2 settings, read from `MLFLOW_SECRETS_OAUTH_*`.

use mlflow_secrets_auth_core::{Env, Result, SecretError, checked_endpoint, is_loopback};
use url::Url;

/// The token endpoint (`https://idp.example.com/oauth2/token`).
pub const TOKEN_URL: &str = "MLFLOW_SECRETS_OAUTH_TOKEN_URL";
/// The issuer, whose OpenID discovery document names the token endpoint.
pub const ISSUER: &str = "MLFLOW_SECRETS_OAUTH_ISSUER";
/// Space-separated scopes to ask for.
pub const SCOPE: &str = "MLFLOW_SECRETS_OAUTH_SCOPE";
/// Sent as `audience` (Auth0, some Keycloak set-ups).
pub const AUDIENCE: &str = "MLFLOW_SECRETS_OAUTH_AUDIENCE";
/// Sent as `resource` (RFC 8707).
pub const RESOURCE: &str = "MLFLOW_SECRETS_OAUTH_RESOURCE";
/// How the client authenticates at the token endpoint.
pub const CLIENT_AUTH: &str = "MLFLOW_SECRETS_OAUTH_CLIENT_AUTH";
/// The client id, when the stored secret holds only the client secret.
pub const CLIENT_ID: &str = "MLFLOW_SECRETS_OAUTH_CLIENT_ID";

/// Every variable of this crate.
pub const VARIABLES: &[&str] = &[
    TOKEN_URL,
    ISSUER,
    SCOPE,
    AUDIENCE,
    RESOURCE,
    CLIENT_AUTH,
    CLIENT_ID,
];

/// Where the token endpoint comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// Given as is.
    TokenUrl(Url),
    /// Read from the issuer's discovery document.
    Issuer(Url),
}

/// How the client proves itself at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// HTTP Basic with the form-urlencoded id and secret (RFC 6749 §2.3.1).
    SecretBasic,
    /// `client_id` and `client_secret` in the request body.
    SecretPost,
    /// An assertion signed with the client's private key (RFC 7523).
    PrivateKeyJwt,
}

impl ClientAuth {
    /// The name as in `MLFLOW_SECRETS_OAUTH_CLIENT_AUTH`.
    pub fn name(self) -> &'static str {
        match self {
            Self::SecretBasic => "client_secret_basic",
            Self::SecretPost => "client_secret_post",
            Self::PrivateKeyJwt => "private_key_jwt",
        }
    }
}

/// The OAuth2 settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthConfig {
    /// The token endpoint or the issuer.
    pub endpoint: Endpoint,
    /// Scopes, space-separated, as sent.
    pub scope: Option<String>,
    /// `audience`.
    pub audience: Option<String>,
    /// `resource`.
    pub resource: Option<String>,
    /// The client authentication method.
    pub client_auth: ClientAuth,
    /// The client id when the stored secret holds only the secret.
    pub client_id: Option<String>,
}

impl OAuthConfig {
    /// A configuration asking `endpoint` for tokens with Basic client
    /// authentication and nothing else set.
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            scope: None,
            audience: None,
            resource: None,
            client_auth: ClientAuth::SecretBasic,
            client_id: None,
        }
    }

    /// The settings in `env`, or `None` when neither a token URL nor an
    /// issuer is set (no exchange: the stored secret is the credential).
    pub fn from_env(env: &Env<'_>) -> Result<Option<Self>> {
        let endpoint = match (env.string(&[TOKEN_URL])?, env.string(&[ISSUER])?) {
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => {
                return Err(SecretError::config(
                    TOKEN_URL,
                    format!(
                        "and {ISSUER} are both set: set one (the issuer's discovery document names the token endpoint)"
                    ),
                ));
            }
            (Some(url), None) => Endpoint::TokenUrl(endpoint_url(
                &url,
                TOKEN_URL,
                "https://idp.example.com/oauth2/token",
            )?),
            (None, Some(url)) => Endpoint::Issuer(endpoint_url(
                &url,
                ISSUER,
                "https://idp.example.com/realms/mlflow",
            )?),
        };
        let client_auth = match env.string(&[CLIENT_AUTH])?.as_deref().map(str::trim) {
            None | Some("" | "client_secret_basic") => ClientAuth::SecretBasic,
            Some("client_secret_post") => ClientAuth::SecretPost,
            Some("private_key_jwt") => ClientAuth::PrivateKeyJwt,
            Some(_) => {
                return Err(SecretError::config(
                    CLIENT_AUTH,
                    "is not a client authentication method (expected client_secret_basic, client_secret_post or private_key_jwt)",
                ));
            }
        };
        let text = |name| -> Result<Option<String>> {
            Ok(env
                .string(&[name])?
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty()))
        };
        Ok(Some(Self {
            endpoint,
            scope: text(SCOPE)?,
            audience: text(AUDIENCE)?,
            resource: text(RESOURCE)?,
            client_auth,
            client_id: text(CLIENT_ID)?,
        }))
    }
}

/// `text` as an endpoint: the usual address checks, then `https`, or
/// `http` on a loopback address only — the client secret travels to it.
pub fn endpoint_url(text: &str, variable: &str, example: &str) -> Result<Url> {
    let checked = checked_endpoint(text, variable, &["http", "https"], example)?;
    let url = Url::parse(&checked).map_err(|e| SecretError::config(variable, e))?;
    if url.scheme() == "http" && !is_loopback(&url) {
        return Err(SecretError::config(
            variable,
            format!(
                "must be https: the client secret would cross the network in plain text to {}; expected the shape {example}",
                url.host_str().unwrap_or_default()
            ),
        ));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::ffi::OsString;

    struct Vars(HashMap<&'static str, &'static str>);

    impl mlflow_secrets_auth_core::EnvSource for Vars {
        fn var_os(&self, name: &str) -> Option<OsString> {
            self.0.get(name).map(OsString::from)
        }
    }

    fn read(vars: &[(&'static str, &'static str)]) -> Result<Option<OAuthConfig>> {
        let vars = Vars(vars.iter().copied().collect());
        OAuthConfig::from_env(&Env::new(&vars))
    }

    #[test]
    fn nothing_set_is_no_exchange() {
        assert_eq!(read(&[(SCOPE, "x")]).unwrap(), None);
    }

    #[test]
    fn a_token_url_with_its_options() {
        let config = read(&[
            (TOKEN_URL, "https://idp.example.com/token"),
            (SCOPE, " api://mlflow/.default "),
            (CLIENT_AUTH, "client_secret_post"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            config.endpoint,
            Endpoint::TokenUrl(Url::parse("https://idp.example.com/token").unwrap())
        );
        assert_eq!(config.scope.as_deref(), Some("api://mlflow/.default"));
        assert_eq!(config.client_auth, ClientAuth::SecretPost);
    }

    #[test]
    fn plain_http_only_on_loopback() {
        assert!(
            read(&[(ISSUER, "http://127.0.0.1:9000")])
                .unwrap()
                .is_some()
        );
        let error = read(&[(TOKEN_URL, "http://idp.example.com/token")])
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with(TOKEN_URL) && error.contains("must be https"),
            "{error}"
        );
    }

    #[test]
    fn mistakes_name_their_variable() {
        for (vars, variable) in [
            (
                &[
                    (TOKEN_URL, "https://a.example/t"),
                    (ISSUER, "https://a.example"),
                ][..],
                TOKEN_URL,
            ),
            (&[(TOKEN_URL, "idp.example.com/token")], TOKEN_URL),
            (
                &[(ISSUER, "https://a.example"), (CLIENT_AUTH, "mtls")],
                CLIENT_AUTH,
            ),
        ] {
            let error = read(vars).unwrap_err().to_string();
            assert!(error.starts_with(variable), "{error}");
        }
    }
}
