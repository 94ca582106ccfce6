//! [`SecretCache`]: the public face of the cache — lookups, expiry,
//! invalidation, counters and entry listings. Where entries live (the
//! [`SHARDS`] maps, the hit path, lifetimes, eviction) is in `store`; how a
//! miss is fetched once for every caller (single flight, stale while
//! fetching, refresh ahead) is in `flight`.
//!
//! A fresh hit takes one shard's read lock, clones an `Arc` and reads the
//! clock; nothing is awaited and nothing is allocated.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam_utils::sync::ShardedLock;
use std::time::Duration;

use foldhash::fast::RandomState;

use crate::clock::{Clock, SystemClock};
use crate::config::{CacheConfig, EntryMeta};
use crate::lookup::{Lookup, Outcome};
use crate::stats::{CacheStats, Counters};
use crate::store::{Inner, SHARDS};

/// The state of one entry, as [`SecretCache::entries`] shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EntryState {
    /// Valid, no fetch in flight.
    Fresh,
    /// Valid or not, a fetch for it is in flight.
    Refreshing,
    /// Expired, but may still be served on transient errors.
    Stale,
    /// Expired past its grace; kept only until replaced or evicted.
    Expired,
}

/// One entry, as [`SecretCache::entries`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EntryInfo<K> {
    /// The key.
    pub key: K,
    /// Time since the value was fetched.
    pub age: Duration,
    /// Time left until it expires (zero once expired).
    pub remaining: Duration,
    /// Its state.
    pub state: EntryState,
}

/// An in-memory cache of values fetched from a slow, fallible backend.
///
/// Cheap to clone (clones share the cache); `Send + Sync` when its types are.
/// Background refreshes need a tokio runtime; without one they are skipped and
/// the entry is fetched again when it expires.
///
/// ```
/// use std::time::Duration;
/// use mlflow_secrets_auth_cache::{CacheConfig, EntryMeta, Outcome, SecretCache};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // Values are tokens, errors are messages; errors starting "timeout" are transient.
/// let cache: SecretCache<String, String, String> =
///     SecretCache::new(CacheConfig::default(), |e: &String| e.starts_with("timeout"));
/// let key = "vault:https://vault:8200::secret/mlflow".to_owned();
/// let first = cache
///     .get_or_fetch(&key, || async { Ok(("token".to_owned(), EntryMeta::default())) })
///     .await
///     .unwrap();
/// assert_eq!(first.outcome, Outcome::Fetched);
/// let second = cache
///     .get_or_fetch(&key, || async { unreachable!("fresh entries are not fetched") })
///     .await
///     .unwrap();
/// assert_eq!((second.value.as_str(), second.outcome), ("token", Outcome::Hit));
/// # }
/// ```
pub struct SecretCache<K, V, E> {
    inner: Arc<Inner<K, V, E>>,
}

impl<K, V, E> Clone for SecretCache<K, V, E> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K, V, E> fmt::Debug for SecretCache<K, V, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretCache")
            .field("config", &self.inner.config)
            .field("entries", &self.inner.len.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<K, V, E> SecretCache<K, V, E>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
{
    /// A cache on the system clock. `is_transient` decides which fetch errors
    /// may be answered with a stale value.
    pub fn new(
        config: CacheConfig,
        is_transient: impl Fn(&E) -> bool + Send + Sync + 'static,
    ) -> Self {
        Self::with_clock(config, is_transient, Arc::new(SystemClock))
    }

    /// A cache reading time from `clock` (see [`crate::ManualClock`], [`crate::TokioClock`]).
    pub fn with_clock(
        config: CacheConfig,
        is_transient: impl Fn(&E) -> bool + Send + Sync + 'static,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let hasher = RandomState::default();
        let shards = (0..SHARDS)
            .map(|_| ShardedLock::new(HashMap::with_hasher(hasher.clone())))
            .collect();
        Self {
            inner: Arc::new(Inner {
                config: config.sanitized(),
                is_transient: Box::new(is_transient),
                clock,
                hasher,
                shards,
                len: AtomicUsize::new(0),
                next_flight: AtomicU64::new(1),
                counters: Counters::default(),
            }),
        }
    }

    /// The configuration in force (with out-of-range values corrected).
    pub fn config(&self) -> &CacheConfig {
        &self.inner.config
    }

    /// The value for `key`: from a valid entry without waiting, else from `fetch`,
    /// shared with every concurrent caller missing on the same key.
    ///
    /// - A hit past the refresh-ahead point starts one background refresh with
    ///   this call's `fetch` and still returns the current value at once.
    /// - A failed fetch reaches every waiter and is not cached; if the key held
    ///   an expired value within its stale grace and `is_transient(error)`, that
    ///   value is returned instead, as [`Outcome::Stale`].
    pub async fn get_or_fetch<F, Fut>(&self, key: &K, fetch: F) -> Result<Lookup<V, E>, E>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(V, EntryMeta), E>> + Send + 'static,
    {
        let inner = &self.inner;
        if let Some((value, refresh_due)) = inner.hit(key, inner.clock.now(), true) {
            if refresh_due {
                Inner::start_refresh(inner, key, fetch);
            }
            return Ok(Lookup {
                value,
                outcome: Outcome::Hit,
            });
        }
        // Boxed: keeps the future of the hit path small (it is moved and pinned per call).
        let result = Box::pin(Inner::miss(inner, key, fetch, true)).await;
        let counters = &inner.counters;
        match &result {
            Ok(Lookup {
                outcome: Outcome::Hit,
                ..
            }) => counters.hits.incr(),
            Ok(Lookup {
                outcome: Outcome::Coalesced,
                ..
            }) => {
                counters.misses.incr();
                counters.coalesced.incr();
            }
            Ok(Lookup {
                outcome: Outcome::Stale { .. } | Outcome::StaleWhileFetching { .. },
                ..
            }) => {
                counters.misses.incr();
                counters.stale_served.incr();
            }
            Ok(_) | Err(_) => counters.misses.incr(),
        }
        result
    }

    /// The value for `key` when a fresh entry holds it and no refresh-ahead is
    /// due, counted as a hit; `None` otherwise (then [`Self::get_or_fetch`]
    /// fetches, refreshes or serves stale as configured). Never waits: for
    /// callers that can answer without an async runtime on the hit path.
    pub fn fresh(&self, key: &K) -> Option<Arc<V>> {
        let inner = &self.inner;
        inner
            .hit(key, inner.clock.now(), false)
            .map(|(value, _)| value)
    }

    /// Drops the entry of `key`. A fetch already in flight for it still answers
    /// its waiters, but its value is not stored; the next call fetches anew.
    pub fn invalidate(&self, key: &K) {
        let mut shard = self.inner.write(key);
        if let Some(slot) = shard.remove(key)
            && slot.entry.is_some()
        {
            self.inner.len.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Marks the entry of `key` expired now, keeping its value as the stale
    /// fallback: the next call fetches, and if that fetch fails transiently
    /// the value is still served within its stale grace (never past a
    /// validity the backend reported). A fetch in flight is left alone.
    pub fn expire(&self, key: &K) {
        let now = self.inner.clock.now();
        let mut shard = self.inner.write(key);
        if let Some(slot) = shard.get_mut(key) {
            if let Some(entry) = &mut slot.entry
                && now < entry.expires_at
            {
                entry.stale_until = entry.stale_until.max(now);
                entry.expires_at = now;
                entry.refresh_at = now;
            }
            slot.stale = None;
        }
    }

    /// Expires `key` (see [`Self::expire`]) and waits for the fetch that
    /// follows — started by this call with `fetch`, or already in flight —
    /// without the [`CacheConfig::stale_wait`](crate::CacheConfig) shortcut:
    /// the new value, or the old one as [`Outcome::Stale`] when the fetch
    /// fails transiently within the grace. For "the server refused this
    /// value: get the current one".
    pub async fn refetch<F, Fut>(&self, key: &K, fetch: F) -> Result<Lookup<V, E>, E>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(V, EntryMeta), E>> + Send + 'static,
    {
        self.expire(key);
        Inner::miss(&self.inner, key, fetch, false).await
    }

    /// The value held for `key`, fresh or not, without fetching or counting
    /// a hit.
    pub fn peek(&self, key: &K) -> Option<Arc<V>> {
        let shard = self.inner.read(key);
        shard
            .get(key)
            .and_then(|slot| slot.entry.as_ref())
            .map(|entry| Arc::clone(&entry.value))
    }

    /// Drops every entry (fetches in flight are treated as by [`Self::invalidate`]).
    pub fn clear(&self) {
        for shard in self.inner.shards.iter() {
            let mut shard = shard.write().unwrap_or_else(|e| e.into_inner());
            let removed = shard.values().filter(|slot| slot.entry.is_some()).count();
            shard.clear();
            self.inner.len.fetch_sub(removed, Ordering::Relaxed);
        }
    }

    /// Number of entries held.
    pub fn len(&self) -> usize {
        self.inner.len.load(Ordering::Relaxed)
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counters since the cache was made.
    pub fn stats(&self) -> CacheStats {
        self.inner.counters.snapshot(self.len())
    }

    /// Every entry with its age, remaining TTL and state (no values).
    pub fn entries(&self) -> Vec<EntryInfo<K>> {
        let now = self.inner.clock.now();
        let mut out = Vec::new();
        for shard in self.inner.shards.iter() {
            let shard = shard.read().unwrap_or_else(|e| e.into_inner());
            for (key, slot) in shard.iter() {
                let Some(entry) = &slot.entry else { continue };
                let state = if slot.flight.is_some() {
                    EntryState::Refreshing
                } else if now < entry.expires_at {
                    EntryState::Fresh
                } else if now < entry.stale_until {
                    EntryState::Stale
                } else {
                    EntryState::Expired
                };
                out.push(EntryInfo {
                    key: key.clone(),
                    age: now.saturating_sub(entry.fetched_at),
                    remaining: entry.expires_at.saturating_sub(now),
                    state,
                });
            }
        }
        out
    }
}
