//! Where entries live: the shards and their slots (an entry, the fetch in
//! flight, the stale state), the hit path, entry lifetimes and eviction.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_utils::sync::{ShardedLock, ShardedLockReadGuard, ShardedLockWriteGuard};
use foldhash::fast::RandomState;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::config::{CacheConfig, EntryMeta};
use crate::lookup::Lookup;
use crate::stats::Counters;

/// Number of independently locked maps.
pub(crate) const SHARDS: usize = 16;

pub(crate) type Published<V, E> = Option<Result<Lookup<V, E>, E>>;

pub(crate) struct Entry<V> {
    pub(crate) value: Arc<V>,
    pub(crate) fetched_at: Duration,
    pub(crate) refresh_at: Duration,
    pub(crate) expires_at: Duration,
    pub(crate) stale_until: Duration,
    pub(crate) refresh_claimed: AtomicBool,
    /// Refresh-ahead attempts that failed; each doubles the wait before the next.
    pub(crate) refresh_failures: u32,
    /// The clock's milliseconds at the last hit, for LRU eviction.
    pub(crate) last_used: AtomicU64,
}

/// The fetch in flight for a slot (its logic is in `flight`).
pub(crate) struct Flight<V, E> {
    pub(crate) id: u64,
    pub(crate) result: watch::Receiver<Published<V, E>>,
    /// When it started (the cache's clock): a caller with a stale
    /// alternative waits only for what is left of the stale wait.
    pub(crate) started: Duration,
}

pub(crate) struct Slot<V, E> {
    pub(crate) entry: Option<Entry<V>>,
    pub(crate) flight: Option<Flight<V, E>>,
    /// Set while the expired entry is being served because fetches fail.
    pub(crate) stale: Option<StaleServe<E>>,
}

/// The last transient failure, and when to try the backend again; until
/// then, callers get the stale value at once instead of each trying.
pub(crate) struct StaleServe<E> {
    pub(crate) error: E,
    pub(crate) retry_at: Duration,
}

pub(crate) type Shard<K, V, E> = ShardedLock<HashMap<K, Slot<V, E>, RandomState>>;

pub(crate) struct Inner<K, V, E> {
    pub(crate) config: CacheConfig,
    pub(crate) is_transient: Box<dyn Fn(&E) -> bool + Send + Sync>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) hasher: RandomState,
    pub(crate) shards: Box<[Shard<K, V, E>]>,
    /// Slots holding an entry.
    pub(crate) len: AtomicUsize,
    pub(crate) next_flight: AtomicU64,
    pub(crate) counters: Counters,
}

impl<V> Entry<V> {
    pub(crate) fn claim_refresh(&self) -> bool {
        !self.refresh_claimed.load(Ordering::Relaxed)
            && self
                .refresh_claimed
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }
}

impl<K: Hash + Eq, V, E> Inner<K, V, E> {
    pub(crate) fn shard(&self, key: &K) -> &Shard<K, V, E> {
        let hash = self.hasher.hash_one(key);
        &self.shards[(hash >> 40) as usize % SHARDS]
    }

    pub(crate) fn read(
        &self,
        key: &K,
    ) -> ShardedLockReadGuard<'_, HashMap<K, Slot<V, E>, RandomState>> {
        self.shard(key).read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn write(
        &self,
        key: &K,
    ) -> ShardedLockWriteGuard<'_, HashMap<K, Slot<V, E>, RandomState>> {
        self.shard(key).write().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh entry's value, counted as a hit, and whether this call claimed
    /// the entry's refresh-ahead (its point has passed and none runs yet).
    /// With `claim` false such an entry is left alone: `None`, no hit.
    pub(crate) fn hit(&self, key: &K, now: Duration, claim: bool) -> Option<(Arc<V>, bool)> {
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

    pub(crate) fn touch(&self, entry: &Entry<V>, now: Duration) {
        let ms = now.as_millis() as u64;
        // Store only when the millisecond changed: threads hitting one key do
        // not keep writing its cache line.
        if entry.last_used.load(Ordering::Relaxed) != ms {
            entry.last_used.store(ms, Ordering::Relaxed);
        }
    }
}

impl<K, V, E> Inner<K, V, E>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
{
    pub(crate) fn new_entry(&self, value: Arc<V>, meta: &EntryMeta, now: Duration) -> Entry<V> {
        let (ttl, backend_limited) = self.config.lifetime(meta);
        let expires_at = now.saturating_add(ttl);
        // A value usable for less than it lives is refreshed as its life says.
        let life = match meta.lifetime {
            Some(life) if backend_limited => life.max(ttl),
            _ => ttl,
        };
        let refresh_after = self.config.refresh_after(life, backend_limited).min(ttl);
        let refresh_at = now.saturating_add(refresh_after);
        Entry {
            value,
            fetched_at: now,
            refresh_at,
            expires_at,
            stale_until: now.saturating_add(self.config.servable_for(meta, ttl, backend_limited)),
            refresh_claimed: AtomicBool::new(false),
            refresh_failures: 0,
            last_used: AtomicU64::new(now.as_millis() as u64),
        }
    }

    /// Drops least recently used entries until the cache is within capacity.
    /// Keys with a fetch in flight are never evicted.
    pub(crate) fn evict_lru(&self) {
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
