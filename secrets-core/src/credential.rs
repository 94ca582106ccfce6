//! [`Credential`]: what a secret's text means — a token, or a username and password.
//!
//! The accepted forms (checked in this order, after trimming the whole text):
//! 1. a JSON object with a string `token` field → token;
//! 2. a JSON object with string `username` and `password` fields → user + password;
//! 3. plain `user:password` (split at the first `:`) → user + password;
//! 4. any other plain text → token.
//!
//! Text that is valid JSON, or that starts like a JSON object or array (`{`, `[`),
//! is read as JSON and must be an object of shape 1 or 2: a truncated JSON object is
//! an error, never a token. Errors describe the shape, never the content.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::error::{Result, SecretError};

/// The largest secret text accepted, in bytes (1 MiB).
pub const MAX_SECRET_BYTES: usize = 1 << 20;

/// A credential taken from a secret. `Debug` never shows the values.
#[derive(Clone)]
pub enum Credential {
    /// A bearer token (or, in basic mode, a `user:password` pair as one string).
    Token(SecretString),
    /// A username and password.
    UserPassword {
        /// The username.
        username: SecretString,
        /// The password.
        password: SecretString,
    },
}

impl Credential {
    /// Parses secret text. See the module documentation for the accepted forms.
    ///
    /// ```
    /// use mlflow_secrets_auth_core::Credential;
    /// let cred = Credential::parse(r#"{"username": "alice", "password": "s3cret"}"#)?;
    /// assert!(matches!(cred, Credential::UserPassword { .. }));
    /// let cred = Credential::parse("  my-token\n")?;
    /// assert!(matches!(cred, Credential::Token(_)));
    /// # Ok::<(), mlflow_secrets_auth_core::SecretError>(())
    /// ```
    pub fn parse(text: &str) -> Result<Self> {
        if text.len() > MAX_SECRET_BYTES {
            return Err(too_large(text.len()));
        }
        let text = text.trim();
        if text.is_empty() {
            return Err(SecretError::invalid_secret(
                "secret is empty (or only whitespace)",
            ));
        }
        if let Some(json) = parse_json(text)? {
            return from_json(json);
        }
        match text.split_once(':') {
            Some((user, pass)) => {
                let (user, pass) = (user.trim(), pass.trim());
                if user.is_empty() {
                    return Err(SecretError::invalid_secret(
                        "secret has the form `user:password` but the username before `:` is empty",
                    ));
                }
                if pass.is_empty() {
                    return Err(SecretError::invalid_secret(
                        "secret has the form `user:password` but the password after `:` is empty",
                    ));
                }
                Ok(Self::UserPassword {
                    username: user.into(),
                    password: pass.into(),
                })
            }
            None => Ok(Self::Token(text.into())),
        }
    }

    /// Parses secret bytes: they must be UTF-8 text (see [`Credential::parse`]).
    pub fn parse_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_SECRET_BYTES {
            return Err(too_large(bytes.len()));
        }
        let text = std::str::from_utf8(bytes).map_err(|e| {
            SecretError::invalid_secret(format!(
                "secret is not UTF-8 text (invalid byte at offset {})",
                e.valid_up_to()
            ))
        })?;
        Self::parse(text)
    }

    /// A short description of the shape, safe to show: `token` or `username+password`.
    pub fn shape(&self) -> &'static str {
        match self {
            Self::Token(_) => "token",
            Self::UserPassword { .. } => "username+password",
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Token(_) => f.write_str("Credential::Token(***)"),
            Self::UserPassword { .. } => {
                f.write_str("Credential::UserPassword { username: ***, password: *** }")
            }
        }
    }
}

impl PartialEq for Credential {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Token(a), Self::Token(b)) => a.expose_secret() == b.expose_secret(),
            (
                Self::UserPassword {
                    username: ua,
                    password: pa,
                },
                Self::UserPassword {
                    username: ub,
                    password: pb,
                },
            ) => {
                ua.expose_secret() == ub.expose_secret() && pa.expose_secret() == pb.expose_secret()
            }
            _ => false,
        }
    }
}

/// The error for a secret over [`MAX_SECRET_BYTES`].
fn too_large(len: usize) -> SecretError {
    SecretError::invalid_secret(format!(
        "secret is {len} bytes, more than the {MAX_SECRET_BYTES}-byte limit"
    ))
}

/// Reads `text` as JSON when it is JSON or looks like an object or array.
/// `Ok(None)` means plain text.
fn parse_json(text: &str) -> Result<Option<Value>> {
    match serde_json::from_str::<Value>(text) {
        Ok(value) => Ok(Some(value)),
        Err(e) if text.starts_with('{') || text.starts_with('[') => {
            Err(SecretError::invalid_secret(format!(
                "secret starts like JSON but is not valid JSON ({} at line {} column {})",
                json_error_class(&e),
                e.line(),
                e.column()
            )))
        }
        Err(_) => Ok(None),
    }
}

fn json_error_class(e: &serde_json::Error) -> &'static str {
    use serde_json::error::Category;
    match e.classify() {
        Category::Eof => "unexpected end of input",
        Category::Syntax => "syntax error",
        Category::Data => "unexpected data",
        Category::Io => "read error",
    }
}

fn from_json(value: Value) -> Result<Credential> {
    // The parsed tree holds copies of the secret: wipe its strings when done.
    let mut value = Zeroizing::new(JsonTree(value));
    let Value::Object(map) = &mut value.0 else {
        return Err(SecretError::invalid_secret(format!(
            "secret is a JSON {}, expected an object with `token` or `username` and `password`",
            json_type(&value.0)
        )));
    };
    if map.contains_key("token") {
        return Ok(Credential::Token(string_field(map, "token")?));
    }
    match (map.contains_key("username"), map.contains_key("password")) {
        (false, false) => Err(SecretError::invalid_secret(
            "secret JSON object has neither a `token` field nor `username` and `password` fields",
        )),
        (true, false) => Err(SecretError::invalid_secret(
            "secret JSON object has `username` but no `password` field",
        )),
        (false, true) => Err(SecretError::invalid_secret(
            "secret JSON object has `password` but no `username` field",
        )),
        (true, true) => Ok(Credential::UserPassword {
            username: string_field(map, "username")?,
            password: string_field(map, "password")?,
        }),
    }
}

fn string_field(map: &Map<String, Value>, field: &str) -> Result<SecretString> {
    match map.get(field) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().into()),
        Some(Value::String(_)) => Err(SecretError::invalid_secret(format!(
            "secret JSON field `{field}` is empty"
        ))),
        Some(other) => Err(SecretError::invalid_secret(format!(
            "secret JSON field `{field}` is {}, expected a string",
            with_article(json_type(other))
        ))),
        None => Err(SecretError::invalid_secret(format!(
            "secret JSON field `{field}` is missing"
        ))),
    }
}

fn with_article(noun: &str) -> String {
    let article = if noun.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {noun}")
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A parsed JSON tree whose strings are overwritten when it is dropped.
struct JsonTree(Value);

impl zeroize::Zeroize for JsonTree {
    fn zeroize(&mut self) {
        fn wipe(value: &mut Value) {
            match value {
                Value::String(s) => s.zeroize(),
                Value::Array(items) => items.iter_mut().for_each(wipe),
                Value::Object(map) => map.values_mut().for_each(wipe),
                Value::Null | Value::Bool(_) | Value::Number(_) => {}
            }
        }
        wipe(&mut self.0);
    }
}

#[cfg(test)]
pub(crate) fn token(s: &str) -> Credential {
    Credential::Token(s.into())
}

#[cfg(test)]
pub(crate) fn user_pass(u: &str, p: &str) -> Credential {
    Credential::UserPassword {
        username: u.into(),
        password: p.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn json_token() {
        assert_eq!(
            Credential::parse(r#"{"token": " tok-123 "}"#).unwrap(),
            token("tok-123")
        );
    }

    #[test]
    fn json_username_password() {
        assert_eq!(
            Credential::parse(r#"{"username": "alice", "password": "pw:with:colons"}"#).unwrap(),
            user_pass("alice", "pw:with:colons")
        );
    }

    #[test]
    fn json_extra_fields_are_fine() {
        assert_eq!(
            Credential::parse(r#"{"token": "t0k", "issued": 5, "note": null}"#).unwrap(),
            token("t0k")
        );
    }

    #[test]
    fn json_token_wins_over_username_password() {
        assert_eq!(
            Credential::parse(r#"{"token": "t", "username": "u", "password": "p"}"#).unwrap(),
            token("t")
        );
    }

    #[test]
    fn plain_user_password_splits_at_first_colon() {
        assert_eq!(
            Credential::parse("bob:pa:ss\n").unwrap(),
            user_pass("bob", "pa:ss")
        );
    }

    #[test]
    fn plain_token_is_trimmed() {
        assert_eq!(
            Credential::parse("\t abc.def-ghi \r\n").unwrap(),
            token("abc.def-ghi")
        );
    }

    #[test]
    fn bytes_must_be_utf8() {
        let err = Credential::parse_bytes(b"tok\xff\xfeen").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidSecret);
        assert!(err.to_string().contains("not UTF-8"), "{err}");
        assert!(!err.to_string().contains("tok"));
    }

    #[test]
    fn debug_never_shows_values() {
        let shown = format!("{:?}", user_pass("alice-user", "hunter2-pass"));
        assert!(!shown.contains("alice-user") && !shown.contains("hunter2-pass"));
        assert!(!format!("{:?}", token("tok-secret-1")).contains("tok-secret-1"));
    }
}
