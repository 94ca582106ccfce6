//! The credential cache of mlflow-secrets-auth: generic over key, value and error, with no dependency on any provider or SDK.
//!
//! Work in progress: this crate does not export anything yet.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
