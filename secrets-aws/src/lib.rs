//! The AWS Secrets Manager provider of mlflow-secrets-auth.
//!
//! Work in progress: this crate does not export anything yet.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
