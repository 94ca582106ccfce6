//! The one error type of every layer: a kind that decides what happens next
//! (retry, fail over, report), and a message a person can act on.
//!
//! Messages name the provider, the variable, the field or the path that is wrong,
//! and never a secret value: constructors take only descriptions, and the
//! parsers in this crate describe bad input by its shape, not its content.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// What went wrong, at the level a caller decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Missing or malformed configuration (an environment variable, a builder value).
    Config,
    /// The secret (or its version) does not exist.
    NotFound,
    /// The backend refused our identity: bad credentials, missing policy.
    PermissionDenied,
    /// The secret exists but its content cannot be used as a credential.
    InvalidSecret,
    /// The backend holds the secret but refuses to serve it for a reason that
    /// retrying cannot fix (disabled, scheduled for deletion, cannot be decrypted).
    Rejected,
    /// A failure that may pass: connection refused or reset, 5xx, sealed vault.
    Transient,
    /// The backend asked us to slow down, maybe saying for how long.
    Throttled,
    /// The backend did not answer in time.
    Timeout,
    /// The provider's circuit breaker is open; no call was made.
    CircuitOpen,
}

impl ErrorKind {
    /// Whether a later attempt of the same call may succeed.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Self::Transient | Self::Throttled | Self::Timeout | Self::CircuitOpen
        )
    }

    /// A short stable name, used in status output and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::NotFound => "not-found",
            Self::PermissionDenied => "permission-denied",
            Self::InvalidSecret => "invalid-secret",
            Self::Rejected => "rejected",
            Self::Transient => "transient",
            Self::Throttled => "throttled",
            Self::Timeout => "timeout",
            Self::CircuitOpen => "circuit-open",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type Source = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// An error of any layer, with its [`ErrorKind`], the provider it came from (when
/// known), a message, and for throttling or an open circuit the time to wait.
///
/// Cheap to clone (the cause is shared), so one failed fetch can be handed to
/// every caller that waited on it.
#[derive(Debug, Clone, thiserror::Error)]
pub struct SecretError {
    kind: ErrorKind,
    provider: Option<&'static str>,
    message: String,
    retry_after: Option<Duration>,
    #[source]
    source: Option<Source>,
}

impl SecretError {
    /// A new error of `kind`. `message` must not contain a secret value.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            provider: None,
            message: message.into(),
            retry_after: None,
            source: None,
        }
    }

    /// A configuration error about `variable`; `problem` says what is wrong with it.
    pub fn config(variable: &str, problem: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Config, format!("{variable}: {problem}"))
    }

    /// A configuration error: `variable` is not set, and `why` says what it
    /// holds or why it is needed (`VAULT_TOKEN is not set: the Vault token`).
    pub fn unset(variable: &str, why: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Config, format!("{variable} is not set: {why}"))
    }

    /// An invalid-secret error; `problem` describes the content's shape, never the content.
    pub fn invalid_secret(problem: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidSecret, problem)
    }

    /// A throttling error, with the wait the backend asked for when it gave one.
    pub fn throttled(message: impl Into<String>, retry_after: Option<Duration>) -> Self {
        Self::new(ErrorKind::Throttled, message).with_retry_after(retry_after)
    }

    /// An open-circuit error: no call was made; the next try is allowed after `retry_after`.
    pub fn circuit_open(retry_after: Duration) -> Self {
        Self::new(
            ErrorKind::CircuitOpen,
            format!(
                "circuit open after repeated failures; next try in {:.1}s",
                retry_after.as_secs_f64()
            ),
        )
        .with_retry_after(Some(retry_after))
    }

    /// Sets the provider this error came from (`vault`, `file`, ...).
    #[must_use]
    pub fn with_provider(mut self, provider: &'static str) -> Self {
        self.provider = Some(provider);
        self
    }

    /// Sets how long to wait before the next try (cut to [`crate::MAX_DURATION`]).
    #[must_use]
    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after.map(crate::capped);
        self
    }

    /// Attaches the underlying cause. Its `Display` must not contain a secret.
    #[must_use]
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The provider the error came from, when known.
    pub fn provider(&self) -> Option<&'static str> {
        self.provider
    }

    /// The message without the provider prefix.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// How long the backend (or the breaker) asked us to wait, when it said.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Whether a later attempt may succeed (see [`ErrorKind::is_transient`]).
    pub fn is_transient(&self) -> bool {
        self.kind.is_transient()
    }
}

/// A configuration error leads with the variable that is wrong and ends
/// with its provider (`MLFLOW_SECRETS_FILE_PATH is not set: the file holding
/// the secret (provider file)`); any other error leads with its provider and
/// ends with its kind (`vault: permission denied (permission-denied)`).
impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.kind, self.provider) {
            (ErrorKind::Config, Some(provider)) => {
                write!(f, "{} (provider {provider})", self.message)
            }
            (kind, Some(provider)) => write!(f, "{provider}: {} ({kind})", self.message),
            (kind, None) => write!(f, "{} ({kind})", self.message),
        }
    }
}

/// The result type of this crate and of the provider crates.
pub type Result<T, E = SecretError> = std::result::Result<T, E>;

/// An error and its sources as one line, `outer: inner: innermost`, each
/// message once (many errors repeat their source's text in their own).
pub fn source_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(current) = next {
        let text = current.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = current.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_provider_message_and_kind() {
        let err = SecretError::new(ErrorKind::NotFound, "secret `mlflow/auth` does not exist")
            .with_provider("vault");
        assert_eq!(
            err.to_string(),
            "vault: secret `mlflow/auth` does not exist (not-found)"
        );
    }

    #[test]
    fn only_passing_failures_are_transient() {
        use ErrorKind::*;
        for kind in [Transient, Throttled, Timeout, CircuitOpen] {
            assert!(kind.is_transient(), "{kind}");
        }
        for kind in [Config, NotFound, PermissionDenied, InvalidSecret, Rejected] {
            assert!(!kind.is_transient(), "{kind}");
        }
    }

    #[test]
    fn circuit_open_carries_retry_after() {
        let err = SecretError::circuit_open(Duration::from_millis(2500));
        assert_eq!(err.kind(), ErrorKind::CircuitOpen);
        assert_eq!(err.retry_after(), Some(Duration::from_millis(2500)));
        assert!(err.to_string().contains("next try in 2.5s"));
    }

    #[test]
    fn config_error_names_the_variable() {
        let err = SecretError::config("MLFLOW_SECRETS_MAX_RETRIES", "is not a whole number");
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().starts_with("MLFLOW_SECRETS_MAX_RETRIES: "));
    }
}
