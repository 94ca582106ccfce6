//! The OAuth2 client the stored secret holds.

use std::fmt;

use mlflow_secrets_auth_core::secrecy::{ExposeSecret, SecretString};
use mlflow_secrets_auth_core::{Result, SecretError};

use crate::config::CLIENT_ID;

/// A client id and its secret.
#[derive(Clone)]
pub struct Client {
    /// The client id (not a secret; shown in errors and `info`).
    pub id: String,
    /// The client secret.
    pub secret: SecretString,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("secret", &"***")
            .finish()
    }
}

/// The longest client id or secret read (far above any IdP's).
const MAX_FIELD: usize = 4096;

impl Client {
    /// The client in a stored secret: `{"client_id": …, "client_secret": …}`,
    /// or the bare secret when `client_id` (from `MLFLOW_SECRETS_OAUTH_CLIENT_ID`)
    /// is given. Errors name the fields expected, never a value.
    pub fn parse(text: &str, client_id: Option<&str>) -> Result<Self> {
        let text = text.trim();
        let expected = || {
            SecretError::invalid_secret(format!(
                "for OAuth2 the secret must be a JSON object with `client_id` and `client_secret`, or the client secret alone with {CLIENT_ID} set"
            ))
        };
        let (id, secret) = if text.starts_with('{') {
            let value: serde_json::Value = serde_json::from_str(text).map_err(|_| expected())?;
            if value.get("private_key").is_some() {
                return Err(SecretError::invalid_secret(
                    "the secret holds a `private_key`: private_key_jwt is not supported by this version; store `client_secret` instead",
                ));
            }
            let field = |name: &str| value.get(name).and_then(|v| v.as_str()).map(str::trim);
            let id = field("client_id").or(client_id).ok_or_else(expected)?;
            let secret = field("client_secret").ok_or_else(expected)?;
            (id.to_owned(), secret.to_owned())
        } else {
            let id = client_id.ok_or_else(expected)?;
            (id.to_owned(), text.to_owned())
        };
        if id.is_empty() || secret.is_empty() {
            return Err(expected());
        }
        if id.len() > MAX_FIELD || secret.len() > MAX_FIELD {
            return Err(SecretError::invalid_secret(format!(
                "the OAuth2 client id or secret is longer than {MAX_FIELD} bytes"
            )));
        }
        if id.chars().any(char::is_control) || secret.chars().any(char::is_control) {
            return Err(SecretError::invalid_secret(
                "the OAuth2 client id or secret holds a control character",
            ));
        }
        Ok(Self {
            id,
            secret: secret.into(),
        })
    }

    /// Whether `other` is the same client with the same secret.
    pub fn same_as(&self, other: &Self) -> bool {
        self.id == other.id && self.secret.expose_secret() == other.secret.expose_secret()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_or_bare_with_the_id_variable() {
        let client = Client::parse(
            r#"{"client_id": "mlflow-ci", "client_secret": "s3cr:t %x"}"#,
            None,
        )
        .unwrap();
        assert_eq!(client.id, "mlflow-ci");
        assert_eq!(client.secret.expose_secret(), "s3cr:t %x");
        let client = Client::parse(" bare-secret\n", Some("mlflow-ci")).unwrap();
        assert_eq!(client.secret.expose_secret(), "bare-secret");
        assert!(!format!("{client:?}").contains("bare-secret"));
    }

    #[test]
    fn anything_else_names_the_fields_and_never_the_value() {
        for (text, id) in [
            ("bare-secret-value", None),
            (r#"{"client_id": "x"}"#, None),
            (r#"{"client_secret": "hidden-value"}"#, None),
            (r#"{"token": "hidden-value"}"#, Some("x")),
            ("{not json hidden-value", None),
        ] {
            let error = Client::parse(text, id).unwrap_err().to_string();
            assert!(error.contains("client_secret"), "{error}");
            assert!(!error.contains("hidden-value") && !error.contains("bare-secret"));
        }
        let error = Client::parse(r#"{"client_id": "x", "private_key": "k"}"#, None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("private_key_jwt"), "{error}");
    }
}
