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
use mlflow_secrets_auth::{
    AuthMode, Env, ErrorKind, FetchedSecret, ProviderSettings, Result, SecretError, SecretProvider,
    SecretsAuth,
};

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

/// A backend answering `tok-N` on its N-th call, counted.
fn rotating() -> (impl SecretProvider + 'static, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let provider = provider_fn("rotating", move || {
        let call = counter.fetch_add(1, Ordering::SeqCst);
        async move { Ok(FetchedSecret::new(format!("tok-{call}").into())) }
    });
    (provider, calls)
}

#[tokio::test(start_paused = true)]
async fn a_refusal_passes_through_a_cache_of_the_provider_to_its_backend() {
    // A provider with a cache of its own (as the node agent has): a plain
    // fetch is served from that cache, a refetch reaches the backend.
    let (backend, calls) = rotating();
    let provider = backend
        .cached(CacheConfig::default().with_ttl(Duration::from_secs(300)))
        .with_retry(RetryPolicy::default())
        .with_breaker(BreakerConfig::default());
    assert_eq!(text(&provider.fetch().await), "tok-0");
    assert_eq!(text(&provider.fetch().await), "tok-0");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(text(&provider.refetch().await), "tok-1");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(text(&provider.fetch().await), "tok-1", "kept by the cache");

    // Through the facade: a refused value makes the chain refetch, so the
    // backend behind the provider's cache is asked and the new value used.
    let (backend, calls) = rotating();
    let auth = SecretsAuth::builder()
        .provider(
            backend.cached(CacheConfig::default().with_ttl(Duration::from_secs(300))),
            ProviderSettings {
                auth_mode: AuthMode::Bearer,
                ttl: Duration::from_secs(300),
            },
        )
        .build();
    let url = "https://mlflow.example.com/api";
    let first = auth.header_for(url).await.unwrap().unwrap();
    assert_eq!(first.value().expose_secret(), "Bearer tok-0");
    let fresh = auth
        .refused(first.value().expose_secret())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fresh.value().expose_secret(), "Bearer tok-1");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
