//! The servers' errors: a setting refused before anything is served, or a
//! step of setting up or serving that failed, with its cause.

/// What went wrong starting or running a server. Its `Display` is one
/// sentence; the cause, when there is one, is its `source`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting that cannot be served: a non-loopback address without
    /// `allow_remote`, an upstream the allowlist refuses, a socket directory
    /// open to others, a token file others can read, …
    #[error("{0}")]
    Refused(String),
    /// A step that failed (binding, writing a token file, the runtime): what
    /// it was; the cause is the source.
    #[error("{what}")]
    Failed {
        /// The step.
        what: String,
        /// Why it failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An I/O error with nothing to add.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The credential chain's error.
    #[error(transparent)]
    Secrets(#[from] mlflow_secrets_auth::SecretError),
}

/// The servers' result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Naming the step that failed, as `anyhow::Context` does.
pub(crate) trait Context<T> {
    /// The error's cause, under `what`.
    fn context(self, what: impl Into<String>) -> Result<T>;
    /// The error's cause, under the step `what` returns.
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl Into<String>) -> Result<T> {
        self.map_err(|source| Error::Failed {
            what: what.into(),
            source: Box::new(source),
        })
    }

    fn with_context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Failed {
            what: what(),
            source: Box::new(source),
        })
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, what: impl Into<String>) -> Result<T> {
        self.ok_or_else(|| Error::Refused(what.into()))
    }

    fn with_context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.ok_or_else(|| Error::Refused(what()))
    }
}

/// Returns a [`Error::Refused`] with a formatted message.
macro_rules! bail {
    ($($message:tt)*) => {
        return Err($crate::error::Error::Refused(format!($($message)*)))
    };
}
pub(crate) use bail;
