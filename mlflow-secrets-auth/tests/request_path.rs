//! `SecretsAuth` end to end against real backends (moto, OpenBao, files):
//! the allowlist before any fetch, single flight at the backend, stale
//! credentials during an outage, bounded time against a hanging backend, the
//! breaker, failover between providers,

use std::sync::Arc;
use std::time::{Duration, Instant};

use mlflow_secrets_auth::{
    ErrorKind, FileProvider, SecretsAuth, secrecy::ExposeSecret, worst_case_fetch_time,
};
use mlflow_secrets_auth_aws::AwsSecretsManagerProvider;
use mlflow_secrets_auth_cache::ManualClock;
use secrets_testkit::moto::{ACCESS_KEY, REGION, SECRET_KEY};
use secrets_testkit::net::Blackhole;
use secrets_testkit::or_hang;

#[allow(dead_code)]
mod common;
use common::{URL, backend, config, settings};

const TOKEN: &str = "tok-request-path-5f2a9c";

fn value_of(header: &mlflow_secrets_auth::AuthHeader) -> String {
    header.value().expose_secret().to_owned()
}

#[tokio::test]
async fn disallowed_hosts_get_nothing_and_cause_no_fetch() {
    let Some(backend) = backend("disallowed", "mlflow/token", TOKEN) else {
        return;
    };
    let auth = SecretsAuth::builder()
        .config(config())
        .provider(backend.provider("mlflow/token"), settings(300))
        .build();
    for url in [
        "https://evil.example.com/",
        "https://mlflow.example.com@evil.example.com/",
        "https://mlflow.example.com.evil.example.com/",
        "not a url",
    ] {
        assert!(auth.header_for(url).await.unwrap().is_none(), "{url}");
    }
    assert_eq!(backend.proxy.forwarded(), 0, "nothing was fetched");
    let header = auth.header_for(URL).await.unwrap().unwrap();
    assert_eq!(value_of(&header), format!("Bearer {TOKEN}"));
    assert_eq!(backend.proxy.forwarded(), 1);
}

#[tokio::test]
async fn the_answer_without_waiting_covers_only_judged_origins_and_fresh_credentials() {
    let Some(backend) = backend("cached", "mlflow/token", TOKEN) else {
        return;
    };
    let (auth, clock) = warmed(&backend).await;
    let evil = "https://evil.example.com/x";
    // Not judged yet: the caller must take the full path, which judges.
    assert!(auth.header_for_cached(URL).is_none());
    assert!(auth.header_for_cached(evil).is_none());
    auth.header_for(URL).await.unwrap().unwrap();
    assert!(auth.header_for(evil).await.unwrap().is_none());
    let header = auth.header_for_cached(URL).unwrap().unwrap();
    assert_eq!(value_of(&header), format!("Bearer {TOKEN}"));
    assert!(
        auth.header_for_cached(evil).unwrap().is_none(),
        "judged: refused"
    );
    // Anything but a plain origin is never answered here.
    for tricky in [
        "https://mlflow.example.com@evil.example.com/",
        "https://MLFLOW.example.com/",
        "https://mlflow.example.com%2eevil.example.com/",
    ] {
        assert!(auth.header_for_cached(tricky).is_none(), "{tricky}");
    }
    // Due for refresh, expired or invalidated: the full path decides.
    clock.advance(Duration::from_secs(59));
    assert!(auth.header_for_cached(URL).is_none());
    auth.invalidate();
    assert!(auth.header_for_cached(URL).is_none());
    assert_eq!(backend.proxy.forwarded(), 1, "nothing fetched here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_cold_callers_cause_one_backend_fetch() {
    let Some(backend) = backend("single_flight", "mlflow/token", TOKEN) else {
        return;
    };
    let auth = SecretsAuth::builder()
        .config(config())
        .provider(backend.provider("mlflow/token"), settings(300))
        .build();
    all_get_the_token(&auth, 500).await;
    assert_eq!(
        backend.proxy.forwarded(),
        1,
        "one GetSecretValue for 500 callers"
    );
    let stats = auth.stats();
    assert_eq!(stats.hits + stats.misses, 500);
    assert_eq!(stats.fetches, 1);
}

#[tokio::test]
async fn during_an_outage_the_stale_credential_is_served_fast() {
    let Some(backend) = backend("outage", "mlflow/token", TOKEN) else {
        return;
    };
    let (auth, clock) = warmed(&backend).await;
    backend.go_down();
    clock.advance(Duration::from_secs(61));
    // The first call past expiry starts a fetch and gets the stale value
    // (at once, or when the fetch fails); the fetch ends in the background.
    let header = auth.header_for(URL).await.unwrap().unwrap();
    assert_eq!(value_of(&header), format!("Bearer {TOKEN}"));
    eventually(|| backend.proxy.answered() == 2).await; // 1 retry: two attempts
    let tried = backend.proxy.answered();
    assert!(tried >= 1);
    // Later calls get the stale credential without the network: no request
    // reaches the backend (how fast that is, the benches measure).
    for _ in 0..100 {
        let header = auth.header_for(URL).await.unwrap().unwrap();
        assert_eq!(value_of(&header), format!("Bearer {TOKEN}"));
    }
    assert_eq!(backend.proxy.answered(), tried);
    assert!(auth.stats().stale_served >= 101);
    drop(backend.moto);
}

#[tokio::test]
async fn after_expiry_a_hanging_backend_does_not_hold_up_callers_with_a_stale_value() {
    let Some(backend) = backend("stale_hang", "mlflow/token", TOKEN) else {
        return;
    };
    // The refetch hangs for as long as the test runs (10 minutes' timeout).
    let clock = Arc::new(ManualClock::new());
    let mut patient = config();
    patient.request_timeout = Duration::from_secs(600);
    patient.fetch_deadline = Duration::from_secs(1200);
    let auth = SecretsAuth::builder()
        .config(patient)
        .provider(
            backend.provider_timing_out_after("mlflow/token", Duration::from_secs(600)),
            settings(60),
        )
        .clock(clock.clone())
        .build();
    auth.warm().await.unwrap();
    backend
        .proxy
        .inject(secrets_testkit::fault::Fault::hang("/"));
    clock.advance(Duration::from_secs(61));
    or_hang("20 callers", all_get_the_token(&auth, 20)).await;
    // Every caller has its answer while the one refetch still hangs: nobody
    // waited for the backend.
    let stats = auth.stats();
    assert_eq!(stats.stale_served, 20);
    assert_eq!(
        (stats.failures, stats.refresh_failures),
        (0, 0),
        "the refetch has not ended: {stats:?}"
    );
    // The background fetch reaches the backend on its own time: wait for it
    // rather than race it, then check it was the only one.
    eventually(|| backend.proxy.answered() >= 1).await;
    assert_eq!(
        backend.proxy.answered(),
        1,
        "one fetch goes on in the background"
    );
}

#[tokio::test]
async fn a_hanging_backend_gives_up_within_the_bound() {
    let hole = Blackhole::start();
    let mut config = config();
    config.cache_disabled = true;
    config.request_timeout = Duration::from_millis(300);
    let provider = AwsSecretsManagerProvider::builder()
        .secret_id("any")
        .region(REGION)
        .endpoint_url(hole.url())
        .static_credentials(ACCESS_KEY, SECRET_KEY)
        .request_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let bound = worst_case_fetch_time(&config);
    // The bound is made of attempts of at most the request timeout each:
    // the fetch gives up by itself, after the attempts the bound counts and
    // never before the first one's timeout.
    let attempts = 1 + usize::try_from(config.max_retries).unwrap();
    let auth = SecretsAuth::builder()
        .config(config)
        .provider(provider, settings(60))
        .build();
    assert!(bound >= Duration::from_millis(300) * u32::try_from(attempts).unwrap());
    let start = Instant::now();
    let err = or_hang("a fetch from a silent backend", auth.header_for(URL))
        .await
        .unwrap_err();
    let took = start.elapsed();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(took >= Duration::from_millis(300), "{took:?}");
    eventually(|| hole.accepted() >= attempts).await;
    assert_eq!(hole.accepted(), attempts, "one connection per attempt");
}

#[tokio::test]
async fn an_open_breaker_fails_fast_then_lets_one_probe_through() {
    let Some(backend) = backend("breaker", "mlflow/token", TOKEN) else {
        return;
    };
    let mut config = config();
    config.cache_disabled = true;
    config.max_retries = 0;
    config.breaker_threshold = 3;
    config.breaker_open_for = Duration::from_millis(300);
    let auth = SecretsAuth::builder()
        .config(config)
        .provider(backend.provider("mlflow/token"), settings(60))
        .build();
    backend.go_down();
    for _ in 0..3 {
        assert_eq!(
            auth.header_for(URL).await.unwrap_err().kind(),
            ErrorKind::Transient
        );
    }
    let before = backend.proxy.answered();
    let mut err = None;
    for _ in 0..20 {
        err = Some(auth.header_for(URL).await.unwrap_err());
    }
    let err = err.unwrap();
    assert_eq!(err.kind(), ErrorKind::CircuitOpen, "{err}");
    assert!(err.retry_after().is_some());
    assert_eq!(backend.proxy.answered(), before, "no network while open");

    backend.proxy.clear();
    tokio::time::sleep(Duration::from_millis(350)).await;
    let header = auth.header_for(URL).await.unwrap().unwrap();
    assert_eq!(value_of(&header), format!("Bearer {TOKEN}"));
    assert_eq!(backend.proxy.forwarded(), 1, "exactly one probe");
}

#[tokio::test]
async fn a_failing_primary_fails_over_and_serves_again_once_back() {
    let Some(backend) = backend("failover", "mlflow/token", TOKEN) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fallback");
    std::fs::write(&file, "tok-from-file-77").unwrap();
    let mut config = config();
    config.ttl_min = Duration::ZERO;
    config.max_retries = 0;
    config.breaker_threshold = 1;
    config.breaker_open_for = Duration::from_millis(200);
    let clock = Arc::new(ManualClock::new());
    let auth = SecretsAuth::builder()
        .config(config)
        .provider(backend.provider("mlflow/token"), settings(10))
        .provider(FileProvider::new(&file), settings(10))
        .clock(clock.clone())
        .build();

    backend.go_down();
    let header = auth.header_for(URL).await.unwrap().unwrap();
    assert_eq!(value_of(&header), "Bearer tok-from-file-77");
    let status = auth.status();
    assert_eq!(status[0].last_error, Some(ErrorKind::Transient));
    assert!(matches!(
        status[0].circuit,
        Some(mlflow_secrets_auth::BreakerState::Open { .. })
    ));

    backend.proxy.clear();
    tokio::time::sleep(Duration::from_millis(250)).await;
    clock.advance(Duration::from_secs(11));
    // The expired value may be served while the primary is fetched again.
    let primary = format!("Bearer {TOKEN}");
    let mut served = Vec::new();
    for _ in 0..1000 {
        served.push(value_of(&auth.header_for(URL).await.unwrap().unwrap()));
        if served.last() == Some(&primary) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(served.last(), Some(&primary), "the primary serves again");
    assert!(
        served
            .iter()
            .all(|v| *v == primary || v == "Bearer tok-from-file-77"),
        "{served:?}"
    );
}

/// `n` concurrent tasks ask for the header; each gets TOKEN.
async fn all_get_the_token(auth: &SecretsAuth, n: usize) {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let auth = auth.clone();
            tokio::spawn(async move { auth.header_for(URL).await })
        })
        .collect();
    for task in tasks {
        let header = task.await.unwrap().unwrap().unwrap();
        assert_eq!(value_of(&header), format!("Bearer {TOKEN}"));
    }
}

/// A credential from `backend` (TTL 60 s) on a manual clock, fetched once.
async fn warmed(backend: &common::Backend) -> (SecretsAuth, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    let auth = SecretsAuth::builder()
        .config(config())
        .provider(backend.provider("mlflow/token"), settings(60))
        .clock(clock.clone())
        .build();
    auth.warm().await.unwrap();
    (auth, clock)
}

/// Waits (up to 10 s, polling) until `done` holds: for effects of a fetch
/// that goes on in the background. Not a timing assertion.
async fn eventually(mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the condition never held");
}

#[tokio::test]
async fn not_found_is_reported_not_failed_over() {
    let Some(backend) = backend("no_failover", "mlflow/token", TOKEN) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fallback");
    std::fs::write(&file, "tok-from-file").unwrap();
    let auth = SecretsAuth::builder()
        .config(config())
        .provider(backend.provider("mlflow/missing"), settings(60))
        .provider(FileProvider::new(&file), settings(60))
        .build();
    let err = auth.header_for(URL).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert_eq!(err.provider(), Some("aws-secrets-manager"));
}

#[tokio::test]
async fn a_refused_credential_is_fetched_again_once_per_refetch_interval() {
    let Some(backend) = backend("refetch_interval", "mlflow/token", TOKEN) else {
        return;
    };
    // Warm, on a manual clock; the refetch interval is the default 30 s.
    let (auth, clock) = warmed(&backend).await;
    let refused = format!("Bearer {TOKEN}");
    // Counted at the proxy in front of the backend, not by the library.
    let before = backend.proxy.forwarded();
    // The backend hands back the same value: authorization, not staleness.
    assert!(auth.refused(&refused).await.unwrap().is_none());
    assert_eq!(backend.proxy.forwarded(), before + 1, "one refetch");
    for _ in 0..5 {
        assert!(auth.refused(&refused).await.unwrap().is_none());
    }
    assert_eq!(
        backend.proxy.forwarded(),
        before + 1,
        "no refetch within the interval"
    );
    // Once the interval has passed, the same refusal may fetch again.
    clock.advance(Duration::from_secs(31));
    assert!(auth.refused(&refused).await.unwrap().is_none());
    assert_eq!(
        backend.proxy.forwarded(),
        before + 2,
        "the interval re-allows one refetch"
    );
}
