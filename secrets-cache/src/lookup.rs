//! What a lookup answers: the value and how it was obtained. Below the
//! cache's face and its internals (the store, single flight), which all
//! hand these on.

use std::sync::Arc;
use std::time::Duration;

/// A value from the cache and how it was obtained.
#[derive(Debug)]
#[non_exhaustive]
pub struct Lookup<V, E> {
    /// The value, shared with the cache.
    pub value: Arc<V>,
    /// Where it came from.
    pub outcome: Outcome<E>,
}

impl<V, E: Clone> Clone for Lookup<V, E> {
    fn clone(&self) -> Self {
        Self {
            value: Arc::clone(&self.value),
            outcome: self.outcome.clone(),
        }
    }
}

/// How a [`Lookup`] was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome<E> {
    /// From a valid entry, without waiting.
    Hit,
    /// This call ran the fetch.
    Fetched,
    /// This call waited on a fetch another call had started.
    Coalesced,
    /// The fetch failed with a transient error and the expired value was
    /// served instead, within the stale grace. Worth a warning.
    Stale {
        /// The error that made the fetch fail.
        error: E,
        /// How long ago the value expired.
        expired_for: Duration,
    },
    /// The value had expired (within its stale grace) and the fetch in flight
    /// did not answer within [`CacheConfig::stale_wait`](crate::CacheConfig)
    /// of its start:
    /// the expired value was served while the fetch goes on in the background.
    StaleWhileFetching {
        /// How long ago the value expired.
        expired_for: Duration,
    },
}
