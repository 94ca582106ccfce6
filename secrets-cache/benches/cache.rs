//! Benchmarks of `SecretCache`: the fresh-hit path on one and two threads (one
//! key and distinct keys), and a cold burst of 1000 waiters.
//!
//! `cargo bench -p mlflow-secrets-auth-cache`

#![allow(clippy::print_stdout)]

use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mlflow_secrets_auth_cache::{CacheConfig, EntryMeta, SecretCache};

type Cache = SecretCache<String, String, String>;

fn cache() -> Cache {
    SecretCache::new(
        CacheConfig::default().with_ttl(Duration::from_secs(3600)),
        |_: &String| true,
    )
}

async fn value() -> Result<(String, EntryMeta), String> {
    Ok(("token-value".to_owned(), EntryMeta::default()))
}

/// One `get_or_fetch` on a fresh key, polled once: a hit completes without
/// awaiting, so no runtime is involved.
fn hit(cache: &Cache, key: &String) {
    let mut context = Context::from_waker(Waker::noop());
    let future = pin!(cache.get_or_fetch(key, value));
    match future.poll(&mut context) {
        Poll::Ready(Ok(lookup)) => {
            black_box(lookup.value);
        }
        _ => panic!("a fresh hit completes on the first poll"),
    }
}

fn warm(cache: &Cache, keys: &[String]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    for key in keys {
        runtime
            .block_on(cache.get_or_fetch(key, value))
            .expect("fetch");
    }
}

fn keys(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("vault:https://vault.example.com:8200::secret/mlflow/auth-{i}"))
        .collect()
}

fn fresh_hit(c: &mut Criterion) {
    let mut group = c.benchmark_group("fresh_hit");
    let cache = cache();
    let keys = keys(2);
    warm(&cache, &keys);

    group.throughput(Throughput::Elements(1));
    group.bench_function("1_thread", |b| b.iter(|| hit(&cache, &keys[0])));

    // Two threads, each doing `iters` hits: with no shared lock on the hit path
    // the time per iteration stays close to one thread's, so throughput doubles.
    group.throughput(Throughput::Elements(2));
    for (name, distinct) in [
        ("2_threads_same_key", false),
        ("2_threads_distinct_keys", true),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                std::thread::scope(|s| {
                    for t in 0..2 {
                        let key = &keys[if distinct { t } else { 0 }];
                        let cache = &cache;
                        s.spawn(move || {
                            for _ in 0..iters {
                                hit(cache, key);
                            }
                        });
                    }
                });
                start.elapsed()
            });
        });
    }
    group.finish();
}

fn cold_burst(c: &mut Criterion) {
    let mut group = c.benchmark_group("cold_burst");
    group.sample_size(20);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    let cache = cache();
    let key = keys(1).remove(0);
    let fetches = Arc::new(AtomicUsize::new(0));
    let rounds = Arc::new(AtomicUsize::new(0));
    group.bench_function("1000_waiters", |b| {
        b.iter(|| {
            cache.invalidate(&key);
            rounds.fetch_add(1, Ordering::Relaxed);
            runtime.block_on(async {
                let tasks: Vec<_> = (0..1000)
                    .map(|_| {
                        let cache = cache.clone();
                        let key = key.clone();
                        let fetches = fetches.clone();
                        tokio::spawn(async move {
                            cache
                                .get_or_fetch(&key, move || async move {
                                    fetches.fetch_add(1, Ordering::Relaxed);
                                    // A backend answers after a network round trip.
                                    tokio::task::yield_now().await;
                                    value().await
                                })
                                .await
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.expect("task").expect("value");
                }
            });
        });
    });
    group.finish();
    let (fetches, rounds) = (
        fetches.load(Ordering::Relaxed),
        rounds.load(Ordering::Relaxed),
    );
    println!(
        "cold_burst/1000_waiters: {fetches} backend fetches in {rounds} rounds ({:.3} per round)",
        fetches as f64 / rounds as f64
    );
}

criterion_group!(benches, fresh_hit, cold_burst);
criterion_main!(benches);
