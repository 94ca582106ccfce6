//! `CircuitBreaker` on tokio's paused clock: opening, refusing without calling,
//! exactly one half-open probe, closing and re-opening, and its composition
//! with `RetryPolicy`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mlflow_secrets_auth_retry::{
    Backoff, BreakerConfig, BreakerError, BreakerRefusal, BreakerState, CircuitBreaker, Failure,
    Jitter, RetryDecision, RetryError, RetryPolicy, StopReason,
};
use tokio::sync::Semaphore;

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn breaker(threshold: u32) -> CircuitBreaker {
    CircuitBreaker::new(
        BreakerConfig::default()
            .with_threshold(threshold)
            .with_open_for(secs(60)),
    )
}

async fn fail(b: &CircuitBreaker) -> Result<(), BreakerError<&'static str>> {
    b.call(|_| true, || async { Err("connection refused") })
        .await
}

async fn succeed(b: &CircuitBreaker) -> Result<(), BreakerError<&'static str>> {
    b.call(|_| true, || async { Ok(()) }).await
}

#[tokio::test(start_paused = true)]
async fn opens_after_threshold_consecutive_failures() {
    let b = breaker(3);
    for n in 1..3 {
        assert_eq!(
            fail(&b).await,
            Err(BreakerError::Inner("connection refused"))
        );
        assert_eq!(
            b.state(),
            BreakerState::Closed {
                consecutive_failures: n
            }
        );
    }
    fail(&b).await.unwrap_err();
    assert_eq!(
        b.state(),
        BreakerState::Open {
            retry_after: secs(60)
        }
    );
    assert_eq!(b.stats().opened, 1);
}

#[tokio::test(start_paused = true)]
async fn a_success_resets_the_count() {
    let b = breaker(2);
    fail(&b).await.unwrap_err();
    succeed(&b).await.unwrap();
    fail(&b).await.unwrap_err();
    assert_eq!(
        b.state(),
        BreakerState::Closed {
            consecutive_failures: 1
        }
    );
}

#[tokio::test(start_paused = true)]
async fn uncounted_errors_do_not_open_it() {
    let b = breaker(1);
    for _ in 0..5 {
        let result: Result<(), _> = b
            .call(|_: &&str| false, || async { Err("404 not found") })
            .await;
        assert_eq!(result, Err(BreakerError::Inner("404 not found")));
    }
    assert_eq!(
        b.state(),
        BreakerState::Closed {
            consecutive_failures: 0
        }
    );
}

#[tokio::test(start_paused = true)]
async fn while_open_the_operation_is_not_called_and_the_error_says_when() {
    let b = breaker(1);
    fail(&b).await.unwrap_err();
    tokio::time::advance(secs(15)).await;
    let calls = AtomicUsize::new(0);
    let result = b
        .call(
            |_: &&str| true,
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(())
            },
        )
        .await;
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    let Err(BreakerError::Open(open)) = result else {
        panic!("expected a refusal, got {result:?}");
    };
    assert_eq!(
        open,
        BreakerRefusal::Open {
            retry_after: secs(45)
        }
    );
    assert_eq!(
        open.to_string(),
        "circuit open after repeated failures; next try in 45.0s"
    );
    assert_eq!(b.stats().rejected, 1);
}

#[tokio::test(start_paused = true)]
async fn fifty_callers_at_half_open_let_exactly_one_probe_through() {
    let b = breaker(1);
    fail(&b).await.unwrap_err();
    tokio::time::advance(secs(60)).await;

    let gate = Arc::new(Semaphore::new(0));
    let probes = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (b, gate, probes) = (b.clone(), gate.clone(), probes.clone());
            tokio::spawn(async move {
                b.call(
                    |_: &&str| true,
                    || async move {
                        probes.fetch_add(1, Ordering::SeqCst);
                        gate.acquire().await.unwrap().forget();
                        Ok(())
                    },
                )
                .await
            })
        })
        .collect();
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert_eq!(probes.load(Ordering::SeqCst), 1);
    assert_eq!(b.state(), BreakerState::HalfOpen);
    gate.add_permits(1);
    let mut refused = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => {}
            Err(BreakerError::Open(BreakerRefusal::ProbeInFlight)) => refused += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(refused, 49);
    assert_eq!(
        b.state(),
        BreakerState::Closed {
            consecutive_failures: 0
        }
    );
    assert_eq!(b.stats().probes, 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_opens_it_again_for_a_growing_period() {
    let b = CircuitBreaker::new(
        BreakerConfig::default()
            .with_threshold(1)
            .with_open_for(secs(10))
            .with_growth(2.0, secs(25)),
    );
    fail(&b).await.unwrap_err();
    for expected in [20, 25, 25] {
        tokio::time::advance(b.config().max_open_for).await;
        fail(&b).await.unwrap_err();
        assert_eq!(
            b.state(),
            BreakerState::Open {
                retry_after: secs(expected)
            }
        );
    }
    tokio::time::advance(secs(25)).await;
    succeed(&b).await.unwrap();
    assert_eq!(
        b.state(),
        BreakerState::Closed {
            consecutive_failures: 0
        }
    );
    // A later opening starts again from the base period.
    fail(&b).await.unwrap_err();
    assert_eq!(
        b.state(),
        BreakerState::Open {
            retry_after: secs(10)
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_probe_lets_the_next_caller_probe() {
    let b = breaker(1);
    fail(&b).await.unwrap_err();
    tokio::time::advance(secs(60)).await;
    let stuck = {
        let b = b.clone();
        tokio::spawn(async move {
            b.call(|_: &&str| true, std::future::pending::<Result<(), &str>>)
                .await
        })
    };
    tokio::task::yield_now().await;
    assert_eq!(b.state(), BreakerState::HalfOpen);
    stuck.abort();
    assert!(stuck.await.unwrap_err().is_cancelled());
    succeed(&b).await.unwrap();
    assert_eq!(
        b.state(),
        BreakerState::Closed {
            consecutive_failures: 0
        }
    );
}

#[tokio::test(start_paused = true)]
async fn isolate_and_reset() {
    let b = breaker(5);
    b.isolate();
    assert_eq!(
        succeed(&b).await,
        Err(BreakerError::Open(BreakerRefusal::Isolated))
    );
    assert_eq!(b.state(), BreakerState::Isolated);
    b.reset();
    succeed(&b).await.unwrap();
}

/// Runs an operation that always answers 503 behind `b`, counting its calls.
async fn run_503(
    policy: &RetryPolicy,
    b: &CircuitBreaker,
    calls: &AtomicUsize,
) -> RetryError<&'static str> {
    policy
        .run_with(
            Some(b),
            |_: &&str| RetryDecision::Retry,
            |_| {},
            || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Result::<(), _>::Err("503") }
            },
        )
        .await
        .unwrap_err()
}

#[tokio::test(start_paused = true)]
async fn retry_does_not_hammer_an_open_breaker() {
    let b = breaker(2);
    let calls = AtomicUsize::new(0);
    let start = tokio::time::Instant::now();
    let policy = RetryPolicy::default()
        .with_max_retries(5)
        .with_backoff(Backoff::default().with_jitter(Jitter::None));
    let err = run_503(&policy, &b, &calls).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "stops once the circuit opens"
    );
    assert_eq!(err.reason, StopReason::CircuitOpen);
    assert_eq!(
        err.failure,
        Failure::CircuitOpen(BreakerRefusal::Open {
            retry_after: secs(60)
        })
    );
    assert_eq!(start.elapsed(), secs(1), "no wait after the circuit opened");

    // A later run is refused before calling anything.
    let err = run_503(&policy, &b, &calls).await;
    assert_eq!((err.attempts, err.reason), (0, StopReason::CircuitOpen));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn timeouts_count_towards_opening() {
    let b = breaker(2);
    let policy = RetryPolicy::default()
        .with_max_retries(5)
        .with_attempt_timeout(secs(1))
        .with_backoff(Backoff::default().with_jitter(Jitter::None));
    let err = policy
        .run_with(
            Some(&b),
            |_: &()| RetryDecision::Retry,
            |_| {},
            std::future::pending::<Result<(), ()>>,
        )
        .await
        .unwrap_err();
    assert_eq!(err.reason, StopReason::CircuitOpen);
    assert!(matches!(b.state(), BreakerState::Open { .. }));
}

#[tokio::test(start_paused = true)]
async fn stop_errors_do_not_count_when_composed() {
    let b = breaker(1);
    let policy = RetryPolicy::default();
    for _ in 0..3 {
        let err = policy
            .run_with(
                Some(&b),
                |_: &&str| RetryDecision::Stop,
                |_| {},
                || async { Result::<(), _>::Err("403") },
            )
            .await
            .unwrap_err();
        assert_eq!(err.reason, StopReason::NotRetryable);
    }
    assert_eq!(
        b.state(),
        BreakerState::Closed {
            consecutive_failures: 0
        }
    );
}
