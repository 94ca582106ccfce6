//! Single flight: one fetch per key at a time, in a task of its own, shared
//! by every caller that misses meanwhile; callers holding a stale value wait
//! only until the fetch is `stale_wait` old; refresh ahead is a flight no
//! caller waits on; a guard clears a flight that panics or never runs.

use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::EntryMeta;
use crate::lookup::{Lookup, Outcome};
use crate::store::{Entry, Flight, Inner, Published, Slot, StaleServe};

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
    pub(crate) async fn miss<F, Fut>(
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
                    let mut entry = self.new_entry(Arc::clone(&value), &meta, now);
                    if let Some(old) = slot.entry.as_ref().filter(|old| now < old.expires_at)
                        && entry.expires_at <= old.expires_at
                    {
                        // A refresh ahead brought back a value expiring no
                        // later than the current one (an IdP handing out the
                        // token it has): the next refresh is backed off as
                        // after a failure, so the refreshes do not crowd in
                        // ever shorter steps towards the expiry.
                        entry.refresh_failures = old.refresh_failures;
                        entry.refresh_at = self.backoff(&mut entry, now).max(entry.refresh_at);
                    }
                    slot.entry = Some(entry);
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
                entry.refresh_at = self.backoff(entry, now);
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

    /// When `entry` is next refreshed after a refresh that did not renew it:
    /// the stale retry wait, doubling with each such refresh, never past its
    /// expiry.
    fn backoff(&self, entry: &mut Entry<V>, now: Duration) -> Duration {
        let doubling = 1u32 << entry.refresh_failures.min(16);
        entry.refresh_failures = entry.refresh_failures.saturating_add(1);
        now.saturating_add(self.config.stale_retry_after.saturating_mul(doubling))
            .min(entry.expires_at)
    }

    /// Starts one background refresh of `key` (the caller claimed it).
    pub(crate) fn start_refresh<F, Fut>(this: &Arc<Self>, key: &K, fetch: F)
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
}

/// Clears a flight that ends without publishing (cancelled or panicked fetch),
/// so that its waiters start over instead of waiting forever.
/// Made as soon as a flight is registered (before its fetch is spawned), so
/// a fetch task dropped before it ever ran clears its flight too.
pub(crate) struct FlightGuard<K: Hash + Eq, V, E> {
    pub(crate) inner: Arc<Inner<K, V, E>>,
    pub(crate) key: K,
    pub(crate) id: u64,
    pub(crate) tx: Option<watch::Sender<Published<V, E>>>,
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
