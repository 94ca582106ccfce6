//! Retry with exponential backoff and jitter, deadlines, and a circuit breaker, generic over the operation and its error.
//!
//! Work in progress: this crate does not export anything yet.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
