//! Behaviour of `SecretCache` on an injected clock: single flight, refresh
//! ahead, stale if error, lifetimes, eviction, and robustness against
//! cancelled and panicking fetches. No test sleeps.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use mlflow_secrets_auth_cache::{
    CacheConfig, EntryMeta, EntryState, Lookup, ManualClock, Outcome, SecretCache, StaleGrace,
};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, PartialEq)]
struct TestError {
    transient: bool,
}

const TRANSIENT: TestError = TestError { transient: true };
const PERMANENT: TestError = TestError { transient: false };

type Cache = SecretCache<String, String, TestError>;

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// TTL 100 s, no jitter, refresh ahead at 80 %, stale grace 30 s.
fn config() -> CacheConfig {
    CacheConfig::default()
        .with_ttl(secs(100))
        .with_jitter(0.0)
        .with_stale_grace(StaleGrace::For(secs(30)))
}

fn cache_with(config: CacheConfig) -> (Cache, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    let cache = SecretCache::with_clock(config, |e: &TestError| e.transient, clock.clone());
    (cache, clock)
}

fn key(k: &str) -> String {
    k.to_owned()
}

type Fetch = std::pin::Pin<Box<dyn Future<Output = Result<(String, EntryMeta), TestError>> + Send>>;

/// Counts calls and returns `value` (after waiting on `gate`, if given).
#[derive(Clone, Default)]
struct Backend {
    calls: Arc<AtomicUsize>,
    gate: Option<Arc<Semaphore>>,
}

impl Backend {
    fn gated() -> (Self, Arc<Semaphore>) {
        let gate = Arc::new(Semaphore::new(0));
        let backend = Self {
            calls: Arc::default(),
            gate: Some(gate.clone()),
        };
        (backend, gate)
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn answer(&self, result: Result<&str, TestError>) -> impl FnOnce() -> Fetch + Send + 'static {
        self.answer_with(result.map(|v| (v.to_owned(), EntryMeta::default())))
    }

    fn answer_with(
        &self,
        result: Result<(String, EntryMeta), TestError>,
    ) -> impl FnOnce() -> Fetch + Send + 'static {
        let backend = self.clone();
        move || {
            Box::pin(async move {
                backend.calls.fetch_add(1, Ordering::SeqCst);
                if let Some(gate) = &backend.gate {
                    gate.acquire().await.expect("gate open").forget();
                }
                result
            })
        }
    }
}

/// One `get_or_fetch` of key `k` answered by `backend` with `answer`.
async fn ask(
    cache: &Cache,
    backend: &Backend,
    k: &str,
    answer: Result<&str, TestError>,
) -> Result<Lookup<String, TestError>, TestError> {
    cache.get_or_fetch(&key(k), backend.answer(answer)).await
}

/// Spawns `n` tasks asking for key `k`, answered by `backend` with `answer`.
fn spawn_asks(
    cache: &Cache,
    backend: &Backend,
    n: usize,
    answer: Result<&'static str, TestError>,
) -> Vec<JoinHandle<Result<Lookup<String, TestError>, TestError>>> {
    (0..n)
        .map(|_| {
            let cache = cache.clone();
            let fetch = backend.answer(answer.clone());
            tokio::spawn(async move { cache.get_or_fetch(&key("k"), fetch).await })
        })
        .collect()
}

/// Lets spawned tasks run until they are all parked.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn thousand_concurrent_callers_cause_one_fetch() {
    let (cache, _clock) = cache_with(config());
    for round in 0..2 {
        let (backend, gate) = Backend::gated();
        let tasks = spawn_asks(&cache, &backend, 1000, Ok("v"));
        settle().await;
        gate.add_permits(Semaphore::MAX_PERMITS);
        for task in tasks {
            assert_eq!(*task.await.unwrap().unwrap().value, "v");
        }
        assert_eq!(backend.calls(), 1, "round {round}");
        cache.invalidate(&key("k"));
    }
    let stats = cache.stats();
    assert_eq!(stats.fetches, 2);
    assert_eq!(stats.coalesced, 2 * 999);
    assert_eq!(stats.misses, 2000);
}

#[tokio::test]
async fn refresh_ahead_serves_the_old_value_and_refreshes_once() {
    let (cache, clock) = cache_with(config());
    let backend = Backend::default();
    ask(&cache, &backend, "k", Ok("v1")).await.unwrap();

    clock.advance(secs(81));
    let (refresher, gate) = Backend::gated();
    for _ in 0..50 {
        let hit = ask(&cache, &refresher, "k", Ok("v2")).await.unwrap();
        assert_eq!((hit.value.as_str(), hit.outcome), ("v1", Outcome::Hit));
    }
    settle().await;
    assert_eq!(refresher.calls(), 1, "exactly one background refresh");
    assert_eq!(cache.entries()[0].state, EntryState::Refreshing);

    gate.add_permits(1);
    settle().await;
    let hit = ask(&cache, &backend, "k", Ok("unused")).await.unwrap();
    assert_eq!((hit.value.as_str(), hit.outcome), ("v2", Outcome::Hit));
    assert_eq!(cache.stats().refreshes, 1);
    assert_eq!(backend.calls(), 1);
}

#[tokio::test]
async fn fresh_answers_only_what_needs_no_fetch() {
    let (cache, clock) = cache_with(config());
    assert_eq!(cache.fresh(&key("k")), None, "empty");
    let backend = Backend::default();
    ask(&cache, &backend, "k", Ok("v1")).await.unwrap();
    assert_eq!(cache.fresh(&key("k")).as_deref(), Some(&"v1".to_owned()));
    assert_eq!(cache.stats().hits, 1, "counted as a hit");

    // Past the refresh-ahead point: left to get_or_fetch, which starts it.
    clock.advance(secs(81));
    assert_eq!(cache.fresh(&key("k")), None);
    assert_eq!(cache.stats().hits, 1, "not a hit");
    let (refresher, gate) = Backend::gated();
    ask(&cache, &refresher, "k", Ok("v2")).await.unwrap();
    settle().await;
    // A refresh runs: the current value is fresh until it lands.
    assert_eq!(cache.fresh(&key("k")).as_deref(), Some(&"v1".to_owned()));
    gate.add_permits(1);
    settle().await;
    assert_eq!(cache.fresh(&key("k")).as_deref(), Some(&"v2".to_owned()));
    assert_eq!(refresher.calls(), 1);

    cache.expire(&key("k"));
    assert_eq!(cache.fresh(&key("k")), None, "expired");
    let (disabled, _clock) = cache_with(config().with_enabled(false));
    ask(&disabled, &backend, "k", Ok("v3")).await.unwrap();
    assert_eq!(disabled.fresh(&key("k")), None, "disabled");
}

#[tokio::test]
async fn failed_refresh_keeps_the_entry_until_expiry() {
    let (cache, clock) = cache_with(config());
    let backend = Backend::default();
    ask(&cache, &backend, "k", Ok("v1")).await.unwrap();
    clock.advance(secs(90));
    let hit = ask(&cache, &backend, "k", Err(TRANSIENT)).await.unwrap();
    assert_eq!(*hit.value, "v1");
    settle().await;
    let stats = cache.stats();
    assert_eq!((stats.refreshes, stats.refresh_failures), (1, 1));
    let hit = ask(&cache, &backend, "k", Ok("never")).await.unwrap();
    assert_eq!((hit.value.as_str(), hit.outcome), ("v1", Outcome::Hit));
}

#[tokio::test]
async fn stale_value_served_on_transient_error_within_grace_only() {
    let (cache, clock) = cache_with(config().with_refresh_ahead(1.0));
    let backend = Backend::default();
    ask(&cache, &backend, "k", Ok("v1")).await.unwrap();

    clock.advance(secs(110));
    let stale = ask(&cache, &backend, "k", Err(TRANSIENT)).await.unwrap();
    assert_eq!(*stale.value, "v1");
    assert_eq!(
        stale.outcome,
        Outcome::Stale {
            error: TRANSIENT,
            expired_for: secs(10)
        }
    );
    assert_eq!(cache.stats().stale_served, 1);
    assert_eq!(cache.entries()[0].state, EntryState::Stale);

    clock.advance(secs(21));
    let err = ask(&cache, &backend, "k", Err(TRANSIENT))
        .await
        .unwrap_err();
    assert_eq!(err, TRANSIENT);
}

#[tokio::test]
async fn permanent_error_never_serves_stale() {
    let (cache, clock) = cache_with(config().with_refresh_ahead(1.0));
    let backend = Backend::default();
    ask(&cache, &backend, "k", Ok("v1")).await.unwrap();
    clock.advance(secs(101));
    let err = ask(&cache, &backend, "k", Err(PERMANENT))
        .await
        .unwrap_err();
    assert_eq!(err, PERMANENT);
    assert_eq!(cache.stats().stale_served, 0);
}

#[tokio::test]
async fn no_stale_when_grace_is_never() {
    let (cache, clock) = cache_with(config().with_stale_grace(StaleGrace::Never));
    let backend = Backend::default();
    ask(&cache, &backend, "k", Ok("v1")).await.unwrap();
    clock.advance(secs(101));
    assert!(ask(&cache, &backend, "k", Err(TRANSIENT)).await.is_err());
}

#[tokio::test]
async fn backend_expiry_shorter_than_ttl_wins_and_is_never_served_stale() {
    let (cache, clock) = cache_with(config());
    let backend = Backend::default();
    let meta = EntryMeta::default().with_valid_for(secs(10));
    cache
        .get_or_fetch(&key("k"), backend.answer_with(Ok(("v1".into(), meta))))
        .await
        .unwrap();
    assert_eq!(cache.entries()[0].remaining, secs(10));
    clock.advance(secs(11));
    let err = ask(&cache, &backend, "k", Err(TRANSIENT)).await;
    assert!(
        err.is_err(),
        "a value past its backend expiry is never served"
    );
    let fresh = ask(&cache, &backend, "k", Ok("v2")).await.unwrap();
    assert_eq!(
        (fresh.value.as_str(), fresh.outcome),
        ("v2", Outcome::Fetched)
    );
}

#[tokio::test]
async fn a_stale_answer_never_outlives_the_backend_expiry_beyond_the_ttl() {
    // TTL 100 s, grace 30 s, the backend says 115 s: stale until 115, not 130.
    let (cache, clock) = cache_with(config());
    let backend = Backend::default();
    let meta = EntryMeta::default().with_valid_for(secs(115));
    cache
        .get_or_fetch(&key("k"), backend.answer_with(Ok(("v1".into(), meta))))
        .await
        .unwrap();
    clock.advance(secs(110));
    let stale = ask(&cache, &backend, "k", Err(TRANSIENT)).await.unwrap();
    assert_eq!(stale.value.as_str(), "v1", "within the backend's validity");
    clock.advance(secs(6));
    assert!(
        ask(&cache, &backend, "k", Err(TRANSIENT)).await.is_err(),
        "a value past its backend expiry is never served, stale or not"
    );
}

#[tokio::test]
async fn ttl_from_fetch_is_clamped() {
    let (cache, _clock) = cache_with(config());
    let backend = Backend::default();
    for (k, ttl, want) in [("low", 1, 60), ("mid", 200, 200), ("high", 99_999, 3600)] {
        let meta = EntryMeta::default().with_ttl(secs(ttl));
        cache
            .get_or_fetch(&key(k), backend.answer_with(Ok(("v".into(), meta))))
            .await
            .unwrap();
        let info = cache.entries().into_iter().find(|e| e.key == k).unwrap();
        assert_eq!(info.remaining, secs(want), "{k}");
    }
}

#[tokio::test]
async fn jitter_stays_within_bounds() {
    let (cache, _clock) = cache_with(config().with_jitter(0.1).with_capacity(2000));
    let backend = Backend::default();
    for i in 0..1000 {
        cache
            .get_or_fetch(&format!("k{i}"), backend.answer(Ok("v")))
            .await
            .unwrap();
    }
    let remaining: Vec<Duration> = cache.entries().into_iter().map(|e| e.remaining).collect();
    assert_eq!(remaining.len(), 1000);
    assert!(remaining.iter().all(|r| *r >= secs(90) && *r <= secs(100)));
    let distinct: std::collections::HashSet<_> = remaining.iter().collect();
    assert!(
        distinct.len() > 900,
        "jitter spreads expiries: {}",
        distinct.len()
    );
}

#[tokio::test]
async fn errors_are_not_cached() {
    let (cache, _clock) = cache_with(config());
    let backend = Backend::default();
    let err = ask(&cache, &backend, "k", Err(PERMANENT)).await;
    assert_eq!(err.unwrap_err(), PERMANENT);
    assert!(cache.is_empty());
    let ok = ask(&cache, &backend, "k", Ok("v")).await.unwrap();
    assert_eq!((ok.value.as_str(), ok.outcome), ("v", Outcome::Fetched));
    assert_eq!(cache.stats().failures, 1);
}

#[tokio::test]
async fn an_error_reaches_every_waiter() {
    let (cache, _clock) = cache_with(config());
    let (backend, gate) = Backend::gated();
    let tasks = spawn_asks(&cache, &backend, 20, Err(PERMANENT));
    settle().await;
    gate.add_permits(Semaphore::MAX_PERMITS);
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap_err(), PERMANENT);
    }
    assert_eq!(backend.calls(), 1);
}

#[tokio::test]
async fn a_cancelled_caller_cancels_nothing_the_fetch_completes_for_everyone() {
    let (cache, _clock) = cache_with(config());
    let (slow, gate) = Backend::gated();
    let leader = spawn_asks(&cache, &slow, 1, Ok("v")).remove(0);
    settle().await;
    let other = Backend::default();
    let waiter = spawn_asks(&cache, &other, 1, Ok("never")).remove(0);
    settle().await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    gate.add_permits(1);
    let got = waiter.await.unwrap().unwrap();
    assert_eq!((got.value.as_str(), got.outcome), ("v", Outcome::Coalesced));
    assert_eq!(
        (slow.calls(), other.calls()),
        (1, 0),
        "one fetch, never restarted"
    );
    let again = ask(&cache, &other, "k", Ok("never")).await.unwrap();
    assert_eq!(again.outcome, Outcome::Hit);
}

#[tokio::test(start_paused = true)]
async fn callers_with_timeouts_shorter_than_the_backend_still_end_with_one_cached_fetch() {
    let (cache, _clock) = cache_with(config());
    let calls = Arc::new(AtomicUsize::new(0));
    let slow = |calls: Arc<AtomicUsize>| {
        move || async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(secs(2)).await; // the backend takes 2 s
            Ok::<_, TestError>(("v".to_owned(), EntryMeta::default()))
        }
    };
    let k = key("k");
    for _ in 0..3 {
        // Each caller gives up after 500 ms, before the backend answers.
        let call = cache.get_or_fetch(&k, slow(calls.clone()));
        assert!(
            tokio::time::timeout(Duration::from_millis(500), call)
                .await
                .is_err()
        );
    }
    tokio::time::sleep(secs(1)).await;
    let got = cache
        .get_or_fetch(&key("k"), slow(calls.clone()))
        .await
        .unwrap();
    assert_eq!((got.value.as_str(), got.outcome), ("v", Outcome::Hit));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn with_a_stale_value_callers_wait_at_most_the_stale_wait_for_a_hanging_backend() {
    let (cache, clock) = cache_with(config().with_refresh_ahead(1.0));
    let backend = Backend::default();
    ask(&cache, &backend, "k", Ok("v1")).await.unwrap();
    clock.advance(secs(105)); // expired 5 s ago, within the 30 s grace
    let (hanging, gate) = Backend::gated();
    let started = tokio::time::Instant::now();
    let answers = spawn_asks(&cache, &hanging, 20, Ok("v2"));
    for answer in answers {
        let got = answer.await.unwrap().unwrap();
        assert_eq!(*got.value, "v1");
        assert_eq!(
            got.outcome,
            Outcome::StaleWhileFetching {
                expired_for: secs(5)
            }
        );
    }
    assert!(
        started.elapsed() <= Duration::from_millis(25),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(hanging.calls(), 1, "one fetch goes on in the background");
    assert_eq!(cache.stats().stale_served, 20);
    // Its first success replaces the value.
    gate.add_permits(1);
    settle().await;
    let got = ask(&cache, &backend, "k", Ok("never")).await.unwrap();
    assert_eq!((got.value.as_str(), got.outcome), ("v2", Outcome::Hit));
}

#[tokio::test(start_paused = true)]
async fn callers_arriving_after_the_stale_wait_get_the_stale_value_at_once() {
    let (cache, clock) = cache_with(config().with_refresh_ahead(1.0));
    let backend = Backend::default();
    ask(&cache, &backend, "k", Ok("v1")).await.unwrap();
    clock.advance(secs(105));
    let (hanging, gate) = Backend::gated();
    let first = spawn_asks(&cache, &hanging, 1, Ok("v2"));
    settle().await;
    // Ten milliseconds into the flight: a newcomer waits what is left.
    clock.advance(Duration::from_millis(10));
    let started = tokio::time::Instant::now();
    let got = ask(&cache, &hanging, "k", Ok("v2")).await.unwrap();
    assert_eq!(*got.value, "v1");
    assert_eq!(started.elapsed(), Duration::from_millis(15));
    // Past the stale wait: no wait at all, however many come.
    clock.advance(secs(1));
    let started = tokio::time::Instant::now();
    for _ in 0..10 {
        let got = ask(&cache, &hanging, "k", Ok("v2")).await.unwrap();
        assert!(matches!(got.outcome, Outcome::StaleWhileFetching { .. }));
    }
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(hanging.calls(), 1, "still the one fetch");
    for answer in first {
        assert_eq!(*answer.await.unwrap().unwrap().value, "v1");
    }
    gate.add_permits(1);
    settle().await;
    let got = ask(&cache, &backend, "k", Ok("never")).await.unwrap();
    assert_eq!((got.value.as_str(), got.outcome), ("v2", Outcome::Hit));
}

#[tokio::test]
async fn a_refetch_waits_for_the_new_value_and_keeps_the_old_one_on_failure() {
    let (cache, _clock) = cache_with(config());
    let backend = Backend::default();
    ask(&cache, &backend, "k", Ok("v1")).await.unwrap();
    let got = cache
        .refetch(&key("k"), backend.answer(Ok("v2")))
        .await
        .unwrap();
    assert_eq!((got.value.as_str(), got.outcome), ("v2", Outcome::Fetched));
    let got = cache
        .refetch(&key("k"), backend.answer(Err(TRANSIENT)))
        .await
        .unwrap();
    assert_eq!(*got.value, "v2");
    assert!(matches!(got.outcome, Outcome::Stale { .. }));
}

#[tokio::test]
async fn a_failed_refresh_ahead_is_tried_again_with_backoff_until_expiry() {
    let (cache, clock) = cache_with(config().with_stale_retry_after(secs(2)));
    let backend = Backend::default();
    ask(&cache, &backend, "k", Ok("v1")).await.unwrap();
    clock.advance(secs(80)); // the refresh point
    ask(&cache, &backend, "k", Err(TRANSIENT)).await.unwrap();
    settle().await;
    assert_eq!(backend.calls(), 2, "first refresh, failed");
    ask(&cache, &backend, "k", Err(TRANSIENT)).await.unwrap();
    settle().await;
    assert_eq!(backend.calls(), 2, "not before the backoff");
    clock.advance(secs(2));
    ask(&cache, &backend, "k", Err(TRANSIENT)).await.unwrap();
    settle().await;
    assert_eq!(backend.calls(), 3, "second refresh after 2 s");
    clock.advance(secs(3));
    ask(&cache, &backend, "k", Ok("never")).await.unwrap();
    settle().await;
    assert_eq!(backend.calls(), 3, "the wait doubled to 4 s");
    clock.advance(secs(1));
    let hit = ask(&cache, &backend, "k", Ok("v2")).await.unwrap();
    assert_eq!(*hit.value, "v1", "still the current value at once");
    settle().await;
    assert_eq!(backend.calls(), 4);
    let hit = ask(&cache, &backend, "k", Ok("never")).await.unwrap();
    assert_eq!((hit.value.as_str(), hit.outcome), ("v2", Outcome::Hit));
}

#[tokio::test]
async fn a_value_the_backend_says_expires_is_refreshed_with_minutes_to_spare() {
    // (validity, when the refresh ahead starts): 80 % of it, or 5 minutes
    // before the end when that is earlier and past half of it.
    for (valid_for, refresh_at) in [
        (secs(15 * 60), secs(10 * 60)),
        (secs(8 * 60), secs(384)),
        (secs(3600), secs(2880)),
        (secs(5), secs(4)),
    ] {
        let (cache, clock) = cache_with(config().with_ttl(secs(86_400)));
        let backend = Backend::default();
        let meta = EntryMeta::default().with_valid_for(valid_for);
        let v1 = backend.answer_with(Ok(("v1".into(), meta)));
        cache.get_or_fetch(&key("k"), v1).await.unwrap();
        clock.advance(refresh_at - Duration::from_millis(1));
        ask(&cache, &backend, "k", Ok("v2")).await.unwrap();
        settle().await;
        assert_eq!(backend.calls(), 1, "{valid_for:?}: not yet");
        clock.advance(Duration::from_millis(1));
        ask(&cache, &backend, "k", Ok("v2")).await.unwrap();
        settle().await;
        assert_eq!(backend.calls(), 2, "{valid_for:?}: refreshed ahead");
    }
}

#[tokio::test]
async fn a_value_usable_for_less_than_it_lives_is_refreshed_as_its_life_says() {
    // It lives 10 s, is used for 9 s (a token is not sent in its last
    // second): refreshed at 8 s (80 % of its life, not of 9 s), gone at 9 s.
    let (cache, clock) = cache_with(config());
    let backend = Backend::default();
    let meta = EntryMeta::default()
        .with_valid_for(secs(9))
        .with_lifetime(secs(10));
    cache
        .get_or_fetch(&key("k"), backend.answer_with(Ok(("v1".into(), meta))))
        .await
        .unwrap();
    assert_eq!(cache.entries()[0].remaining, secs(9));
    clock.advance(Duration::from_millis(7_999));
    ask(&cache, &backend, "k", Ok("unused")).await.unwrap();
    settle().await;
    assert_eq!(backend.calls(), 1, "not at 72 %");
    clock.advance(Duration::from_millis(1));
    ask(&cache, &backend, "k", Err(TRANSIENT)).await.unwrap();
    settle().await;
    assert_eq!(backend.calls(), 2, "at 80 % of its life");
    clock.advance(secs(1));
    assert!(
        ask(&cache, &backend, "k", Err(TRANSIENT)).await.is_err(),
        "never served past its usable part"
    );
}

#[tokio::test]
async fn a_refresh_bringing_no_later_expiry_backs_off_instead_of_crowding() {
    // The backend answers with the value it has, expiring at 100 s. Refreshed
    // at 80 % of what is left each time, it would be asked at 80, 96, 99.2,
    // 99.9 s; backed off (2 s, then 4 s, never sooner than that), at 80 and
    // 96 only.
    let (cache, clock) = cache_with(config().with_stale_retry_after(secs(2)));
    let backend = Backend::default();
    let end = secs(100);
    let mut at = Duration::ZERO;
    while at < end {
        let meta = EntryMeta::default().with_valid_for(end - at);
        let answer = backend.answer_with(Ok(("same".into(), meta)));
        cache.get_or_fetch(&key("k"), answer).await.unwrap();
        settle().await;
        clock.advance(Duration::from_millis(100));
        at += Duration::from_millis(100);
    }
    assert_eq!(backend.calls(), 3, "the first fetch and two refreshes");
    // A value expiring later: the usual refresh point, no backoff left over.
    let renewed = EntryMeta::default().with_valid_for(secs(100));
    let renewed = backend.answer_with(Ok(("new".into(), renewed)));
    cache.get_or_fetch(&key("k"), renewed).await.unwrap();
    assert_eq!(backend.calls(), 4);
    clock.advance(secs(79));
    let hit = ask(&cache, &backend, "k", Ok("unused")).await.unwrap();
    assert_eq!((hit.value.as_str(), hit.outcome), ("new", Outcome::Hit));
    settle().await;
    assert_eq!(backend.calls(), 4, "not before 80 %");
    clock.advance(secs(1));
    ask(&cache, &backend, "k", Ok("newer")).await.unwrap();
    settle().await;
    assert_eq!(backend.calls(), 5, "at 80 %");
}

#[tokio::test]
async fn panicking_fetch_does_not_wedge_the_key() {
    let (cache, _clock) = cache_with(config());
    let (gate_backend, gate) = Backend::gated();
    let panicker = {
        let cache = cache.clone();
        let wait = gate_backend.answer(Ok("unused"));
        tokio::spawn(async move {
            cache
                .get_or_fetch(&key("k"), move || async move {
                    let _ = wait().await;
                    panic!("backend client bug");
                })
                .await
        })
    };
    settle().await;
    let backend = Backend::default();
    let waiter = spawn_asks(&cache, &backend, 1, Ok("v")).remove(0);
    settle().await;
    gate.add_permits(1);
    assert!(panicker.await.unwrap_err().is_panic());
    assert_eq!(*waiter.await.unwrap().unwrap().value, "v");
    let again = ask(&cache, &backend, "k", Ok("x")).await.unwrap();
    assert_eq!(again.outcome, Outcome::Hit);
}

#[tokio::test]
async fn invalidate_during_a_fetch_does_not_store_its_value() {
    let (cache, _clock) = cache_with(config());
    let (backend, gate) = Backend::gated();
    let first = spawn_asks(&cache, &backend, 1, Ok("old")).remove(0);
    settle().await;
    cache.invalidate(&key("k"));
    gate.add_permits(1);
    assert_eq!(*first.await.unwrap().unwrap().value, "old");
    assert!(cache.is_empty());
    let fresh = Backend::default();
    let got = ask(&cache, &fresh, "k", Ok("new")).await.unwrap();
    assert_eq!((got.value.as_str(), got.outcome), ("new", Outcome::Fetched));
}

#[tokio::test]
async fn least_recently_used_entry_is_evicted() {
    let (cache, clock) = cache_with(config().with_capacity(2));
    let backend = Backend::default();
    ask(&cache, &backend, "a", Ok("a")).await.unwrap();
    clock.advance(secs(1));
    ask(&cache, &backend, "b", Ok("b")).await.unwrap();
    clock.advance(secs(1));
    let hit = ask(&cache, &backend, "a", Ok("x")).await.unwrap();
    assert_eq!(hit.outcome, Outcome::Hit);
    clock.advance(secs(1));
    ask(&cache, &backend, "c", Ok("c")).await.unwrap();

    assert_eq!(cache.len(), 2);
    assert_eq!(cache.stats().evictions, 1);
    let mut keys: Vec<String> = cache.entries().into_iter().map(|e| e.key).collect();
    keys.sort();
    assert_eq!(keys, ["a", "c"]);
}

#[tokio::test]
async fn disabled_cache_fetches_every_time_but_shares_flights() {
    let (cache, _clock) = cache_with(config().with_enabled(false));
    let backend = Backend::default();
    for _ in 0..3 {
        let got = ask(&cache, &backend, "k", Ok("v")).await.unwrap();
        assert_eq!(got.outcome, Outcome::Fetched);
    }
    assert_eq!(backend.calls(), 3);
    assert!(cache.is_empty());

    let (gated, gate) = Backend::gated();
    let tasks = spawn_asks(&cache, &gated, 10, Ok("v"));
    settle().await;
    gate.add_permits(Semaphore::MAX_PERMITS);
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(gated.calls(), 1);
}

#[tokio::test]
async fn values_are_dropped_when_invalidated() {
    struct Tracked(Arc<AtomicBool>);
    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicBool::new(false));
    let cache: SecretCache<String, Tracked, TestError> =
        SecretCache::new(config(), |e: &TestError| e.transient);
    let flag = dropped.clone();
    let got = cache
        .get_or_fetch(&key("k"), move || async move {
            Ok((Tracked(flag), EntryMeta::default()))
        })
        .await
        .unwrap();
    drop(got);
    assert!(!dropped.load(Ordering::SeqCst), "the cache still holds it");
    cache.invalidate(&key("k"));
    assert!(dropped.load(Ordering::SeqCst));
}

#[tokio::test]
async fn clear_drops_everything() {
    let (cache, _clock) = cache_with(config());
    let backend = Backend::default();
    for k in ["a", "b", "c"] {
        cache
            .get_or_fetch(&key(k), backend.answer(Ok("v")))
            .await
            .unwrap();
    }
    assert_eq!(cache.len(), 3);
    cache.clear();
    assert!(cache.is_empty() && cache.entries().is_empty());
}

#[tokio::test]
async fn entries_show_age_remaining_and_state() {
    let (cache, clock) = cache_with(config().with_refresh_ahead(1.0));
    let backend = Backend::default();
    ask(&cache, &backend, "k", Ok("v")).await.unwrap();
    clock.advance(secs(40));
    let info = &cache.entries()[0];
    assert_eq!(
        (info.age, info.remaining, info.state),
        (secs(40), secs(60), EntryState::Fresh)
    );
    clock.advance(secs(70));
    assert_eq!(cache.entries()[0].state, EntryState::Stale);
    clock.advance(secs(30));
    assert_eq!(cache.entries()[0].state, EntryState::Expired);
}

#[tokio::test]
async fn hit_rate_counts_hits_and_misses() {
    let (cache, _clock) = cache_with(config());
    let backend = Backend::default();
    for _ in 0..4 {
        ask(&cache, &backend, "k", Ok("v")).await.unwrap();
    }
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses), (3, 1));
    assert!((stats.hit_rate() - 0.75).abs() < 1e-9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_mixed_gets_and_invalidates_add_up() {
    const TASKS: usize = 8;
    const OPS: usize = 100_000;
    const KEYS: usize = 16;
    let (cache, _clock) = cache_with(config().with_refresh_ahead(1.0));
    let backend = Backend::default();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let cache = cache.clone();
            let backend = backend.clone();
            tokio::spawn(async move {
                let keys: Vec<String> = (0..KEYS).map(|k| format!("key-{k}")).collect();
                let mut gets = 0;
                let mut state = t as u64 * 7919 + 1;
                for _ in 0..OPS {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let key = &keys[(state % KEYS as u64) as usize];
                    if state.is_multiple_of(50) {
                        cache.invalidate(key);
                    } else {
                        let got = cache.get_or_fetch(key, backend.answer(Ok("v"))).await;
                        assert_eq!(*got.unwrap().value, "v");
                        gets += 1;
                    }
                }
                gets
            })
        })
        .collect();
    let mut gets = 0;
    for task in tasks {
        gets += tokio::time::timeout(Duration::from_secs(120), task)
            .await
            .expect("no deadlock")
            .unwrap();
    }
    let stats = cache.stats();
    assert_eq!(stats.hits + stats.misses, gets);
    assert_eq!(stats.fetches as usize, backend.calls());
    assert_eq!(stats.misses, stats.fetches + stats.coalesced);
    assert!(stats.hits > stats.misses, "{stats:?}");
    assert!(cache.len() <= KEYS);
}

#[tokio::test(start_paused = true)]
async fn follows_tokios_paused_clock() {
    let cache: Cache = SecretCache::with_clock(
        config().with_refresh_ahead(1.0),
        |e: &TestError| e.transient,
        Arc::new(mlflow_secrets_auth_cache::TokioClock),
    );
    let backend = Backend::default();
    ask(&cache, &backend, "k", Ok("v1")).await.unwrap();
    tokio::time::advance(secs(99)).await;
    let hit = ask(&cache, &backend, "k", Ok("v2")).await.unwrap();
    assert_eq!(hit.outcome, Outcome::Hit);
    tokio::time::advance(secs(2)).await;
    let fetched = ask(&cache, &backend, "k", Ok("v2")).await.unwrap();
    assert_eq!(
        (fetched.value.as_str(), fetched.outcome),
        ("v2", Outcome::Fetched)
    );
}

#[tokio::test]
async fn while_stale_the_backend_is_tried_once_per_retry_window() {
    let (cache, clock) = cache_with(
        config()
            .with_refresh_ahead(1.0)
            .with_stale_retry_after(secs(5)),
    );
    let backend = Backend::default();
    ask(&cache, &backend, "k", Ok("v1")).await.unwrap();
    clock.advance(secs(101));
    let failing = Backend::default();
    for _ in 0..10 {
        let got = ask(&cache, &failing, "k", Err(TRANSIENT)).await.unwrap();
        assert_eq!(*got.value, "v1");
        assert!(matches!(got.outcome, Outcome::Stale { .. }));
    }
    assert_eq!(failing.calls(), 1, "one backend attempt per window");
    clock.advance(secs(5));
    ask(&cache, &failing, "k", Err(TRANSIENT)).await.unwrap();
    assert_eq!(failing.calls(), 2);
    let recovered = ask(&cache, &backend, "k", Ok("v2")).await.unwrap();
    assert_eq!(*recovered.value, "v1", "still inside the new window");
    clock.advance(secs(5));
    let recovered = ask(&cache, &backend, "k", Ok("v2")).await.unwrap();
    assert_eq!(
        (recovered.value.as_str(), recovered.outcome),
        ("v2", Outcome::Fetched)
    );
    assert_eq!(cache.stats().stale_served, 12);
}

#[tokio::test]
async fn an_expired_entry_is_fetched_again_but_kept_as_the_stale_fallback() {
    let (cache, clock) = cache_with(config().with_refresh_ahead(1.0));
    let backend = Backend::default();
    ask(&cache, &backend, "k", Ok("v1")).await.unwrap();
    clock.advance(secs(10));
    cache.expire(&key("k"));
    assert_eq!(
        cache.peek(&key("k")).as_deref().map(String::as_str),
        Some("v1")
    );
    let stale = ask(&cache, &backend, "k", Err(TRANSIENT)).await.unwrap();
    assert_eq!(
        *stale.value, "v1",
        "the backend failed: the old value serves"
    );
    assert!(matches!(stale.outcome, Outcome::Stale { .. }));
    // Never past the grace the entry had before it was expired (100 + 30 s).
    clock.advance(secs(121));
    assert_eq!(
        ask(&cache, &backend, "k", Err(TRANSIENT))
            .await
            .unwrap_err(),
        TRANSIENT
    );
    let fresh = ask(&cache, &backend, "k", Ok("v2")).await.unwrap();
    assert_eq!(
        (fresh.value.as_str(), fresh.outcome),
        ("v2", Outcome::Fetched)
    );
    assert_eq!(backend.calls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn durations_past_a_year_do_not_overflow_the_clock() {
    let (cache, clock) = cache_with(
        config()
            .with_ttl_bounds(Duration::MAX, Duration::MAX)
            .with_stale_grace(StaleGrace::For(Duration::MAX)),
    );
    let backend = Backend::default();
    clock.advance(secs(10));
    ask(&cache, &backend, "k", Ok("v1")).await.unwrap();
    let hit = ask(&cache, &backend, "k", Ok("never")).await.unwrap();
    assert_eq!(hit.outcome, Outcome::Hit);
}
