//! A blocking [`SecretsAuth`] for synchronous callers. It owns a small tokio
//! runtime (one worker thread, which also runs background refreshes) and can
//! be called from any number of threads.

use std::fmt;
use std::sync::Arc;

use mlflow_secrets_auth_core::{AuthHeader, Hop, Result, SecretError};
use url::Url;

use crate::ProviderStatus;
use crate::auth::SecretsAuth as AsyncAuth;

/// The blocking face of [`crate::SecretsAuth`]. Cheap to clone.
#[derive(Clone)]
pub struct SecretsAuth {
    auth: AsyncAuth,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl fmt::Debug for SecretsAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("blocking::SecretsAuth")
            .field(&self.auth)
            .finish()
    }
}

impl SecretsAuth {
    /// Reads every variable from the process environment.
    pub fn from_env() -> Result<Self> {
        Self::new(AsyncAuth::from_env()?)
    }

    /// Wraps an async [`crate::SecretsAuth`].
    pub fn new(auth: AsyncAuth) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("mlflow-secrets-auth")
            .enable_all()
            .build()
            .map_err(|e| {
                SecretError::new(
                    mlflow_secrets_auth_core::ErrorKind::Config,
                    format!("cannot start the runtime: {e}"),
                )
            })?;
        Ok(Self {
            auth,
            runtime: Arc::new(runtime),
        })
    }

    /// The async face.
    pub fn inner(&self) -> &AsyncAuth {
        &self.auth
    }

    /// See [`crate::SecretsAuth::header_for`]. Must not be called from inside
    /// an async runtime (use the async face there).
    pub fn header_for(&self, url: &str) -> Result<Option<AuthHeader>> {
        if let Some(answer) = self.auth.header_for_cached(url) {
            return Ok(answer);
        }
        self.runtime.block_on(self.auth.header_for(url))
    }

    /// See [`crate::SecretsAuth::hop`].
    pub fn hop(
        &self,
        previous: Option<&Url>,
        left_https: bool,
        next: &Url,
    ) -> Result<(Hop, Option<AuthHeader>)> {
        self.runtime
            .block_on(self.auth.hop(previous, left_https, next))
    }

    /// See [`crate::SecretsAuth::refused`].
    pub fn refused(&self, refused: &str) -> Result<Option<AuthHeader>> {
        self.runtime.block_on(self.auth.refused(refused))
    }

    /// See [`crate::SecretsAuth::warm`].
    pub fn warm(&self) -> Result<&'static str> {
        self.runtime.block_on(self.auth.warm())
    }

    /// See [`crate::SecretsAuth::invalidate`].
    pub fn invalidate(&self) {
        self.auth.invalidate();
    }

    /// See [`crate::SecretsAuth::status`].
    pub fn status(&self) -> Vec<ProviderStatus> {
        self.auth.status()
    }
}
