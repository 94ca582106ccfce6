//! Overhead of the resilience layer on the path where nothing fails: a closed
//! breaker around a call, and `RetryPolicy::run` for a first-try success.
//! Futures are polled once with a no-op waker, so no executor time is counted.
//!
//! `cargo bench -p mlflow-secrets-auth-retry`

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use mlflow_secrets_auth_retry::{BreakerConfig, CircuitBreaker, RetryDecision, RetryPolicy};

fn poll_once<F: Future>(future: F) -> F::Output {
    let mut context = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut context) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the benchmarked path completes on the first poll"),
    }
}

async fn op() -> Result<u64, u16> {
    Ok(black_box(7))
}

fn classify(e: &u16) -> RetryDecision {
    if *e >= 500 {
        RetryDecision::Retry
    } else {
        RetryDecision::Stop
    }
}

fn breaker(c: &mut Criterion) {
    let mut group = c.benchmark_group("breaker_closed");
    let breaker = CircuitBreaker::new(BreakerConfig::default());
    group.bench_function("bare_op", |b| b.iter(|| poll_once(op())));
    group.bench_function("permit_success", |b| {
        b.iter(|| {
            let permit = breaker.try_acquire().expect("closed");
            permit.success();
        })
    });
    group.bench_function("call", |b| {
        b.iter(|| poll_once(breaker.call(|_: &u16| true, op)))
    });
    group.finish();
}

fn retry(c: &mut Criterion) {
    let mut group = c.benchmark_group("retry_first_try_success");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _context = runtime.enter();
    let plain = RetryPolicy::default();
    let bounded = RetryPolicy::default()
        .with_attempt_timeout(Duration::from_secs(10))
        .with_deadline(Duration::from_secs(60));
    let breaker = CircuitBreaker::new(BreakerConfig::default());
    group.bench_function("run", |b| b.iter(|| poll_once(plain.run(classify, op))));
    group.bench_function("run_timeout_deadline", |b| {
        b.iter(|| poll_once(bounded.run(classify, op)))
    });
    group.bench_function("run_timeout_deadline_breaker", |b| {
        b.iter(|| poll_once(bounded.run_with(Some(&breaker), classify, |_| {}, op)))
    });
    group.finish();
}

criterion_group!(benches, breaker, retry);
criterion_main!(benches);
