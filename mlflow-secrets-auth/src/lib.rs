//! mlflow-secrets-auth: fetch an MLflow credential from a secret manager, cache
//! it, and attach it as an HTTP auth header only to allowed hosts.
//!
//! Work in progress: for now this crate re-exports the shared vocabulary of
//! [`secrets_core`] (credentials, headers, the host allowlist, redaction, the
//! provider trait and the file provider). The provider chain, the cache and the
//! retry layer are composed here next.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub use secrets_core::*;
