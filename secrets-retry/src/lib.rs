//! Retry with exponential backoff and jitter, deadlines, a shared retry
//! budget, and a circuit breaker whose half-open state lets exactly one probe
//! through. Generic over the operation and its error: the caller classifies
//! errors, so this crate knows nothing of secrets or SDKs.
//!
//! - [`Backoff`] / [`Jitter`]: `min(base·factor^n, max)` with proportional,
//!   full, equal or decorrelated jitter.
//! - [`RetryPolicy`]: `run` (async) and `run_blocking`; the classifier returns
//!   [`RetryDecision`]; per-attempt timeout; total deadline; `on_retry` hook.
//! - [`CircuitBreaker`]: lock-free when closed; `state()`, `stats()`,
//!   `isolate()`, `reset()`.
//! - [`RetryBudget`]: a token bucket shared by callers.
//!
//! Time is tokio's (tests pause it) and jitter can be seeded.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod backoff;
mod breaker;
mod budget;
mod policy;

pub use backoff::{Backoff, Jitter};
pub use breaker::{
    BreakerConfig, BreakerError, BreakerRefusal, BreakerState, BreakerStats, CircuitBreaker, Permit,
};
pub use budget::RetryBudget;
/// The RNG type used for jitter, re-exported so callers can seed one.
pub use fastrand;
pub use policy::{Failure, RetryDecision, RetryError, RetryEvent, RetryPolicy, StopReason};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
