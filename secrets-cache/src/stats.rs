//! Counters of what the cache did, and the snapshot [`CacheStats`].
//!
//! Counters are striped across cache-line-padded cells so that threads hitting
//! the cache at once do not fight over one atomic.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

const STRIPES: usize = 8;

#[repr(align(128))]
#[derive(Debug, Default)]
struct Cell128(AtomicU64);

/// A counter that many threads can increment without contending.
#[derive(Debug, Default)]
pub(crate) struct Counter {
    cells: [Cell128; STRIPES],
}

thread_local! {
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    STRIPE.with(|s| {
        let mut i = s.get();
        if i == usize::MAX {
            i = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
            s.set(i);
        }
        i
    })
}

impl Counter {
    pub(crate) fn incr(&self) {
        self.cells[stripe()].0.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.cells.iter().map(|c| c.0.load(Ordering::Relaxed)).sum()
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) hits: Counter,
    pub(crate) misses: Counter,
    pub(crate) coalesced: Counter,
    pub(crate) fetches: Counter,
    pub(crate) failures: Counter,
    pub(crate) refreshes: Counter,
    pub(crate) refresh_failures: Counter,
    pub(crate) stale_served: Counter,
    pub(crate) evictions: Counter,
}

impl Counters {
    pub(crate) fn snapshot(&self, entries: usize) -> CacheStats {
        CacheStats {
            hits: self.hits.get(),
            misses: self.misses.get(),
            coalesced: self.coalesced.get(),
            fetches: self.fetches.get(),
            failures: self.failures.get(),
            refreshes: self.refreshes.get(),
            refresh_failures: self.refresh_failures.get(),
            stale_served: self.stale_served.get(),
            evictions: self.evictions.get(),
            entries,
        }
    }
}

/// What the cache has done since it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CacheStats {
    /// Calls answered from a valid entry.
    pub hits: u64,
    /// Calls that found no valid entry (each either fetched or waited on a fetch).
    pub misses: u64,
    /// Misses that waited on a fetch another caller had started.
    pub coalesced: u64,
    /// Fetches run, in the foreground or as background refreshes.
    pub fetches: u64,
    /// Foreground fetches that ended in an error handed to the caller.
    pub failures: u64,
    /// Background refreshes started ahead of expiry.
    pub refreshes: u64,
    /// Background refreshes that failed (the entry was kept).
    pub refresh_failures: u64,
    /// Calls answered with an expired value because the backend failed transiently.
    pub stale_served: u64,
    /// Entries dropped to stay within capacity.
    pub evictions: u64,
    /// Entries held now.
    pub entries: usize,
}

impl CacheStats {
    /// `hits / (hits + misses)`, or 0 before any call.
    pub fn hit_rate(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            0.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}
