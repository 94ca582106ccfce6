//! [`CircuitBreaker`]: stop calling a backend that keeps failing, and let
//! exactly one probe find out when it is back.
//!
//! Closed → open after `threshold` consecutive counted failures (a success, or
//! an error the caller does not count, resets the count). Open → every call is
//! refused at once, with the time until the next try. When the open period has
//! passed, the first caller becomes the one probe (half-open) while everyone
//! else is still refused; the probe's success closes the circuit, its failure
//! opens it again (for a period that may grow). A probe that is dropped before
//! it reports (cancelled) lets the next caller probe.
//!
//! The closed path is two atomic loads and no lock. Time is tokio's, so tests
//! run it on a paused clock.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;
const ISOLATED: u8 = 3;

/// When a breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct BreakerConfig {
    /// Consecutive counted failures that open the circuit (default 5, at least 1).
    pub threshold: u32,
    /// How long the circuit stays open before a probe (default 60 s).
    pub open_for: Duration,
    /// Factor applied to the open period after each failed probe (default 1: no growth).
    pub growth: f64,
    /// Cap on the grown open period (default 600 s).
    pub max_open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            threshold: 5,
            open_for: Duration::from_secs(60),
            growth: 1.0,
            max_open_for: Duration::from_secs(600),
        }
    }
}

impl BreakerConfig {
    /// Sets the failure threshold.
    #[must_use]
    pub fn with_threshold(mut self, threshold: u32) -> Self {
        self.threshold = threshold;
        self
    }

    /// Sets the open period.
    #[must_use]
    pub fn with_open_for(mut self, open_for: Duration) -> Self {
        self.open_for = open_for;
        self
    }

    /// Makes the open period grow by `growth` after each failed probe, up to `max`.
    #[must_use]
    pub fn with_growth(mut self, growth: f64, max: Duration) -> Self {
        self.growth = growth;
        self.max_open_for = max;
        self
    }
}

/// Why a call was refused without running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BreakerRefusal {
    /// The circuit is open; the next try is allowed after `retry_after`.
    #[error("circuit open after repeated failures; next try in {:.1}s", retry_after.as_secs_f64())]
    Open {
        /// Time until a probe is allowed.
        retry_after: Duration,
    },
    /// Half-open: the one probe that checks whether the backend is back is
    /// already running.
    #[error("circuit half-open: a probe is checking the backend")]
    ProbeInFlight,
    /// The circuit was isolated by hand and stays open until reset.
    #[error("circuit isolated by an operator")]
    Isolated,
}

impl BreakerRefusal {
    /// Time until a call may be let through, when known.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Open { retry_after } => Some(*retry_after),
            Self::ProbeInFlight => Some(Duration::ZERO),
            Self::Isolated => None,
        }
    }
}

/// The breaker's state, for status output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerState {
    /// Calls go through.
    Closed {
        /// Counted failures in a row so far.
        consecutive_failures: u32,
    },
    /// Calls are refused until `retry_after` has passed.
    Open {
        /// Time until a probe is allowed (zero: the next call probes).
        retry_after: Duration,
    },
    /// One probe is running; other calls are refused.
    HalfOpen,
    /// Refused until [`CircuitBreaker::reset`].
    Isolated,
}

/// Counters of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct BreakerStats {
    /// Times the circuit opened (including re-opens after failed probes).
    pub opened: u64,
    /// Calls refused without running.
    pub rejected: u64,
    /// Probes let through.
    pub probes: u64,
}

/// The result of a call through [`CircuitBreaker::call`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BreakerError<E> {
    /// Refused without running the operation.
    #[error(transparent)]
    Open(BreakerRefusal),
    /// The operation ran and failed.
    #[error("{0}")]
    Inner(E),
}

struct Inner {
    config: BreakerConfig,
    origin: Instant,
    state: AtomicU8,
    failures: AtomicU32,
    /// Nanoseconds since `origin` when the circuit last opened.
    opened_at: AtomicU64,
    /// Current open period in nanoseconds.
    open_for: AtomicU64,
    opened: AtomicU64,
    rejected: AtomicU64,
    probes: AtomicU64,
}

/// A thread-safe circuit breaker; clones share the circuit.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use mlflow_secrets_auth_retry::{BreakerConfig, BreakerError, CircuitBreaker};
/// let breaker = CircuitBreaker::new(BreakerConfig::default().with_threshold(2));
/// let failing = || async { Err::<(), &str>("connection refused") };
/// for _ in 0..2 {
///     assert_eq!(breaker.call(|_| true, failing).await, Err(BreakerError::Inner("connection refused")));
/// }
/// // Open: refused without running the operation.
/// assert!(matches!(breaker.call(|_| true, failing).await, Err(BreakerError::Open(_))));
/// # }
/// ```
#[derive(Clone)]
pub struct CircuitBreaker {
    inner: Arc<Inner>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("config", &self.inner.config)
            .field("state", &self.state())
            .finish()
    }
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self::new(BreakerConfig::default())
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        let config = BreakerConfig {
            threshold: config.threshold.max(1),
            ..config
        };
        Self {
            inner: Arc::new(Inner {
                origin: Instant::now(),
                state: AtomicU8::new(CLOSED),
                failures: AtomicU32::new(0),
                opened_at: AtomicU64::new(0),
                open_for: AtomicU64::new(nanos(config.open_for)),
                opened: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
                probes: AtomicU64::new(0),
                config,
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &BreakerConfig {
        &self.inner.config
    }

    fn now(&self) -> u64 {
        nanos(self.inner.origin.elapsed())
    }

    /// Time left in the open period, given the current time.
    fn remaining_open(&self, now: u64) -> Duration {
        let inner = &self.inner;
        let since = now.saturating_sub(inner.opened_at.load(Ordering::Acquire));
        Duration::from_nanos(inner.open_for.load(Ordering::Acquire).saturating_sub(since))
    }

    /// Asks to run one call. The permit must be told how the call went
    /// ([`Permit::success`], [`Permit::failure`]); dropping it unreported
    /// changes nothing, except that a dropped probe lets the next caller probe.
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit<'_>, BreakerRefusal> {
        let inner = &self.inner;
        loop {
            let refused = match inner.state.load(Ordering::Acquire) {
                CLOSED => {
                    return Ok(Permit {
                        breaker: self,
                        probe: false,
                    });
                }
                OPEN => {
                    let remaining = self.remaining_open(self.now());
                    if !remaining.is_zero() {
                        BreakerRefusal::Open {
                            retry_after: remaining,
                        }
                    } else if inner
                        .state
                        .compare_exchange(OPEN, HALF_OPEN, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        inner.probes.fetch_add(1, Ordering::Relaxed);
                        return Ok(Permit {
                            breaker: self,
                            probe: true,
                        });
                    } else {
                        // Another caller changed the state first: look again.
                        continue;
                    }
                }
                HALF_OPEN => BreakerRefusal::ProbeInFlight,
                _ => BreakerRefusal::Isolated,
            };
            inner.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(refused);
        }
    }

    /// Runs `op` if the circuit lets it; `counts(error)` says whether a failure
    /// counts towards opening (e.g. transient errors only). A refused call never
    /// runs `op`.
    pub async fn call<T, E, Op, Fut>(
        &self,
        counts: impl FnOnce(&E) -> bool,
        op: Op,
    ) -> Result<T, BreakerError<E>>
    where
        Op: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let permit = self.try_acquire().map_err(BreakerError::Open)?;
        match op().await {
            Ok(value) => {
                permit.success();
                Ok(value)
            }
            Err(error) => {
                permit.finish(counts(&error));
                Err(BreakerError::Inner(error))
            }
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        let inner = &self.inner;
        match inner.state.load(Ordering::Acquire) {
            CLOSED => BreakerState::Closed {
                consecutive_failures: inner.failures.load(Ordering::Relaxed),
            },
            OPEN => BreakerState::Open {
                retry_after: self.remaining_open(self.now()),
            },
            HALF_OPEN => BreakerState::HalfOpen,
            _ => BreakerState::Isolated,
        }
    }

    /// Why a call would be refused now, without claiming a probe.
    pub(crate) fn refusal(&self) -> Option<BreakerRefusal> {
        match self.state() {
            BreakerState::Closed { .. } => None,
            BreakerState::Open { retry_after } if retry_after.is_zero() => None,
            BreakerState::Open { retry_after } => Some(BreakerRefusal::Open { retry_after }),
            BreakerState::HalfOpen => Some(BreakerRefusal::ProbeInFlight),
            BreakerState::Isolated => Some(BreakerRefusal::Isolated),
        }
    }

    /// Counters since the breaker was made.
    pub fn stats(&self) -> BreakerStats {
        let inner = &self.inner;
        BreakerStats {
            opened: inner.opened.load(Ordering::Relaxed),
            rejected: inner.rejected.load(Ordering::Relaxed),
            probes: inner.probes.load(Ordering::Relaxed),
        }
    }

    /// Opens the circuit until [`Self::reset`], whatever calls report.
    pub fn isolate(&self) {
        self.inner.state.store(ISOLATED, Ordering::Release);
    }

    /// Closes the circuit and forgets past failures.
    pub fn reset(&self) {
        let inner = &self.inner;
        inner.failures.store(0, Ordering::Relaxed);
        inner
            .open_for
            .store(nanos(inner.config.open_for), Ordering::Release);
        inner.state.store(CLOSED, Ordering::Release);
    }

    fn open(&self, from: u8, open_for: u64) {
        let inner = &self.inner;
        if inner.state.load(Ordering::Acquire) != from {
            return;
        }
        inner.open_for.store(open_for, Ordering::Release);
        inner.opened_at.store(self.now(), Ordering::Release);
        if inner
            .state
            .compare_exchange(from, OPEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            inner.failures.store(0, Ordering::Relaxed);
            inner.opened.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Leave to run one call; report its outcome.
#[derive(Debug)]
#[must_use = "a permit must be told whether the call succeeded"]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    probe: bool,
}

impl Permit<'_> {
    /// Whether this call is the half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// The call succeeded (or failed in a way that does not count).
    pub fn success(self) {
        self.finish(false);
    }

    /// The call failed in a way that counts towards opening.
    pub fn failure(self) {
        self.finish(true);
    }

    /// Reports how the call ended: `counts_as_failure` for a failure that
    /// counts towards opening; `false` for a success or a failure that does
    /// not count (which, like a success, ends a run of failures).
    #[inline]
    pub fn finish(mut self, counts_as_failure: bool) {
        let breaker = self.breaker;
        let inner = &breaker.inner;
        let probe = std::mem::take(&mut self.probe);
        match (probe, !counts_as_failure) {
            (true, true) => breaker.reset(),
            (true, false) => {
                let grown =
                    inner.open_for.load(Ordering::Acquire) as f64 * inner.config.growth.max(1.0);
                let capped =
                    grown.min(nanos(inner.config.max_open_for.max(inner.config.open_for)) as f64);
                breaker.open(HALF_OPEN, capped as u64);
            }
            (false, true) => {
                if inner.failures.load(Ordering::Relaxed) != 0 {
                    inner.failures.store(0, Ordering::Relaxed);
                }
            }
            (false, false) => {
                let failures = inner.failures.fetch_add(1, Ordering::AcqRel) + 1;
                if failures >= inner.config.threshold {
                    breaker.open(CLOSED, nanos(inner.config.open_for));
                }
            }
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe {
            // A probe that never reported: open again with the period already
            // passed, so that the next caller probes.
            let inner = &self.breaker.inner;
            inner.opened_at.store(
                self.breaker
                    .now()
                    .saturating_sub(inner.open_for.load(Ordering::Acquire)),
                Ordering::Release,
            );
            let _ =
                inner
                    .state
                    .compare_exchange(HALF_OPEN, OPEN, Ordering::AcqRel, Ordering::Acquire);
        }
    }
}
