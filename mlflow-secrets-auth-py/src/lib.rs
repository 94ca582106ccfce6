//! `mlflow_secrets_auth._core`: the Rust core of the Python MLflow plugin.
//!
//! One class, `SecretsAuth`, wrapping the blocking facade: `header_for(url)`
//! (the header for that URL, or `None` when its host is not allowed) and
//! `invalidate()`, both releasing the GIL. Errors are raised as
//! `SecretsAuthError` (an `Exception`); a Rust panic is caught and raised as
//! that too, never as `PanicException`. The core — its runtime, clients and
//! cache — belongs to one process: after `fork()` the child builds its own,
//! and never touches (or drops) the parent's.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

use mlflow_secrets_auth::blocking;
use mlflow_secrets_auth::secrecy::ExposeSecret;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    _core,
    SecretsAuthError,
    PyException,
    "The credential could not be produced: configuration, backend or secret problem (the message says which; it never holds the secret)."
);

/// The core of one process.
struct Core {
    pid: u32,
    auth: Arc<blocking::SecretsAuth>,
}

/// The credential chain configured by the environment (`MLFLOW_SECRETS_*` and
/// the providers' variables), shared by every request of this process.
#[pyclass(frozen, name = "SecretsAuth", module = "mlflow_secrets_auth._core")]
struct PySecretsAuth {
    core: Mutex<Option<Core>>,
}

/// Runs `f`, turning an error or a panic into `SecretsAuthError`.
fn guarded<T>(f: impl FnOnce() -> mlflow_secrets_auth::Result<T>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(SecretsAuthError::new_err(
            mlflow_secrets_auth::redact(&error.to_string()).into_owned(),
        )),
        Err(_) => Err(SecretsAuthError::new_err(
            "internal error in mlflow-secrets-auth (a bug: please report it)",
        )),
    }
}

impl PySecretsAuth {
    /// This process's core, built on first use and again after a fork.
    fn core(&self) -> mlflow_secrets_auth::Result<Arc<blocking::SecretsAuth>> {
        let mut slot = self.core.lock().unwrap_or_else(|e| e.into_inner());
        let pid = std::process::id();
        if let Some(core) = slot.as_ref() {
            if core.pid == pid {
                return Ok(Arc::clone(&core.auth));
            }
            // Forked: the parent's runtime threads do not exist in this
            // process; dropping the runtime would wait for them. Leave it.
            std::mem::forget(slot.take());
        }
        let auth = Arc::new(blocking::SecretsAuth::from_env()?);
        *slot = Some(Core {
            pid,
            auth: Arc::clone(&auth),
        });
        Ok(auth)
    }
}

#[pymethods]
impl PySecretsAuth {
    /// Reads the configuration from the environment; raises
    /// `SecretsAuthError` when it is invalid or no provider is usable.
    #[new]
    fn new(py: Python<'_>) -> PyResult<Self> {
        let this = Self {
            core: Mutex::new(None),
        };
        py.detach(|| guarded(|| this.core().map(drop)))?;
        Ok(this)
    }

    /// `(name, value)` of the auth header for a request to `url`, or `None`
    /// when the credential may not go there. Fetches (or reuses) the
    /// credential; the GIL is released meanwhile.
    fn header_for(&self, py: Python<'_>, url: &str) -> PyResult<Option<(String, String)>> {
        py.detach(|| {
            guarded(|| {
                let header = self.core()?.header_for(url)?;
                Ok(header.map(|h| {
                    (
                        h.name().as_str().to_owned(),
                        h.value().expose_secret().to_owned(),
                    )
                }))
            })
        })
    }

    /// Forgets the cached credential: the next `header_for` fetches it again
    /// (after the server refused it, for instance).
    fn invalidate(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| guarded(|| self.core().map(|core| core.invalidate())))
    }

    /// How many times this process's core fetched from a backend.
    fn fetch_count(&self) -> PyResult<u64> {
        guarded(|| Ok(self.core()?.inner().stats().fetches))
    }

    /// Configuration warnings (no allowlist, clamped TTLs, ...).
    fn warnings(&self) -> PyResult<Vec<String>> {
        guarded(|| {
            Ok(self
                .core()?
                .inner()
                .warnings()
                .iter()
                .map(|w| w.0.clone())
                .collect())
        })
    }
}

/// The module.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySecretsAuth>()?;
    m.add("SecretsAuthError", m.py().get_type::<SecretsAuthError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
