//! `Backoff` and `RetryPolicy` on tokio's paused clock: delay formulas,
//! classification, Retry-After, deadline, per-attempt timeout, budget.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use mlflow_secrets_auth_retry::{
    Backoff, Failure, Jitter, RetryBudget, RetryDecision, RetryPolicy, StopReason, fastrand,
};
use tokio::time::Instant;

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Err {
    /// A 503: retry.
    Unavailable,
    /// A 404: stop.
    NotFound,
    /// A 429 with Retry-After.
    Throttled(Duration),
}

fn classify(e: &Err) -> RetryDecision {
    match e {
        Err::Unavailable => RetryDecision::Retry,
        Err::NotFound => RetryDecision::Stop,
        Err::Throttled(after) => RetryDecision::RetryAfter(*after),
    }
}

fn no_jitter() -> RetryPolicy {
    RetryPolicy::default().with_backoff(Backoff::default().with_jitter(Jitter::None))
}

#[test]
fn jitter_modes_stay_within_their_bounds() {
    let base = Backoff::default();
    let modes = [
        Jitter::None,
        Jitter::Proportional(0.1),
        Jitter::Full,
        Jitter::Equal,
        Jitter::Decorrelated,
    ];
    for jitter in modes {
        let backoff = base.with_jitter(jitter);
        let mut draws = 0;
        for seed in 0..1250 {
            let mut previous = backoff.base;
            for (retry, delay) in backoff
                .delays(fastrand::Rng::with_seed(seed))
                .take(8)
                .enumerate()
            {
                let d = backoff.exponential(retry as u32);
                let (low, high) = match jitter {
                    Jitter::None => (d, d),
                    Jitter::Proportional(f) => (d, d + d.mul_f64(f)),
                    Jitter::Full => (Duration::ZERO, d),
                    Jitter::Equal => (d / 2, d),
                    Jitter::Decorrelated => (backoff.base, (previous * 3).min(backoff.max)),
                };
                assert!(
                    low <= delay && delay <= high,
                    "{jitter:?} retry {retry}: {delay:?} not in [{low:?}, {high:?}]"
                );
                previous = delay;
                draws += 1;
            }
        }
        assert_eq!(draws, 10_000);
    }
}

#[test]
fn jitter_actually_varies() {
    for jitter in [
        Jitter::Proportional(0.1),
        Jitter::Full,
        Jitter::Equal,
        Jitter::Decorrelated,
    ] {
        let backoff = Backoff::default().with_jitter(jitter);
        let firsts: std::collections::HashSet<Duration> = (0..100)
            .map(|seed| {
                backoff
                    .delays(fastrand::Rng::with_seed(seed))
                    .next()
                    .unwrap()
            })
            .collect();
        assert!(firsts.len() > 50, "{jitter:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn without_jitter_the_delays_are_exactly_1_2_4_seconds() {
    let start = Instant::now();
    let mut delays = Vec::new();
    let calls = Cell::new(0);
    let err = no_jitter()
        .run_with(
            None,
            classify,
            |event| delays.push(event.delay),
            || {
                calls.set(calls.get() + 1);
                async { Result::<(), _>::Err(Err::Unavailable) }
            },
        )
        .await
        .unwrap_err();
    assert_eq!(delays, [secs(1), secs(2), secs(4)]);
    assert_eq!(calls.get(), 4);
    assert_eq!(err.attempts, 4);
    assert_eq!(err.reason, StopReason::RetriesExhausted);
    assert_eq!(err.failure, Failure::Error(Err::Unavailable));
    assert_eq!(start.elapsed(), secs(7));
}

#[tokio::test(start_paused = true)]
async fn success_after_transient_failures() {
    let calls = Cell::new(0);
    let value = no_jitter()
        .run(classify, || {
            calls.set(calls.get() + 1);
            let result = if calls.get() < 3 {
                Err(Err::Unavailable)
            } else {
                Ok(42)
            };
            async move { result }
        })
        .await
        .unwrap();
    assert_eq!((value, calls.get()), (42, 3));
}

#[tokio::test(start_paused = true)]
async fn stop_errors_are_not_retried() {
    let start = Instant::now();
    let calls = Cell::new(0);
    let err = no_jitter()
        .run(classify, || {
            calls.set(calls.get() + 1);
            async { Result::<(), _>::Err(Err::NotFound) }
        })
        .await
        .unwrap_err();
    assert_eq!(calls.get(), 1);
    assert_eq!(err.reason, StopReason::NotRetryable);
    assert_eq!(err.into_error(), Some(Err::NotFound));
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_and_capped_at_max_delay() {
    let mut delays = Vec::new();
    let hints = [secs(5), secs(100)];
    let calls = Cell::new(0);
    let _ = no_jitter()
        .with_max_retries(2)
        .run_with(
            None,
            classify,
            |event| delays.push(event.delay),
            || {
                let hint = hints.get(calls.get()).copied().unwrap_or_default();
                calls.set(calls.get() + 1);
                async move { Result::<(), _>::Err(Err::Throttled(hint)) }
            },
        )
        .await;
    assert_eq!(delays, [secs(5), secs(30)]);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_cuts_retries_short() {
    let start = Instant::now();
    let err = no_jitter()
        .with_max_retries(10)
        .with_deadline(secs(5))
        .run(classify, || async {
            Result::<(), _>::Err(Err::Unavailable)
        })
        .await
        .unwrap_err();
    // Attempts at 0 s, 1 s, 3 s; the next wait (4 s) would end at 7 s > 5 s.
    assert_eq!(err.attempts, 3);
    assert_eq!(err.reason, StopReason::Deadline);
    assert_eq!(start.elapsed(), secs(3));
}

#[tokio::test(start_paused = true)]
async fn per_attempt_timeout_fires_on_a_never_finishing_future() {
    let start = Instant::now();
    let mut failures = Vec::new();
    let err = no_jitter()
        .with_max_retries(1)
        .with_attempt_timeout(secs(2))
        .run_with(
            None,
            classify,
            |event| failures.push(event.failure.clone()),
            std::future::pending::<Result<(), Err>>,
        )
        .await
        .unwrap_err();
    assert_eq!(failures, [Failure::TimedOut(secs(2))]);
    assert_eq!(err.failure, Failure::TimedOut(secs(2)));
    assert_eq!(
        (err.attempts, err.reason),
        (2, StopReason::RetriesExhausted)
    );
    assert_eq!(start.elapsed(), secs(5));
}

#[tokio::test(start_paused = true)]
async fn the_deadline_bounds_a_hanging_attempt() {
    let start = Instant::now();
    let err = no_jitter()
        .with_deadline(secs(10))
        .run(classify, std::future::pending::<Result<(), Err>>)
        .await
        .unwrap_err();
    assert_eq!(err.failure, Failure::TimedOut(secs(10)));
    assert_eq!(err.reason, StopReason::Deadline);
    assert_eq!(start.elapsed(), secs(10));
}

#[tokio::test(start_paused = true)]
async fn seeded_runs_repeat_their_delays() {
    let policy = RetryPolicy::default().with_seed(7);
    let mut runs = Vec::new();
    for _ in 0..2 {
        let mut delays = Vec::new();
        let _ = policy
            .run_with(
                None,
                classify,
                |event| delays.push(event.delay),
                || async { Result::<(), _>::Err(Err::Unavailable) },
            )
            .await;
        runs.push(delays);
    }
    assert_eq!(runs[0], runs[1]);
    assert_ne!(runs[0][0], secs(1), "jitter applied");
}

#[tokio::test(start_paused = true)]
async fn a_spent_budget_stops_retries() {
    let budget = Arc::new(RetryBudget::new(2, 0.0));
    let policy = no_jitter().with_max_retries(10).with_budget(budget.clone());
    let err = policy
        .run(classify, || async {
            Result::<(), _>::Err(Err::Unavailable)
        })
        .await
        .unwrap_err();
    assert_eq!((err.attempts, err.reason), (3, StopReason::BudgetExhausted));
    let err = policy
        .run(classify, || async {
            Result::<(), _>::Err(Err::Unavailable)
        })
        .await
        .unwrap_err();
    assert_eq!((err.attempts, err.reason), (1, StopReason::BudgetExhausted));
}

#[test]
fn blocking_variant_retries_and_stops() {
    let policy = RetryPolicy::default().with_max_retries(3).with_backoff(
        Backoff::default()
            .with_base(Duration::from_millis(1))
            .with_jitter(Jitter::None),
    );
    let mut calls = 0;
    let mut delays = Vec::new();
    let value = policy
        .run_blocking(
            classify,
            |event| delays.push(event.delay),
            || {
                calls += 1;
                if calls < 3 {
                    Err(Err::Unavailable)
                } else {
                    Ok("ok")
                }
            },
        )
        .unwrap();
    assert_eq!(value, "ok");
    assert_eq!(delays, [Duration::from_millis(1), Duration::from_millis(2)]);

    let err = policy
        .run_blocking(classify, |_| {}, || Result::<(), _>::Err(Err::NotFound))
        .unwrap_err();
    assert_eq!((err.attempts, err.reason), (1, StopReason::NotRetryable));
}

#[test]
fn error_display_says_what_and_why() {
    #[derive(Debug, Clone, PartialEq)]
    struct Msg;
    impl std::fmt::Display for Msg {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("503 from backend")
        }
    }
    let policy = RetryPolicy::default()
        .with_max_retries(1)
        .with_backoff(Backoff::default().with_base(Duration::from_millis(1)));
    let err = policy
        .run_blocking(
            |_: &Msg| RetryDecision::Retry,
            |_| {},
            || Result::<(), _>::Err(Msg),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "503 from backend (after 2 attempts; retries exhausted)"
    );
}

#[test]
fn the_worst_case_is_every_attempt_timing_out_plus_the_longest_waits() {
    let backoff = Backoff::default()
        .with_base(Duration::from_secs(1))
        .with_max(Duration::from_secs(3))
        .with_jitter(Jitter::Proportional(0.5));
    let policy = RetryPolicy::default()
        .with_max_retries(3)
        .with_backoff(backoff)
        .with_attempt_timeout(Duration::from_secs(10));
    // 4 × 10 s + (1 + 2 + 3) s × 1.5
    assert_eq!(policy.worst_case(), Some(Duration::from_secs(49)));
    let bounded = policy.clone().with_deadline(Duration::from_secs(30));
    assert_eq!(bounded.worst_case(), Some(Duration::from_secs(30)));
    assert_eq!(RetryPolicy::default().worst_case(), None, "unbounded");
    let deadline_only = RetryPolicy::default().with_deadline(Duration::from_secs(5));
    assert_eq!(deadline_only.worst_case(), Some(Duration::from_secs(5)));
}
