//! [`SecretCache`]: the map, single-flight fetches, refresh ahead, stale if
//! error, and least-recently-used eviction.
//!
//! Layout: the keys are spread over [`SHARDS`] maps, each behind its own
//! `RwLock`. A fresh hit takes one shard's read lock, clones an `Arc` and
//! reads the clock; nothing is awaited and nothing is allocated. A key's slot
//! holds its entry (if any) and the fetch in flight (if any); callers that miss
//! while a fetch is in flight subscribe to its result instead of fetching.
//! The fetch runs in a task of its own (inline only without a tokio runtime),
//! guarded so that a fetch that panics or never runs clears the flight and its
//! waiters start over; callers holding a stale alternative wait at most the
//! stale wait.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crossbeam_utils::sync::{ShardedLock, ShardedLockReadGuard, ShardedLockWriteGuard};
use std::time::Duration;

use foldhash::fast::RandomState;
use tokio::sync::watch;

use crate::clock::{Clock, SystemClock};
use crate::config::{CacheConfig, EntryMeta};
use crate::stats::{CacheStats, Counters};

/// Number of independently locked maps.
const SHARDS: usize = 16;

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

type Published<V, E> = Option<Result<Lookup<V, E>, E>>;

struct Entry<V> {
    value: Arc<V>,
    fetched_at: Duration,
    refresh_at: Duration,
    expires_at: Duration,
    stale_until: Duration,
    refresh_claimed: AtomicBool,
    /// Refresh-ahead attempts that failed; each doubles the wait before the next.
    refresh_failures: u32,
    /// The clock's milliseconds at the last hit, for LRU eviction.
    last_used: AtomicU64,
}

struct Flight<V, E> {
    id: u64,
    result: watch::Receiver<Published<V, E>>,
    /// When it started (the cache's clock): a caller with a stale
    /// alternative waits only for what is left of the stale wait.
    started: Duration,
}

struct Slot<V, E> {
    entry: Option<Entry<V>>,
    flight: Option<Flight<V, E>>,
    /// Set while the expired entry is being served because fetches fail.
    stale: Option<StaleServe<E>>,
}

/// The last transient failure, and when to try the backend again; until
/// then, callers get the stale value at once instead of each trying.
struct StaleServe<E> {
    error: E,
    retry_at: Duration,
}

type Shard<K, V, E> = ShardedLock<HashMap<K, Slot<V, E>, RandomState>>;

struct Inner<K, V, E> {
    config: CacheConfig,
    is_transient: Box<dyn Fn(&E) -> bool + Send + Sync>,
    clock: Arc<dyn Clock>,
    hasher: RandomState,
    shards: Box<[Shard<K, V, E>]>,
    /// Slots holding an entry.
    len: AtomicUsize,
    next_flight: AtomicU64,
    counters: Counters,
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

impl<V> Entry<V> {
    fn claim_refresh(&self) -> bool {
        !self.refresh_claimed.load(Ordering::Relaxed)
            && self
                .refresh_claimed
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }
}

impl<K: Hash + Eq, V, E> Inner<K, V, E> {
    fn shard(&self, key: &K) -> &Shard<K, V, E> {
        let hash = self.hasher.hash_one(key);
        &self.shards[(hash >> 40) as usize % SHARDS]
    }

    fn read(&self, key: &K) -> ShardedLockReadGuard<'_, HashMap<K, Slot<V, E>, RandomState>> {
        self.shard(key).read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self, key: &K) -> ShardedLockWriteGuard<'_, HashMap<K, Slot<V, E>, RandomState>> {
        self.shard(key).write().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh entry's value, counted as a hit, and whether this call claimed
    /// the entry's refresh-ahead (its point has passed and none runs yet).
    /// With `claim` false such an entry is left alone: `None`, no hit.
    fn hit(&self, key: &K, now: Duration, claim: bool) -> Option<(Arc<V>, bool)> {
        if !self.config.enabled {
            return None;
        }
        let shard = self.read(key);
        let entry = shard.get(key).and_then(|slot| slot.entry.as_ref())?;
        if now >= entry.expires_at {
            return None;
        }
        let due = now >= entry.refresh_at && !entry.refresh_claimed.load(Ordering::Relaxed);
        if due && !claim {
            return None;
        }
        self.touch(entry, now);
        let value = Arc::clone(&entry.value);
        let claimed = due && entry.claim_refresh();
        drop(shard);
        self.counters.hits.incr();
        Some((value, claimed))
    }

    fn touch(&self, entry: &Entry<V>, now: Duration) {
        let ms = now.as_millis() as u64;
        // Store only when the millisecond changed: threads hitting one key do
        // not keep writing its cache line.
        if entry.last_used.load(Ordering::Relaxed) != ms {
            entry.last_used.store(ms, Ordering::Relaxed);
        }
    }
}

enum Role<V, E> {
    Lead(
        watch::Receiver<Published<V, E>>,
        u64,
        watch::Sender<Published<V, E>>,
    ),
    /// Join the flight; a caller with a stale alternative waits at most this long.
    Wait(watch::Receiver<Published<V, E>>, Duration),
    Hit(Arc<V>),
    Stale(Lookup<V, E>),
}

/// How a wait for a flight ended.
enum Waited<V, E> {
    /// The flight published its result.
    Published(Result<Lookup<V, E>, E>),
    /// The flight ended without a result (cancelled or panicked).
    Abandoned,
    /// The stale wait ran out: the expired value, to serve instead.
    Impatient(Lookup<V, E>),
}

impl<K, V, E> Inner<K, V, E>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
{
    fn new_flight(
        &self,
        slot: &mut Slot<V, E>,
        now: Duration,
    ) -> (u64, watch::Sender<Published<V, E>>) {
        let id = self.next_flight.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(None);
        slot.flight = Some(Flight {
            id,
            result: rx,
            started: now,
        });
        (id, tx)
    }

    /// The expired value of `slot` this caller may be answered with while a
    /// fetch is in flight, if any (and if `patient` callers are not asked to wait).
    fn stale_alternative(
        &self,
        slot: &Slot<V, E>,
        now: Duration,
        impatient: bool,
    ) -> Option<Lookup<V, E>> {
        let entry = slot.entry.as_ref()?;
        (impatient && self.config.enabled && entry.expires_at <= now && now < entry.stale_until)
            .then(|| Lookup {
                value: Arc::clone(&entry.value),
                outcome: Outcome::StaleWhileFetching {
                    expired_for: now.saturating_sub(entry.expires_at),
                },
            })
    }

    /// A miss: join the flight in flight, or start one in its own task. A
    /// caller that holds a stale alternative (and is `impatient`) waits at
    /// most the stale wait for the flight.
    async fn miss<F, Fut>(
        this: &Arc<Self>,
        key: &K,
        fetch: F,
        impatient: bool,
    ) -> Result<Lookup<V, E>, E>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(V, EntryMeta), E>> + Send + 'static,
    {
        let mut fetch = Some(fetch);
        loop {
            let (role, stale) = {
                let now = this.clock.now();
                let mut shard = this.write(key);
                let slot = shard.entry(key.clone()).or_insert(Slot {
                    entry: None,
                    flight: None,
                    stale: None,
                });
                let mut stale = this.stale_alternative(slot, now, impatient);
                let role = match (&slot.flight, &slot.entry, &slot.stale) {
                    (Some(flight), _, _) => {
                        let waited = now.saturating_sub(flight.started);
                        match stale.take() {
                            // In flight longer than the stale wait: the backend
                            // is slow, nobody waits on it any more.
                            Some(alternative) if waited >= this.config.stale_wait => {
                                Role::Stale(alternative)
                            }
                            alternative => {
                                stale = alternative;
                                Role::Wait(
                                    flight.result.clone(),
                                    this.config.stale_wait.saturating_sub(waited),
                                )
                            }
                        }
                    }
                    (None, Some(entry), _) if this.config.enabled && now < entry.expires_at => {
                        this.touch(entry, now);
                        Role::Hit(Arc::clone(&entry.value))
                    }
                    (None, Some(entry), Some(stale))
                        if now < stale.retry_at && now < entry.stale_until =>
                    {
                        Role::Stale(Lookup {
                            value: Arc::clone(&entry.value),
                            outcome: Outcome::Stale {
                                error: stale.error.clone(),
                                expired_for: now - entry.expires_at,
                            },
                        })
                    }
                    (None, _, _) => {
                        let (id, tx) = this.new_flight(slot, now);
                        Role::Lead(tx.subscribe(), id, tx)
                    }
                };
                (role, stale)
            };
            match role {
                Role::Stale(lookup) => return Ok(lookup),
                Role::Hit(value) => {
                    return Ok(Lookup {
                        value,
                        outcome: Outcome::Hit,
                    });
                }
                Role::Wait(rx, patience) => match this.wait(rx, stale, patience).await {
                    Waited::Published(result) => {
                        return result.map(|lookup| match lookup.outcome {
                            Outcome::Fetched => Lookup {
                                outcome: Outcome::Coalesced,
                                ..lookup
                            },
                            _ => lookup,
                        });
                    }
                    Waited::Impatient(stale) => return Ok(stale),
                    // Cancelled or panicked: start over.
                    Waited::Abandoned => {}
                },
                Role::Lead(rx, id, tx) => {
                    let guard = FlightGuard {
                        inner: Arc::clone(this),
                        key: key.clone(),
                        id,
                        tx: Some(tx),
                    };
                    let fetch = fetch.take().expect("a caller leads at most once");
                    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                        // No tokio runtime to run it on: fetch in this task.
                        return Self::lead(guard, fetch).await;
                    };
                    // The fetch runs in its own task: a caller that goes away
                    // (a request timeout shorter than the backend) cancels
                    // nothing, and a caller parked between polls holds nobody up.
                    let task = runtime.spawn(Self::lead(guard, fetch));
                    match this.wait(rx, stale, this.config.stale_wait).await {
                        Waited::Published(result) => return result,
                        Waited::Impatient(stale) => return Ok(stale),
                        Waited::Abandoned => {
                            if let Err(error) = task.await
                                && error.is_panic()
                            {
                                std::panic::resume_unwind(error.into_panic());
                            }
                            // Cancelled: only when the runtime shuts down,
                            // which drops this caller too. Wait for that.
                            match std::future::pending::<std::convert::Infallible>().await {}
                        }
                    }
                }
            }
        }
    }

    /// Waits for a flight's result; with a `stale` alternative, at most the
    /// stale wait.
    async fn wait(
        &self,
        mut rx: watch::Receiver<Published<V, E>>,
        stale: Option<Lookup<V, E>>,
        patience: Duration,
    ) -> Waited<V, E> {
        let published = async {
            match rx.wait_for(Option::is_some).await {
                Ok(published) => published
                    .clone()
                    .map_or(Waited::Abandoned, Waited::Published),
                Err(_) => Waited::Abandoned,
            }
        };
        let Some(stale) = stale else {
            return published.await;
        };
        tokio::time::timeout(patience, published)
            .await
            .unwrap_or(Waited::Impatient(stale))
    }

    /// Runs `fetch` as flight `id` of `key`, stores its value (if the flight is
    /// still the key's), and publishes the result to the flight's waiters.
    async fn lead<F, Fut>(mut guard: FlightGuard<K, V, E>, fetch: F) -> Result<Lookup<V, E>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(V, EntryMeta), E>>,
    {
        let this = Arc::clone(&guard.inner);
        let id = guard.id;
        this.counters.fetches.incr();
        let fetched = fetch().await;
        let now = this.clock.now();
        let (result, grew) = {
            let mut shard = this.write(&guard.key);
            match shard
                .get_mut(&guard.key)
                .filter(|slot| slot.flight.as_ref().is_some_and(|f| f.id == id))
            {
                // Invalidated while fetching: answer the waiters, store nothing.
                None => (
                    fetched.map(|(value, _)| Lookup {
                        value: Arc::new(value),
                        outcome: Outcome::Fetched,
                    }),
                    false,
                ),
                Some(slot) => {
                    slot.flight = None;
                    let settled = this.settle(slot, fetched, now);
                    if slot.entry.is_none() {
                        shard.remove(&guard.key);
                    }
                    settled
                }
            }
        };
        if let Some(tx) = guard.tx.take() {
            tx.send_replace(Some(result.clone()));
        }
        if grew && this.len.fetch_add(1, Ordering::Relaxed) >= this.config.capacity {
            this.evict_lru();
        }
        if result.is_err() {
            this.counters.failures.incr();
        }
        result
    }

    /// Applies a fetch's result to its key's slot: a value replaces the entry;
    /// an error is answered with the entry while it is valid, with the expired
    /// entry within its grace if the error is transient, else passed on.
    /// The flag says whether the cache gained an entry.
    fn settle(
        &self,
        slot: &mut Slot<V, E>,
        fetched: Result<(V, EntryMeta), E>,
        now: Duration,
    ) -> (Result<Lookup<V, E>, E>, bool) {
        let error = match fetched {
            Ok((value, meta)) => {
                let value = Arc::new(value);
                let mut grew = false;
                if self.config.enabled {
                    grew = slot.entry.is_none();
                    slot.entry = Some(self.new_entry(Arc::clone(&value), &meta, now));
                    slot.stale = None;
                }
                let lookup = Lookup {
                    value,
                    outcome: Outcome::Fetched,
                };
                return (Ok(lookup), grew);
            }
            Err(error) => error,
        };
        let answer = match &mut slot.entry {
            // A refresh ahead failed while the entry is still valid: the next
            // hit after a backoff (the stale retry wait, doubling) tries again.
            Some(entry) if now < entry.expires_at => {
                let doubling = 1u32 << entry.refresh_failures.min(16);
                entry.refresh_failures = entry.refresh_failures.saturating_add(1);
                entry.refresh_at = now
                    .saturating_add(self.config.stale_retry_after.saturating_mul(doubling))
                    .min(entry.expires_at);
                entry.refresh_claimed.store(false, Ordering::Release);
                Ok(Lookup {
                    value: Arc::clone(&entry.value),
                    outcome: Outcome::Hit,
                })
            }
            Some(entry) if now < entry.stale_until && (self.is_transient)(&error) => {
                slot.stale = Some(StaleServe {
                    error: error.clone(),
                    retry_at: now.saturating_add(self.config.stale_retry_after),
                });
                Ok(Lookup {
                    value: Arc::clone(&entry.value),
                    outcome: Outcome::Stale {
                        error,
                        expired_for: now - entry.expires_at,
                    },
                })
            }
            _ => Err(error),
        };
        (answer, false)
    }

    fn new_entry(&self, value: Arc<V>, meta: &EntryMeta, now: Duration) -> Entry<V> {
        let (ttl, backend_limited) = self.config.lifetime(meta);
        let expires_at = now.saturating_add(ttl);
        let refresh_at = if self.config.refresh_ahead >= 1.0 {
            expires_at
        } else {
            now.saturating_add(ttl.mul_f64(self.config.refresh_ahead))
        };
        Entry {
            value,
            fetched_at: now,
            refresh_at,
            expires_at,
            stale_until: expires_at.saturating_add(self.config.grace(ttl, backend_limited)),
            refresh_claimed: AtomicBool::new(false),
            refresh_failures: 0,
            last_used: AtomicU64::new(now.as_millis() as u64),
        }
    }

    /// Starts one background refresh of `key` (the caller claimed it).
    fn start_refresh<F, Fut>(this: &Arc<Self>, key: &K, fetch: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(V, EntryMeta), E>> + Send + 'static,
    {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (id, tx) = {
            let mut shard = this.write(key);
            let Some(slot) = shard.get_mut(key) else {
                return;
            };
            if slot.flight.is_some() {
                return;
            }
            this.new_flight(slot, this.clock.now())
        };
        this.counters.refreshes.incr();
        let guard = FlightGuard {
            inner: Arc::clone(this),
            key: key.clone(),
            id,
            tx: Some(tx),
        };
        let this = Arc::clone(this);
        runtime.spawn(async move {
            let refreshed = Self::lead(guard, fetch).await;
            if !matches!(
                refreshed,
                Ok(Lookup {
                    outcome: Outcome::Fetched,
                    ..
                })
            ) {
                this.counters.refresh_failures.incr();
            }
        });
    }

    /// Drops least recently used entries until the cache is within capacity.
    /// Keys with a fetch in flight are never evicted.
    fn evict_lru(&self) {
        while self.len.load(Ordering::Relaxed) > self.config.capacity {
            let mut oldest: Option<(usize, K, u64)> = None;
            for (i, shard) in self.shards.iter().enumerate() {
                let shard = shard.read().unwrap_or_else(|e| e.into_inner());
                for (key, slot) in shard.iter() {
                    if let (Some(entry), None) = (&slot.entry, &slot.flight) {
                        let used = entry.last_used.load(Ordering::Relaxed);
                        if oldest.as_ref().is_none_or(|(_, _, u)| used < *u) {
                            oldest = Some((i, key.clone(), used));
                        }
                    }
                }
            }
            let Some((i, key, used)) = oldest else { return };
            let mut shard = self.shards[i].write().unwrap_or_else(|e| e.into_inner());
            let still_oldest = shard.get(&key).is_some_and(|slot| {
                slot.flight.is_none()
                    && slot
                        .entry
                        .as_ref()
                        .is_some_and(|e| e.last_used.load(Ordering::Relaxed) == used)
            });
            if still_oldest {
                shard.remove(&key);
                self.len.fetch_sub(1, Ordering::Relaxed);
                self.counters.evictions.incr();
            }
        }
    }
}

/// Clears a flight that ends without publishing (cancelled or panicked fetch),
/// so that its waiters start over instead of waiting forever.
/// Made as soon as a flight is registered (before its fetch is spawned), so
/// a fetch task dropped before it ever ran clears its flight too.
struct FlightGuard<K: Hash + Eq, V, E> {
    inner: Arc<Inner<K, V, E>>,
    key: K,
    id: u64,
    tx: Option<watch::Sender<Published<V, E>>>,
}

impl<K: Hash + Eq, V, E> Drop for FlightGuard<K, V, E> {
    fn drop(&mut self) {
        let Some(tx) = self.tx.take() else { return };
        let mut shard = self.inner.write(&self.key);
        if let Some(slot) = shard.get_mut(&self.key)
            && slot.flight.as_ref().is_some_and(|f| f.id == self.id)
        {
            slot.flight = None;
            if slot.entry.is_none() {
                shard.remove(&self.key);
            }
        }
        drop(shard);
        // Dropping the sender wakes the waiters, who find no flight and retry.
        drop(tx);
    }
}
