//! The HTTP header a credential becomes: [`AuthMode`], [`HeaderName`], [`AuthHeader`].
//!
//! | credential | mode | header | value |
//! |---|---|---|---|
//! | token | bearer | `Authorization` | `Bearer <token>` |
//! | token | bearer | custom | `<token>` as is |
//! | token `u:p` | basic | any | `Basic base64(u:p)` |
//! | token without `:` | basic | any | error |
//! | user + password | basic | any | `Basic base64(u:p)` |
//! | user + password | bearer | any | error |

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use crate::credential::Credential;
use crate::error::{Result, SecretError};
use crate::redact::mask;

/// How a credential is written into the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AuthMode {
    /// `Bearer <token>` (or the bare token under a custom header name).
    #[default]
    Bearer,
    /// `Basic base64(username:password)`.
    Basic,
}

impl AuthMode {
    /// The lower-case name used in configuration: `bearer` or `basic`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bearer => "bearer",
            Self::Basic => "basic",
        }
    }
}

impl fmt::Display for AuthMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The problem with a string that is not an auth mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("is not an auth mode (expected `bearer` or `basic`)")]
pub struct UnknownAuthMode;

impl FromStr for AuthMode {
    type Err = UnknownAuthMode;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "bearer" => Ok(Self::Bearer),
            "basic" => Ok(Self::Basic),
            _ => Err(UnknownAuthMode),
        }
    }
}

/// A validated HTTP header name. `authorization` in any case is `Authorization`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HeaderName(String);

/// The problem with a string that is not a valid header name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidHeaderName {
    /// The name is empty.
    #[error("is empty")]
    Empty,
    /// The name holds a character an HTTP token may not hold.
    #[error("holds {0:?}, which an HTTP header name may not contain")]
    BadChar(char),
}

impl HeaderName {
    /// The standard `Authorization` header.
    pub fn authorization() -> Self {
        Self("Authorization".to_owned())
    }

    /// Validates `name` as an HTTP token (RFC 9110 `tchar`s).
    ///
    /// ```
    /// use mlflow_secrets_auth_core::HeaderName;
    /// assert_eq!(HeaderName::new("AUTHORIZATION")?.as_str(), "Authorization");
    /// assert!(HeaderName::new("X-MLflow-Auth")?.is_custom());
    /// assert!(HeaderName::new("Bad Name").is_err());
    /// # Ok::<(), mlflow_secrets_auth_core::InvalidHeaderName>(())
    /// ```
    pub fn new(name: &str) -> std::result::Result<Self, InvalidHeaderName> {
        let name = name.trim();
        if name.is_empty() {
            return Err(InvalidHeaderName::Empty);
        }
        if let Some(bad) = name.chars().find(|&c| !is_tchar(c)) {
            return Err(InvalidHeaderName::BadChar(bad));
        }
        if name.eq_ignore_ascii_case("authorization") {
            return Ok(Self::authorization());
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as written on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is a header other than `Authorization`.
    pub fn is_custom(&self) -> bool {
        self.0 != "Authorization"
    }
}

impl Default for HeaderName {
    fn default() -> Self {
        Self::authorization()
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for HeaderName {
    type Err = InvalidHeaderName;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Self::new(s)
    }
}

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// A ready-to-send auth header. `Debug` and `Display` mask the value.
/// Cloning it is cheap (the name and value are shared).
#[derive(Clone)]
pub struct AuthHeader {
    inner: Arc<HeaderParts>,
}

struct HeaderParts {
    name: HeaderName,
    value: SecretString,
}

impl AuthHeader {
    /// Builds the header for `credential` per the table in the module docs.
    ///
    /// ```
    /// use mlflow_secrets_auth_core::{AuthHeader, AuthMode, Credential, HeaderName};
    /// use secrecy::ExposeSecret;
    /// let cred = Credential::parse("alice:wonderland")?;
    /// let header = AuthHeader::build(&cred, AuthMode::Basic, &HeaderName::authorization())?;
    /// assert_eq!(header.value().expose_secret(), "Basic YWxpY2U6d29uZGVybGFuZA==");
    /// # Ok::<(), mlflow_secrets_auth_core::SecretError>(())
    /// ```
    pub fn build(credential: &Credential, mode: AuthMode, name: &HeaderName) -> Result<Self> {
        let value: SecretString = match (mode, credential) {
            (AuthMode::Bearer, Credential::Token(token)) => {
                let token = token.expose_secret();
                check_header_safe(token, "token")?;
                if name.is_custom() {
                    token.into()
                } else {
                    format!("Bearer {token}").into()
                }
            }
            (AuthMode::Bearer, Credential::UserPassword { .. }) => {
                return Err(SecretError::invalid_secret(
                    "auth mode `bearer` cannot use a username/password secret; set the auth mode to `basic` or store a `token`",
                ));
            }
            (AuthMode::Basic, Credential::Token(token)) => {
                let token = token.expose_secret();
                if !token.contains(':') {
                    return Err(SecretError::invalid_secret(
                        "auth mode `basic` needs `username:password`, but the token has no `:`",
                    ));
                }
                basic(token)
            }
            (AuthMode::Basic, Credential::UserPassword { username, password }) => {
                let username = username.expose_secret();
                if username.contains(':') {
                    return Err(SecretError::invalid_secret(
                        "auth mode `basic` cannot use a username that contains `:`",
                    ));
                }
                let pair = Zeroizing::new(format!("{username}:{}", password.expose_secret()));
                basic(&pair)
            }
        };
        Ok(Self {
            inner: Arc::new(HeaderParts {
                name: name.clone(),
                value,
            }),
        })
    }

    /// The header name.
    pub fn name(&self) -> &HeaderName {
        &self.inner.name
    }

    /// The header value; expose it only to put it on the wire.
    pub fn value(&self) -> &SecretString {
        &self.inner.value
    }

    /// The value masked for display: `Basic ***`, `Bearer abcd… (40 chars)`,
    /// a bare token as [`mask`] shows it.
    pub fn masked_value(&self) -> String {
        let value = self.inner.value.expose_secret();
        match value.split_once(' ') {
            Some(("Basic", _)) => format!("Basic {}", crate::redact::REDACTED),
            Some(("Bearer", token)) => format!("Bearer {}", mask(token)),
            _ => mask(value),
        }
    }
}

impl fmt::Debug for AuthHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthHeader")
            .field("name", &self.name().as_str())
            .field("value", &self.masked_value())
            .finish()
    }
}

impl fmt::Display for AuthHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name(), self.masked_value())
    }
}

fn basic(pair: &str) -> SecretString {
    let encoded = Zeroizing::new(STANDARD.encode(pair));
    format!("Basic {}", encoded.as_str()).into()
}

/// A token goes into the header as is: refuse characters that would break the
/// header (CR/LF injection, control characters, non-ASCII) and spaces (a
/// token is one word, so log redaction can find where it ends).
fn check_header_safe(value: &str, field: &str) -> Result<()> {
    match value.chars().find(|&c| !c.is_ascii_graphic()) {
        None => Ok(()),
        Some(c) => Err(SecretError::invalid_secret(format!(
            "the {field} holds a character not allowed in a token ({})",
            if c == ' ' {
                "a space"
            } else if c.is_ascii_control() {
                "a control character"
            } else {
                "a non-ASCII character"
            }
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::{token, user_pass};
    use crate::error::ErrorKind;

    fn custom() -> HeaderName {
        HeaderName::new("X-MLflow-Auth").unwrap()
    }

    fn value(h: &AuthHeader) -> &str {
        h.value().expose_secret()
    }

    #[test]
    fn token_bearer_authorization() {
        let h = AuthHeader::build(&token("tok"), AuthMode::Bearer, &HeaderName::default()).unwrap();
        assert_eq!(h.name().as_str(), "Authorization");
        assert_eq!(value(&h), "Bearer tok");
    }

    #[test]
    fn token_bearer_custom_header_is_bare() {
        let h = AuthHeader::build(&token("tok"), AuthMode::Bearer, &custom()).unwrap();
        assert_eq!(h.name().as_str(), "X-MLflow-Auth");
        assert_eq!(value(&h), "tok");
    }

    #[test]
    fn token_with_colon_basic_any_header() {
        for name in [HeaderName::default(), custom()] {
            let h = AuthHeader::build(&token("u:p"), AuthMode::Basic, &name).unwrap();
            assert_eq!(value(&h), "Basic dTpw");
        }
    }

    #[test]
    fn token_without_colon_basic_is_an_error() {
        let err = AuthHeader::build(
            &token("sekrit-tok"),
            AuthMode::Basic,
            &HeaderName::default(),
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidSecret);
        assert!(err.to_string().contains("username:password"));
        assert!(!err.to_string().contains("sekrit-tok"));
    }

    #[test]
    fn user_password_basic_any_header() {
        for name in [HeaderName::default(), custom()] {
            let h = AuthHeader::build(&user_pass("alice", "pw"), AuthMode::Basic, &name).unwrap();
            assert_eq!(value(&h), "Basic YWxpY2U6cHc=");
        }
    }

    #[test]
    fn user_password_bearer_is_an_error() {
        for name in [HeaderName::default(), custom()] {
            let err = AuthHeader::build(&user_pass("alice", "pw-secret"), AuthMode::Bearer, &name)
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidSecret);
            assert!(err.to_string().contains("auth mode `bearer` cannot use"));
            assert!(!err.to_string().contains("pw-secret"));
        }
    }

    #[test]
    fn token_with_newline_cannot_inject_headers() {
        let err = AuthHeader::build(
            &token("abc\r\nX-Evil: 1"),
            AuthMode::Bearer,
            &HeaderName::default(),
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidSecret);
        assert!(!err.to_string().contains("X-Evil"));
    }

    #[test]
    fn username_with_colon_is_refused_in_basic() {
        let err =
            AuthHeader::build(&user_pass("a:b", "pw"), AuthMode::Basic, &custom()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidSecret);
    }

    #[test]
    fn header_name_rules() {
        for name in ["authorization", "AUTHORIZATION", " Authorization "] {
            assert_eq!(HeaderName::new(name).unwrap(), HeaderName::authorization());
        }
        assert_eq!(HeaderName::new("X-Api-Key").unwrap().as_str(), "X-Api-Key");
        assert_eq!(HeaderName::new(""), Err(InvalidHeaderName::Empty));
        assert_eq!(
            HeaderName::new("X Auth"),
            Err(InvalidHeaderName::BadChar(' '))
        );
        assert_eq!(
            HeaderName::new("X-Auth:"),
            Err(InvalidHeaderName::BadChar(':'))
        );
        assert_eq!(
            HeaderName::new("Äuth"),
            Err(InvalidHeaderName::BadChar('Ä'))
        );
    }

    #[test]
    fn auth_mode_parses_any_case() {
        assert_eq!("BEARER".parse(), Ok(AuthMode::Bearer));
        assert_eq!(" basic ".parse(), Ok(AuthMode::Basic));
        assert_eq!("digest".parse::<AuthMode>(), Err(UnknownAuthMode));
    }

    #[test]
    fn debug_and_display_mask_the_value() {
        let h = AuthHeader::build(
            &token("abcdefghijklmnop"),
            AuthMode::Bearer,
            &HeaderName::default(),
        )
        .unwrap();
        assert_eq!(h.to_string(), "Authorization: Bearer *** (16 chars)");
        assert!(!format!("{h:?}").contains("abcdefghijklmnop"));
        let long = "abcdefghijklmnopqrstuvwxyz0123456789";
        let h = AuthHeader::build(&token(long), AuthMode::Bearer, &HeaderName::default()).unwrap();
        assert_eq!(h.to_string(), "Authorization: Bearer abcd… (36 chars)");
        let h = AuthHeader::build(&user_pass("alice", "pw"), AuthMode::Basic, &custom()).unwrap();
        assert_eq!(h.to_string(), "X-MLflow-Auth: Basic ***");
    }

    #[test]
    fn a_token_with_a_space_is_refused() {
        let err = AuthHeader::build(&token("ab cd"), AuthMode::Bearer, &custom()).unwrap_err();
        assert!(err.to_string().contains("a space"));
    }
}
