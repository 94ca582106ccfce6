//! The layers composed by hand: retry, breaker and cache around a provider
//! made of an async function (so each failure is scripted exactly) and
//! around the real file provider. Backoff waits run on tokio's paused clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mlflow_secrets_auth::layers::{
    BreakerConfig, CacheConfig, ProviderExt, RetryPolicy, provider_fn,
};
use mlflow_secrets_auth::providers::file::FileProvider;
use mlflow_secrets_auth::secrecy::ExposeSecret;
use mlflow_secrets_auth::{Env, ErrorKind, FetchedSecret, Result, SecretError, SecretProvider};

/// A provider that fails with `failures[i]` on call `i`, then answers "tok".
fn scripted(failures: Vec<ErrorKind>) -> (impl SecretProvider + 'static, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let failures = Arc::new(failures);
    let provider = provider_fn("scripted", move || {
        let (counter, failures) = (Arc::clone(&counter), Arc::clone(&failures));
        async move {
            let call = counter.fetch_add(1, Ordering::SeqCst);
            match failures.get(call) {
                Some(kind) => Err(SecretError::new(*kind, format!("scripted failure {call}"))),
                None => Ok(FetchedSecret::new("tok".into())),
            }
        }
    });
    (provider, calls)
}

fn text(fetched: &Result<FetchedSecret>) -> &str {
    fetched.as_ref().unwrap().text.expose_secret()
}

#[tokio::test(start_paused = true)]
async fn retry_retries_transient_failures_and_stops_on_others() {
    let (provider, calls) = scripted(vec![ErrorKind::Transient, ErrorKind::Timeout]);
    let retried = provider.with_retry(RetryPolicy::default());
    assert_eq!(text(&retried.fetch().await), "tok");
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    let (provider, calls) = scripted(vec![ErrorKind::NotFound]);
    let error = provider
        .with_retry(RetryPolicy::default())
        .fetch()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::NotFound);
    assert_eq!(error.provider(), Some("scripted"), "{error}");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "not retried");
}

#[tokio::test(start_paused = true)]
async fn a_breaker_refuses_without_calling_once_open() {
    let (provider, calls) = scripted(vec![ErrorKind::Transient; 10]);
    let guarded = provider.with_breaker(BreakerConfig::default().with_threshold(2));
    for _ in 0..2 {
        assert_eq!(
            guarded.fetch().await.unwrap_err().kind(),
            ErrorKind::Transient
        );
    }
    let refused = guarded.fetch().await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::CircuitOpen);
    assert!(refused.retry_after().is_some());
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the refused fetch made no call"
    );
}

#[tokio::test(start_paused = true)]
async fn retrying_behind_a_breaker_stops_when_the_circuit_opens() {
    let (provider, calls) = scripted(vec![ErrorKind::Transient; 10]);
    let guarded = provider
        .with_retry(RetryPolicy::default().with_max_retries(5))
        .with_breaker(BreakerConfig::default().with_threshold(2));
    let error = guarded.fetch().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::CircuitOpen, "{error}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert!(guarded.breaker().is_some());
}

#[tokio::test(start_paused = true)]
async fn the_cache_shares_one_fetch_and_refetches_after_invalidate() {
    let (provider, calls) = scripted(vec![ErrorKind::Transient]);
    let cached = Arc::new(
        provider
            .with_retry(RetryPolicy::default())
            .cached(CacheConfig::default().with_ttl(Duration::from_secs(300))),
    );
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let cached = Arc::clone(&cached);
            tokio::spawn(async move { cached.fetch().await })
        })
        .collect();
    for task in tasks {
        assert_eq!(text(&task.await.unwrap()), "tok");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "one fetch: a failure, a retry"
    );
    cached.invalidate();
    assert_eq!(text(&cached.fetch().await), "tok");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(cached.stats().fetches, 2);
}

#[tokio::test]
async fn layers_wrap_a_real_provider() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, r#"{"token": "first"}"#).unwrap();
    let file = path.display().to_string();
    let vars = [("MLFLOW_SECRETS_FILE_PATH", file.as_str())];
    let provider = FileProvider::from_env(&Env::new(&vars))
        .unwrap()
        .with_retry(RetryPolicy::default())
        .cached(CacheConfig::default());
    assert_eq!(provider.name(), "file");
    assert!(provider.describe().to_string().contains("token"));
    let first = provider.fetch().await.unwrap().credential().unwrap();
    std::fs::write(&path, r#"{"token": "second"}"#).unwrap();
    let cached = provider.fetch().await.unwrap().credential().unwrap();
    assert_eq!(
        format!("{first:?}"),
        format!("{cached:?}"),
        "from the cache"
    );
    provider.invalidate();
    let fetched = provider.fetch().await;
    assert!(text(&fetched).contains("second"));
}
