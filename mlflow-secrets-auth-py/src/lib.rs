//! `mlflow_secrets_auth._core`: the Rust core of the Python MLflow plugin.
//!
//! One class, `SecretsAuth`, wrapping the blocking facade: `hop(url, ...)`
//! (one hop of a request chain, decided by the hop policy, with the client's
//! own readings of the host compared), `refused(value)` (the bounded refetch
//! after a 401/403), `header_for(url)` and `invalidate()`, all releasing the GIL. Errors are raised as
//! `SecretsAuthError` (an `Exception`); a Rust panic is caught and raised as
//! that too, never as `PanicException`. `cli(argv)` runs the
//! `mlflow-secrets-auth` command itself. The core — its runtime, clients and
//! cache — belongs to one process: after `fork()` the child builds its own,
//! and never touches (or drops) the parent's.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use mlflow_secrets_auth::secrecy::ExposeSecret;
use mlflow_secrets_auth::{AuthHeader, Url, Withheld, blocking, same_authority};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyString, PyTuple};

create_exception!(
    _core,
    SecretsAuthError,
    PyException,
    "The credential could not be produced: configuration, backend or secret problem (the message says which; it never holds the secret)."
);

/// What `hop` answers: `(strip_credentials, left_https, header, withheld)`.
type HopAnswer<'py> = (bool, bool, Option<Bound<'py, PyTuple>>, Option<String>);

/// Forks so far in this process's ancestry: bumped in the child after every
/// `os.fork()` (registered with `os.register_at_fork` when the module is
/// imported), so telling a parent's core from our own costs no system call.
static FORKS: AtomicU64 = AtomicU64::new(0);

/// The core of one process.
struct Core {
    forks: u64,
    auth: Arc<blocking::SecretsAuth>,
}

/// The credential chain configured by the environment (`MLFLOW_SECRETS_*` and
/// the providers' variables), shared by every request of this process.
#[pyclass(frozen, name = "SecretsAuth", module = "mlflow_secrets_auth._core")]
struct PySecretsAuth {
    core: Mutex<Option<Core>>,
    /// The last `(name, value)` handed out, given again while the header is
    /// the same (no new strings per request).
    last: Mutex<Option<(AuthHeader, Py<PyTuple>)>>,
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
    /// This process's core, built on first use and again after a fork. The
    /// slot's lock is never held while the core is being built (that runs
    /// with the GIL released, and a fork meanwhile must not copy a held lock).
    fn core(&self) -> mlflow_secrets_auth::Result<Arc<blocking::SecretsAuth>> {
        let forks = FORKS.load(Ordering::Acquire);
        {
            let mut slot = self.core.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(core) = slot.as_ref() {
                if core.forks == forks {
                    return Ok(Arc::clone(&core.auth));
                }
                // Forked: the parent's runtime threads do not exist in this
                // process; dropping the runtime would wait for them. Leave it.
                std::mem::forget(slot.take());
            }
        }
        let built = Arc::new(blocking::SecretsAuth::from_env()?);
        let mut slot = self.core.lock().unwrap_or_else(|e| e.into_inner());
        match slot.as_ref() {
            // Another thread built one meanwhile: use it (ours is dropped,
            // in this process, where its runtime's threads exist).
            Some(core) if core.forks == forks => Ok(Arc::clone(&core.auth)),
            _ => {
                *slot = Some(Core {
                    forks,
                    auth: Arc::clone(&built),
                });
                Ok(built)
            }
        }
    }

    /// A header as Python sees it: `(name, value)` (the last one again when
    /// it is the same header).
    fn tuple<'py>(&self, py: Python<'py>, header: &AuthHeader) -> PyResult<Bound<'py, PyTuple>> {
        let (name, value) = (header.name().as_str(), header.value().expose_secret());
        // Nothing that can run Python code (and so switch threads) happens
        // while the lock is held.
        {
            let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((same, tuple)) = last.as_ref()
                && same.name() == header.name()
                && same.value().expose_secret() == value
            {
                return Ok(tuple.bind(py).clone());
            }
        }
        let tuple = PyTuple::new(py, [PyString::new(py, name), PyString::new(py, value)])?;
        let replaced = self
            .last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace((header.clone(), tuple.clone().unbind()));
        drop(replaced);
        Ok(tuple)
    }

    /// `None` or the header's tuple.
    fn answer<'py>(
        &self,
        py: Python<'py>,
        header: Option<&AuthHeader>,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        header.map(|h| self.tuple(py, h)).transpose()
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
            last: Mutex::new(None),
        };
        py.detach(|| guarded(|| this.core().map(drop)))?;
        Ok(this)
    }

    /// `(name, value)` of the auth header for a request to `url`, or `None`
    /// when the credential may not go there. Fetches (or reuses) the
    /// credential; the GIL is released meanwhile.
    fn header_for<'py>(&self, py: Python<'py>, url: &str) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let header = py.detach(|| guarded(|| self.core()?.header_for(url)))?;
        self.answer(py, header.as_ref())
    }

    /// The first hop of a request to `url`, when every parser reads the same
    /// host from it (a plain origin): `(name, value)` or `None` when the
    /// credential may not go there. `False` for any other URL: decide it with
    /// `hop` and the client's own readings of the host. A warm answer is
    /// given without releasing the GIL (nor a lock another thread could hold
    /// while it waits for the GIL); a fetch releases it.
    fn first<'py>(&self, py: Python<'py>, url: &str) -> PyResult<Bound<'py, PyAny>> {
        if mlflow_secrets_auth::plain_origin(url).is_none() {
            return Ok(PyBool::new(py, false).to_owned().into_any());
        }
        let core = guarded(|| self.core())?;
        let header = match core.inner().header_for_cached(url) {
            Some(answer) => answer,
            None => py.detach(|| guarded(|| core.header_for(url)))?,
        };
        Ok(self
            .answer(py, header.as_ref())?
            .into_pyobject(py)?
            .into_any())
    }

    /// One hop of a request chain, decided by the hop policy on `url` exactly
    /// as the HTTP client will send it. `previous` is the URL of the hop
    /// before (`None` first), `left_https` what the previous hop returned, and
    /// `client_hosts` the `(host, port)` every parser of the client reads from
    /// `url`: when any of them differs from the core's reading, nothing is
    /// attached.
    ///
    /// Returns `(strip_credentials, left_https, header, withheld)`: remove
    /// every credential header first when `strip_credentials`; set `header`
    /// (`(name, value)`) when it is not `None`; `withheld` says why not.
    #[pyo3(signature = (url, previous=None, left_https=false, client_hosts=Vec::new()))]
    fn hop<'py>(
        &self,
        py: Python<'py>,
        url: &str,
        previous: Option<&str>,
        left_https: bool,
        client_hosts: Vec<(String, u16)>,
    ) -> PyResult<HopAnswer<'py>> {
        let (strip, left_https, header, withheld) = py.detach(|| {
            guarded(|| {
                let Ok(next) = Url::parse(url) else {
                    return Ok((
                        true,
                        left_https,
                        None,
                        Some("the URL does not parse".to_owned()),
                    ));
                };
                let previous = match previous.map(Url::parse) {
                    None => None,
                    Some(Ok(previous)) => Some(previous),
                    // An unreadable previous hop: treat as a change of origin.
                    Some(Err(_)) => {
                        return Ok((
                            true,
                            left_https,
                            None,
                            Some("the previous URL does not parse".to_owned()),
                        ));
                    }
                };
                if !client_hosts
                    .iter()
                    .all(|(host, port)| same_authority(&next, host, *port))
                {
                    return Ok((
                        true,
                        left_https,
                        None,
                        Some(Withheld::Ambiguous.to_string()),
                    ));
                }
                let (hop, header) = self.core()?.hop(previous.as_ref(), left_https, &next)?;
                Ok((
                    hop.strip_credentials,
                    hop.left_https,
                    header,
                    hop.verdict.err().map(|why| why.to_string()),
                ))
            })
        })?;
        Ok((
            strip,
            left_https,
            self.answer(py, header.as_ref())?,
            withheld,
        ))
    }

    /// The server refused the header value `refused` (401/403): `(name,
    /// value)` to resend with, or `None` when resending is pointless (the
    /// backend holds the same credential, or it was refetched within
    /// `MLFLOW_SECRETS_REFETCH_INTERVAL_SEC`).
    fn refused<'py>(
        &self,
        py: Python<'py>,
        refused: &str,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let fresh = py.detach(|| guarded(|| self.core()?.refused(refused)))?;
        self.answer(py, fresh.as_ref())
    }

    /// The name of the header the credential goes in.
    fn header_name(&self) -> PyResult<String> {
        guarded(|| {
            Ok(self
                .core()?
                .inner()
                .config()
                .header_name
                .as_str()
                .to_owned())
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
                .map(|w| w.to_string())
                .collect())
        })
    }
}

/// The exit code of a command that panicked (`EX_SOFTWARE`).
const INTERNAL_ERROR: u8 = 70;

/// Runs the `mlflow-secrets-auth` command on `argv` (program name first) —
/// the same implementation as the Rust binary — and returns its exit code.
/// The GIL is released meanwhile; `exec` replaces this process.
#[pyfunction]
fn cli(py: Python<'_>, argv: Vec<String>) -> u8 {
    py.detach(|| {
        catch_unwind(|| mlflow_secrets_auth_cli::main_as(env!("CARGO_PKG_VERSION"), argv))
            .unwrap_or(INTERNAL_ERROR)
    })
}

/// Runs in the child after `os.fork()`: the parent's core is not ours.
#[pyfunction]
fn after_fork_in_child() {
    FORKS.fetch_add(1, Ordering::AcqRel);
}

/// The module.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySecretsAuth>()?;
    m.add_function(wrap_pyfunction!(cli, m)?)?;
    m.add("SecretsAuthError", m.py().get_type::<SecretsAuthError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    let py = m.py();
    let after_fork = wrap_pyfunction!(after_fork_in_child, m)?;
    let kwargs = PyDict::new(py);
    kwargs.set_item("after_in_child", after_fork)?;
    py.import("os")?
        .getattr("register_at_fork")?
        .call((), Some(&kwargs))?;
    Ok(())
}
