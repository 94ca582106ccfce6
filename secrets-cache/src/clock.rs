//! Where the cache reads the time: [`Clock`], with the system's coarse monotonic
//! clock, tokio's (which follows a paused test clock), and a [`ManualClock`].
//!
//! A clock returns the time since its own fixed origin as a `Duration`. The
//! cache never sleeps; it only compares such times, so a clock a test moves by
//! hand is all deterministic tests need.

use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A monotonic source of time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Time since this clock's fixed origin; never goes backwards.
    fn now(&self) -> Duration;
}

/// The system's monotonic clock, read at coarse resolution (a few milliseconds)
/// where the OS offers that cheaply (Linux `CLOCK_MONOTONIC_COARSE`, a few
/// nanoseconds per read against ~30 ns for a precise read). TTLs are seconds,
/// so the resolution does not matter; the cost does, on every cache hit.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn now(&self) -> Duration {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
        Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn now(&self) -> Duration {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        ORIGIN.get_or_init(Instant::now).elapsed()
    }
}

/// tokio's clock: the system clock, or the paused clock of a test runtime
/// (`tokio::time::pause`, `#[tokio::test(start_paused = true)]`).
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    fn now(&self) -> Duration {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        let origin = *ORIGIN.get_or_init(Instant::now);
        tokio::time::Instant::now()
            .into_std()
            .saturating_duration_since(origin)
    }
}

/// A clock that moves only when told to.
///
/// ```
/// use std::time::Duration;
/// use mlflow_secrets_auth_cache::{Clock, ManualClock};
/// let clock = ManualClock::new();
/// let start = clock.now();
/// clock.advance(Duration::from_secs(5));
/// assert_eq!(clock.now() - start, Duration::from_secs(5));
/// ```
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicU64,
}

impl ManualClock {
    /// A clock standing at its origin.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(by, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_is_monotonic_and_moves() {
        let clock = SystemClock;
        let a = clock.now();
        let b = clock.now();
        assert!(b >= a);
        assert!(a > Duration::ZERO);
    }
}
