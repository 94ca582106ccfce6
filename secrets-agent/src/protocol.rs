//! What the agent and its clients say to each other: the paths, the answer of
//! `GET /v1/secret`, and the error body. HTTP/1.1 with JSON bodies.

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use mlflow_secrets_auth_core::secrecy::ExposeSecret;
use mlflow_secrets_auth_core::{AuthMode, Credential, ErrorKind};

/// The secret material and how long it stays valid.
pub const SECRET_PATH: &str = "/v1/secret";
/// Refetch now (`POST`), optionally `?refused=<fingerprint>`: the value a
/// client saw refused, so the agent fetches nothing when it holds another
/// value already.
pub const INVALIDATE_PATH: &str = "/v1/invalidate";
/// The query parameter of [`INVALIDATE_PATH`] naming the refused value's
/// [`SecretAnswer::fingerprint`].
pub const REFUSED_PARAM: &str = "refused";
/// The longest fingerprint a client keeps (longer ones are ignored).
pub const MAX_FINGERPRINT_CHARS: usize = 64;
/// On TCP, a fresh challenge (`GET`, no token needed): the body is a nonce
/// that the next request *on the same connection* signs with the token
/// ([`signature`]), so the token itself never travels and a listener that
/// does not know it learns nothing it could replay.
pub const CHALLENGE_PATH: &str = "/v1/challenge";
/// The `Authorization` scheme of a signed request: `MSA-HMAC-SHA256 <hex>`.
pub const SIGNED_SCHEME: &str = "MSA-HMAC-SHA256";
/// The longest challenge a client reads, in bytes.
pub const MAX_CHALLENGE_BYTES: usize = 128;

/// The signature of a request answering the challenge `nonce`: HMAC-SHA256
/// keyed by the token over the agent's address as the client dialled it
/// (`127.0.0.1:8765`: a stand-in on another address cannot relay the
/// request to the real agent), `nonce`, the method and the request target
/// (path and query), each ended by a newline, in lower-case hex.
///
/// ```
/// use mlflow_secrets_auth_agent::protocol::signature;
/// let one = signature(b"token", "127.0.0.1:8765", "nonce", "GET", "/v1/secret");
/// assert_eq!(one.len(), 64);
/// assert_ne!(one, signature(b"token", "127.0.0.1:8765", "nonce", "POST", "/v1/secret"));
/// assert_ne!(one, signature(b"token", "127.0.0.2:8765", "nonce", "GET", "/v1/secret"));
/// assert_ne!(one, signature(b"other", "127.0.0.1:8765", "nonce", "GET", "/v1/secret"));
/// ```
pub fn signature(token: &[u8], agent: &str, nonce: &str, method: &str, target: &str) -> String {
    use hmac::Mac as _;
    // HMAC takes a key of any length.
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(token) else {
        return String::new();
    };
    for part in [agent, nonce, method, target] {
        mac.update(part.as_bytes());
        mac.update(b"\n");
    }
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Providers, cache entry, breakers, counters (no secret).
pub const STATUS_PATH: &str = "/v1/status";
/// The process is alive.
pub const HEALTH_PATH: &str = "/healthz";
/// A credential is cached or the last fetch succeeded.
pub const READY_PATH: &str = "/readyz";
/// Prometheus text exposition.
pub const METRICS_PATH: &str = "/metrics";

/// The largest body a client reads from the agent (a secret is at most
/// [`mlflow_secrets_auth_core::MAX_SECRET_BYTES`], written as JSON).
pub const MAX_ANSWER_BYTES: usize = 2 * mlflow_secrets_auth_core::MAX_SECRET_BYTES + 4096;

/// A credential as the agent sends it: the JSON shapes every provider accepts.
/// `Debug` shows no value; the strings are wiped on drop.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
pub enum WireCredential {
    /// A username and password.
    UserPassword {
        /// The username.
        username: String,
        /// The password.
        password: String,
    },
    /// A token.
    Token {
        /// The token.
        token: String,
    },
}

impl std::fmt::Debug for WireCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UserPassword { .. } => f.write_str("WireCredential::UserPassword(***)"),
            Self::Token { .. } => f.write_str("WireCredential::Token(***)"),
        }
    }
}

impl Drop for WireCredential {
    fn drop(&mut self) {
        match self {
            Self::UserPassword { username, password } => {
                username.zeroize();
                password.zeroize();
            }
            Self::Token { token } => token.zeroize(),
        }
    }
}

impl From<&Credential> for WireCredential {
    fn from(credential: &Credential) -> Self {
        match credential {
            Credential::Token(token) => Self::Token {
                token: token.expose_secret().to_owned(),
            },
            Credential::UserPassword { username, password } => Self::UserPassword {
                username: username.expose_secret().to_owned(),
                password: password.expose_secret().to_owned(),
            },
        }
    }
}

/// The answer of `GET /v1/secret`.
#[derive(Debug, Serialize, Deserialize)]
pub struct SecretAnswer {
    /// The credential.
    pub credential: WireCredential,
    /// How it is written into the header (`bearer` or `basic`): the agent's
    /// provider's mode.
    pub auth_mode: String,
    /// Seconds until the agent's own entry expires; a client's cache expires
    /// with it.
    pub valid_for_secs: f64,
    /// The provider that served it to the agent.
    pub provider: String,
    /// An opaque name of this value, the same for the same value while the
    /// agent runs (a keyed hash; it says nothing about the value): what a
    /// client sends back as [`REFUSED_PARAM`] when the value is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

impl SecretAnswer {
    /// The auth mode, or `None` when it names none.
    pub fn mode(&self) -> Option<AuthMode> {
        self.auth_mode.parse().ok()
    }

    /// The fingerprint, when it is one a client may send back (at most
    /// [`MAX_FINGERPRINT_CHARS`] ASCII letters and digits).
    pub fn usable_fingerprint(&self) -> Option<&str> {
        self.fingerprint.as_deref().filter(|f| {
            !f.is_empty()
                && f.len() <= MAX_FINGERPRINT_CHARS
                && f.bytes().all(|b| b.is_ascii_alphanumeric())
        })
    }
}

/// The body of every answer that is not a success.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorAnswer {
    /// What went wrong, never a secret.
    pub error: String,
    /// The error kind (`transient`, `config`, ...), when the agent's fetch failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// The error kind named `name` ([`ErrorKind::as_str`]).
pub fn error_kind(name: &str) -> Option<ErrorKind> {
    [
        ErrorKind::Config,
        ErrorKind::NotFound,
        ErrorKind::PermissionDenied,
        ErrorKind::InvalidSecret,
        ErrorKind::Rejected,
        ErrorKind::Transient,
        ErrorKind::Throttled,
        ErrorKind::Timeout,
        ErrorKind::CircuitOpen,
    ]
    .into_iter()
    .find(|kind| kind.as_str() == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_round_trip_and_never_show() {
        for text in ["tok-123", "alice:wonder:land", r#"{"token": "a:b"}"#] {
            let credential = Credential::parse(text).unwrap();
            let wire = WireCredential::from(&credential);
            assert!(!format!("{wire:?}").contains("tok-123"));
            let json = serde_json::to_string(&wire).unwrap();
            let back: WireCredential = serde_json::from_str(&json).unwrap();
            let again = Credential::parse(&serde_json::to_string(&back).unwrap()).unwrap();
            assert_eq!(again.shape(), credential.shape(), "{text}");
        }
    }

    #[test]
    fn every_kind_is_named() {
        assert_eq!(error_kind("circuit-open"), Some(ErrorKind::CircuitOpen));
        assert_eq!(error_kind("transient"), Some(ErrorKind::Transient));
        assert_eq!(error_kind("nope"), None);
    }

    #[test]
    fn only_short_alphanumeric_fingerprints_are_kept() {
        let answer = |fingerprint: Option<&str>| SecretAnswer {
            credential: WireCredential::Token {
                token: "t".to_owned(),
            },
            auth_mode: "bearer".to_owned(),
            valid_for_secs: 1.0,
            provider: "file".to_owned(),
            fingerprint: fingerprint.map(str::to_owned),
        };
        assert_eq!(answer(Some("00ff9a")).usable_fingerprint(), Some("00ff9a"));
        for bad in [
            "",
            "a&refused=b",
            "a b",
            "ä",
            &"f".repeat(MAX_FINGERPRINT_CHARS + 1),
        ] {
            assert_eq!(answer(Some(bad)).usable_fingerprint(), None, "{bad:?}");
        }
        assert_eq!(answer(None).usable_fingerprint(), None);
        // An agent without fingerprints is still understood.
        let old = r#"{"credential":{"token":"t"},"auth_mode":"bearer","valid_for_secs":1,"provider":"file"}"#;
        let parsed: SecretAnswer = serde_json::from_str(old).unwrap();
        assert_eq!(parsed.usable_fingerprint(), None);
    }
}
