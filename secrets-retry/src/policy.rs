//! [`RetryPolicy`]: run an operation again after transient failures, with
//! backoff, an optional per-attempt timeout, a total deadline, an optional
//! shared [`RetryBudget`], and optionally behind a [`CircuitBreaker`].
//!
//! The caller's classifier decides per error: [`RetryDecision::Retry`],
//! [`RetryDecision::RetryAfter`] (a server's hint, capped at the backoff's
//! maximum) or [`RetryDecision::Stop`]. Attempts that time out are retried.

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::breaker::{BreakerRefusal, CircuitBreaker};
use crate::budget::RetryBudget;

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Retry after the backoff delay.
    Retry,
    /// Retry after this delay (a Retry-After header or throttling hint), capped
    /// at the backoff's maximum.
    RetryAfter(Duration),
    /// Do not retry (the error is permanent, e.g. a 4xx).
    Stop,
}

/// How an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure<E> {
    /// The operation returned an error.
    Error(E),
    /// The attempt did not finish within this time (the per-attempt timeout or
    /// what was left of the deadline).
    TimedOut(Duration),
    /// The circuit breaker refused the attempt; the operation did not run.
    CircuitOpen(BreakerRefusal),
}

impl<E: fmt::Display> fmt::Display for Failure<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Error(e) => e.fmt(f),
            Self::TimedOut(after) => write!(f, "no answer within {:.1}s", after.as_secs_f64()),
            Self::CircuitOpen(open) => open.fmt(f),
        }
    }
}

/// Why retrying stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// The classifier said the error is not worth retrying.
    NotRetryable,
    /// All retries were used.
    RetriesExhausted,
    /// The next wait would pass the deadline (or the deadline passed).
    Deadline,
    /// The shared retry budget is spent.
    BudgetExhausted,
    /// The circuit breaker refused the attempt.
    CircuitOpen,
}

impl StopReason {
    fn as_str(self) -> &'static str {
        match self {
            Self::NotRetryable => "not retryable",
            Self::RetriesExhausted => "retries exhausted",
            Self::Deadline => "deadline reached",
            Self::BudgetExhausted => "retry budget spent",
            Self::CircuitOpen => "circuit open",
        }
    }
}

/// The last failure, after retrying stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryError<E> {
    /// Attempts that ran (0 when the circuit refused the first one).
    pub attempts: u32,
    /// Why no further attempt was made.
    pub reason: StopReason,
    /// The last failure.
    pub failure: Failure<E>,
}

impl<E> RetryError<E> {
    /// The operation's own error, if the last failure was one.
    pub fn into_error(self) -> Option<E> {
        match self.failure {
            Failure::Error(e) => Some(e),
            Failure::TimedOut(_) | Failure::CircuitOpen(_) => None,
        }
    }
}

impl<E: fmt::Display> fmt::Display for RetryError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (after {} attempt{}; {})",
            self.failure,
            self.attempts,
            if self.attempts == 1 { "" } else { "s" },
            self.reason.as_str()
        )
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for RetryError<E> {}

/// What the `on_retry` hook is told before each wait.
#[derive(Debug)]
#[non_exhaustive]
pub struct RetryEvent<'a, E> {
    /// The number of the attempt that failed (1 = the first).
    pub attempt: u32,
    /// How it failed.
    pub failure: &'a Failure<E>,
    /// The wait before the next attempt.
    pub delay: Duration,
}

/// How many times to retry, how long to wait, and when to give up.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// use std::time::Duration;
/// use mlflow_secrets_auth_retry::{RetryDecision, RetryPolicy};
/// let policy = RetryPolicy::default().with_deadline(Duration::from_secs(60));
/// let mut calls = 0;
/// let result = policy
///     .run(
///         |e: &u16| if *e >= 500 { RetryDecision::Retry } else { RetryDecision::Stop },
///         || {
///             calls += 1;
///             let answer = if calls < 3 { Err(503) } else { Ok("secret text") };
///             async move { answer }
///         },
///     )
///     .await;
/// assert_eq!(result.unwrap(), "secret text");
/// assert_eq!(calls, 3);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    max_retries: u32,
    backoff: Backoff,
    deadline: Option<Duration>,
    attempt_timeout: Option<Duration>,
    seed: Option<u64>,
    budget: Option<Arc<RetryBudget>>,
}

impl Default for RetryPolicy {
    /// 3 retries, [`Backoff::default`] (1 s, ×2, max 30 s, +0–10 %), no
    /// deadline, no per-attempt timeout, no budget.
    fn default() -> Self {
        Self {
            max_retries: 3,
            backoff: Backoff::default(),
            deadline: None,
            attempt_timeout: None,
            seed: None,
            budget: None,
        }
    }
}

impl RetryPolicy {
    /// Sets the number of retries after the first attempt.
    #[must_use]
    pub fn with_max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// Sets the backoff.
    #[must_use]
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the total time budget, attempts and waits included.
    #[must_use]
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Sets the timeout of each attempt (async runs only).
    #[must_use]
    pub fn with_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// Makes jitter deterministic: every run draws from an RNG seeded with `seed`.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Shares a retry budget with other policies.
    #[must_use]
    pub fn with_budget(mut self, budget: Arc<RetryBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// The number of retries.
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// The backoff.
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// The total deadline, if any.
    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
    }

    /// The per-attempt timeout, if any.
    pub fn attempt_timeout(&self) -> Option<Duration> {
        self.attempt_timeout
    }

    /// The longest a [`Self::run`] can take: every attempt timing out and the
    /// longest wait between them, bounded by the deadline. `None` when
    /// nothing bounds it (no per-attempt timeout and no deadline).
    pub fn worst_case(&self) -> Option<Duration> {
        let waits = (0..self.max_retries)
            .map(|retry| self.backoff.longest(retry))
            .fold(Duration::ZERO, Duration::saturating_add);
        let attempts = self.attempt_timeout.map(|t| {
            t.saturating_mul(self.max_retries.saturating_add(1))
                .saturating_add(waits)
        });
        match (attempts, self.deadline) {
            (Some(a), Some(d)) => Some(a.min(d)),
            (a, d) => a.or(d),
        }
    }

    /// Runs `op` until it succeeds or retrying stops.
    pub async fn run<T, E, Op, Fut>(
        &self,
        classify: impl Fn(&E) -> RetryDecision,
        op: Op,
    ) -> Result<T, RetryError<E>>
    where
        Op: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.run_with(None, classify, |_| {}, op).await
    }

    /// Runs `op` behind `breaker`, retrying as [`Self::run`] does, with a hook
    /// called before each wait. Failures the classifier would retry, and
    /// timeouts, count towards opening the circuit; when the circuit refuses an
    /// attempt, retrying stops at once with [`Failure::CircuitOpen`], which
    /// carries the time until the next try.
    pub async fn run_with<T, E, Op, Fut>(
        &self,
        breaker: Option<&CircuitBreaker>,
        classify: impl Fn(&E) -> RetryDecision,
        mut on_retry: impl FnMut(&RetryEvent<'_, E>),
        mut op: Op,
    ) -> Result<T, RetryError<E>>
    where
        Op: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut schedule = Schedule::new(self);
        // The clock is read only once an attempt has to wait: an operation that
        // completes on its first poll costs no clock read and no timer.
        let mut start = None;
        let mut elapsed = || {
            start
                .get_or_insert_with(tokio::time::Instant::now)
                .elapsed()
        };
        loop {
            let permit = match breaker.map(CircuitBreaker::try_acquire).transpose() {
                Ok(permit) => permit,
                Err(open) => return Err(schedule.refused(open)),
            };
            let mut attempt = pin!(op());
            let first_poll = poll_fn(|cx| Poll::Ready(attempt.as_mut().poll(cx))).await;
            let outcome = match first_poll {
                Poll::Ready(result) => result.map_err(Failure::Error),
                Poll::Pending => match self.attempt_limit(&mut elapsed) {
                    None => attempt.await.map_err(Failure::Error),
                    Some(limit) => match tokio::time::timeout(limit, attempt).await {
                        Ok(result) => result.map_err(Failure::Error),
                        Err(_) => Err(Failure::TimedOut(limit)),
                    },
                },
            };
            let failure = match outcome {
                Ok(value) => {
                    if let Some(permit) = permit {
                        permit.success();
                    }
                    schedule.succeeded();
                    return Ok(value);
                }
                Err(failure) => failure,
            };
            let decision = schedule.decide(&failure, &classify);
            if let Some(permit) = permit {
                permit.finish(decision != RetryDecision::Stop);
            }
            let delay = match schedule.next_delay(decision, self.deadline.map(|_| elapsed())) {
                Ok(delay) => delay,
                Err(reason) => return Err(schedule.stop(reason, failure)),
            };
            // Do not wait for a circuit this failure (or another caller's) opened.
            if let Some(open) = breaker.and_then(CircuitBreaker::refusal) {
                return Err(schedule.refused(open));
            }
            on_retry(&RetryEvent {
                attempt: schedule.attempts,
                failure: &failure,
                delay,
            });
            tokio::time::sleep(delay).await;
        }
    }

    /// How long the next attempt may take: the per-attempt timeout, bounded by
    /// what is left of the deadline.
    fn attempt_limit(&self, elapsed: impl FnOnce() -> Duration) -> Option<Duration> {
        match self.deadline {
            Some(deadline) => {
                let left = deadline.saturating_sub(elapsed());
                Some(self.attempt_timeout.map_or(left, |t| t.min(left)))
            }
            None => self.attempt_timeout,
        }
    }

    /// The blocking form of [`Self::run`], sleeping the thread between
    /// attempts. There is no per-attempt timeout (a blocking call cannot be
    /// abandoned), but the deadline still bounds the waits.
    pub fn run_blocking<T, E>(
        &self,
        classify: impl Fn(&E) -> RetryDecision,
        mut on_retry: impl FnMut(&RetryEvent<'_, E>),
        mut op: impl FnMut() -> Result<T, E>,
    ) -> Result<T, RetryError<E>> {
        let mut schedule = Schedule::new(self);
        let start = std::time::Instant::now();
        loop {
            let failure = match op() {
                Ok(value) => {
                    schedule.succeeded();
                    return Ok(value);
                }
                Err(error) => Failure::Error(error),
            };
            let decision = schedule.decide(&failure, &classify);
            let delay = match schedule.next_delay(decision, Some(start.elapsed())) {
                Ok(delay) => delay,
                Err(reason) => return Err(schedule.stop(reason, failure)),
            };
            on_retry(&RetryEvent {
                attempt: schedule.attempts,
                failure: &failure,
                delay,
            });
            std::thread::sleep(delay);
        }
    }
}

/// The bookkeeping one run shares between its async and blocking forms.
struct Schedule<'p> {
    policy: &'p RetryPolicy,
    /// Made at the first delay: a run that succeeds at once draws nothing.
    rng: Option<fastrand::Rng>,
    attempts: u32,
    previous_delay: Duration,
}

impl<'p> Schedule<'p> {
    fn new(policy: &'p RetryPolicy) -> Self {
        Self {
            policy,
            rng: None,
            attempts: 0,
            previous_delay: policy.backoff.base,
        }
    }

    fn succeeded(&self) {
        if let Some(budget) = &self.policy.budget {
            budget.deposit();
        }
    }

    fn refused<E>(&self, open: BreakerRefusal) -> RetryError<E> {
        self.stop(StopReason::CircuitOpen, Failure::CircuitOpen(open))
    }

    fn stop<E>(&self, reason: StopReason, failure: Failure<E>) -> RetryError<E> {
        RetryError {
            attempts: self.attempts,
            reason,
            failure,
        }
    }

    fn decide<E>(
        &mut self,
        failure: &Failure<E>,
        classify: impl Fn(&E) -> RetryDecision,
    ) -> RetryDecision {
        self.attempts += 1;
        match failure {
            Failure::Error(error) => classify(error),
            Failure::TimedOut(_) => RetryDecision::Retry,
            Failure::CircuitOpen(_) => RetryDecision::Stop,
        }
    }

    /// The wait before the next attempt, or why there is none.
    fn next_delay(
        &mut self,
        decision: RetryDecision,
        elapsed: Option<Duration>,
    ) -> Result<Duration, StopReason> {
        let policy = self.policy;
        let hint = match decision {
            RetryDecision::Stop => return Err(StopReason::NotRetryable),
            RetryDecision::Retry => None,
            RetryDecision::RetryAfter(hint) => Some(hint.min(policy.backoff.max)),
        };
        if self.attempts > policy.max_retries {
            return Err(StopReason::RetriesExhausted);
        }
        let delay = hint.unwrap_or_else(|| {
            let rng = self.rng.get_or_insert_with(|| {
                policy
                    .seed
                    .map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed)
            });
            policy
                .backoff
                .delay(self.attempts - 1, self.previous_delay, rng)
        });
        if let (Some(deadline), Some(elapsed)) = (policy.deadline, elapsed)
            && elapsed.saturating_add(delay) >= deadline
        {
            return Err(StopReason::Deadline);
        }
        if let Some(budget) = &policy.budget
            && !budget.try_withdraw()
        {
            return Err(StopReason::BudgetExhausted);
        }
        self.previous_delay = delay;
        Ok(delay)
    }
}
