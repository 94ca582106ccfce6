//! The credential cache of mlflow-secrets-auth, usable on its own: generic over
//! key, value and error, with no dependency on any provider or SDK.
//!
//! What [`SecretCache::get_or_fetch`] guarantees:
//! - **Fresh hit**: answered under one shard's read lock with an `Arc` clone;
//!   nothing awaited, nothing allocated.
//! - **Single flight**: concurrent callers missing on one key share one fetch;
//!   its result (value or error) reaches all of them; errors are not cached.
//! - **Refresh ahead**: past a fraction of its TTL (default 0.8) the first hit
//!   starts one background refresh; every caller keeps the current value.
//!   A value the backend said expires is refreshed [`REFRESH_MARGIN`] (5 min)
//!   before that instead, when this is earlier and past half its lifetime.
//!   A refresh that brings back a value expiring no later than the current
//!   one backs off (the stale retry wait, doubling) instead of looping.
//! - **Stale if error**: an expired value is served within its grace period when
//!   the fetch fails with an error the caller's predicate calls transient,
//!   reported as [`Outcome::Stale`] and counted. Other errors never serve stale.
//! - **Lifetimes**: the TTL is clamped to bounds, shortened by up to 10 % of
//!   jitter, and by the expiry the backend reported ([`EntryMeta`]).
//! - **Bounded**: at most `capacity` entries (default 1024), least recently used
//!   evicted; values are dropped (and, for `secrecy` types, wiped) when the last
//!   `Arc` goes.
//! - **Fetches outlive their callers**: the fetch runs in a task of its own; a
//!   caller that is dropped (a timeout shorter than the backend) cancels
//!   nothing, and the value is cached for the next caller.
//! - **Nobody waits on a failing backend while a stale value exists**: a
//!   caller that could be served an expired value within its grace waits at
//!   at most [`CacheConfig::stale_wait`] (25 ms) from the start of the fetch
//!   in flight (so once a fetch is that slow, nobody waits at all), then
//!   gets that value ([`Outcome::StaleWhileFetching`]); the fetch goes on in
//!   the background and its first success replaces the value. A failed
//!   refresh-ahead is tried again (the stale retry wait, doubling) until expiry.
//! - **Robust**: a fetch that panics does not wedge the key; waiters start
//!   over and the panic reaches the caller that started it.
//!
//! Time comes from a [`Clock`]; tests use [`ManualClock`] or tokio's paused clock
//! through [`TokioClock`].
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod cache;
mod clock;
mod config;
mod flight;
mod lookup;
mod stats;
mod store;

pub use cache::{EntryInfo, EntryState, SecretCache};
pub use clock::{Clock, ManualClock, SystemClock, TokioClock};
pub use config::{CacheConfig, EntryMeta, REFRESH_MARGIN, StaleGrace};
pub use lookup::{Lookup, Outcome};
pub use stats::CacheStats;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
