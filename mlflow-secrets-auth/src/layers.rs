//! Retry, circuit breaker and cache as layers: each wraps a
//! [`SecretProvider`] and is one itself, so they compose in any order around
//! any provider — a built-in one, your own, or a plain async function
//! ([`provider_fn`]) — with the same error classifier the facade uses.
//! [`SecretsAuth`](crate::SecretsAuth)'s chain is built from these layers.
//!
//! Vault with retries, no cache:
//!
//! ```no_run
//! # #[cfg(feature = "vault")]
//! # async fn vault() -> mlflow_secrets_auth::Result<()> {
//! use mlflow_secrets_auth::layers::{ProviderExt, RetryPolicy};
//! use mlflow_secrets_auth::{Env, SecretProvider, providers::vault::VaultProvider};
//! let vault = VaultProvider::from_env(&Env::process())?.with_retry(RetryPolicy::default());
//! let secret = vault.fetch().await?;
//! # Ok(()) }
//! ```
//!
//! A cache and retries around your own async function:
//!
//! ```
//! # async fn mine() -> mlflow_secrets_auth::Result<()> {
//! use std::time::Duration;
//! use mlflow_secrets_auth::layers::{CacheConfig, ProviderExt, RetryPolicy, provider_fn};
//! use mlflow_secrets_auth::{FetchedSecret, SecretProvider};
//! let token = provider_fn("my-token", || async { Ok(FetchedSecret::new("s3cr3t".into())) })
//!     .with_retry(RetryPolicy::default().with_deadline(Duration::from_secs(20)))
//!     .cached(CacheConfig::default().with_ttl(Duration::from_secs(300)));
//! let secret = token.fetch().await?; // fetched
//! let again = token.fetch().await?; // from the cache
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
pub use mlflow_secrets_auth_cache::{CacheConfig, CacheStats, StaleGrace};
use mlflow_secrets_auth_cache::{EntryMeta, SecretCache};
use mlflow_secrets_auth_core::secrecy::{ExposeSecret, SecretString};
use mlflow_secrets_auth_core::{
    ErrorKind, FetchedSecret, ProviderDescription, Result, SecretError, SecretMeta, SecretProvider,
};
pub use mlflow_secrets_auth_retry::{
    Backoff, BreakerConfig, BreakerRefusal, BreakerState, CircuitBreaker, Jitter, RetryPolicy,
};
use mlflow_secrets_auth_retry::{BreakerError, Failure, RetryDecision, RetryError};

/// The layers, as methods on every provider.
pub trait ProviderExt: SecretProvider + Sized {
    /// Retries failed fetches under `policy` (backoff, per-attempt timeout,
    /// deadline): transient failures and timeouts are retried, a throttled
    /// answer after its `Retry-After`, anything else is returned at once.
    fn with_retry(self, policy: RetryPolicy) -> Retrying<Self> {
        Retrying {
            inner: self,
            policy,
            breaker: None,
        }
    }

    /// A circuit breaker in front of each fetch: after `config`'s threshold of
    /// consecutive transient failures, fetches are refused at once
    /// ([`ErrorKind::CircuitOpen`]) until the circuit lets a probe through.
    /// On a [`Retrying`] provider, use its own `with_breaker`, which guards
    /// every attempt.
    fn with_breaker(self, config: BreakerConfig) -> Breaking<Self> {
        Breaking {
            inner: self,
            breaker: CircuitBreaker::new(config),
        }
    }

    /// Keeps the fetched secret for the TTL of `config` (never longer than
    /// the backend says it is valid), shares one fetch among concurrent
    /// callers, refreshes ahead of expiry and serves a stale value while the
    /// backend fails transiently, as `config` says.
    fn cached(self, config: CacheConfig) -> Cached<Self>
    where
        Self: 'static,
    {
        Cached {
            inner: Arc::new(self),
            cache: SecretCache::new(config, SecretError::is_transient),
        }
    }
}

impl<P: SecretProvider> ProviderExt for P {}

/// What the retry layer does with a failure: the one classifier of every
/// layer and of the facade's chain.
pub fn classify(error: &SecretError) -> RetryDecision {
    match error.kind() {
        ErrorKind::Throttled => error
            .retry_after()
            .map_or(RetryDecision::Retry, RetryDecision::RetryAfter),
        ErrorKind::CircuitOpen => RetryDecision::Stop,
        kind if kind.is_transient() => RetryDecision::Retry,
        _ => RetryDecision::Stop,
    }
}

/// A provider whose fetches are retried; see [`ProviderExt::with_retry`].
#[derive(Debug)]
pub struct Retrying<P> {
    inner: P,
    policy: RetryPolicy,
    breaker: Option<CircuitBreaker>,
}

impl<P> Retrying<P> {
    /// A circuit breaker consulted before every attempt: failures it would
    /// retry and timeouts count towards opening it, and once it is open the
    /// retrying stops at once (no wait for a circuit that will refuse).
    #[must_use]
    pub fn with_breaker(mut self, config: BreakerConfig) -> Self {
        self.breaker = Some(CircuitBreaker::new(config));
        self
    }

    /// The breaker, when there is one.
    pub fn breaker(&self) -> Option<&CircuitBreaker> {
        self.breaker.as_ref()
    }

    /// The retry policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// The wrapped provider.
    pub fn inner(&self) -> &P {
        &self.inner
    }
}

impl<P: SecretProvider> Retrying<P> {
    /// Fetches within `budget` at most (and within the policy's own deadline).
    pub async fn fetch_within(&self, budget: Duration) -> Result<FetchedSecret> {
        self.run(&self.within(budget), false).await
    }

    /// [`SecretProvider::refetch`] (the last value was refused) within
    /// `budget` at most.
    pub async fn refetch_within(&self, budget: Duration) -> Result<FetchedSecret> {
        self.run(&self.within(budget), true).await
    }

    fn within(&self, budget: Duration) -> RetryPolicy {
        let deadline = self.policy.deadline().map_or(budget, |d| d.min(budget));
        self.policy.clone().with_deadline(deadline)
    }

    async fn run(&self, policy: &RetryPolicy, again: bool) -> Result<FetchedSecret> {
        let name = self.inner.name();
        let before = self.breaker.as_ref().map(CircuitBreaker::state);
        let result = policy
            .run_with(
                self.breaker.as_ref(),
                classify,
                |event| {
                    tracing::debug!(
                        provider = name,
                        attempt = event.attempt,
                        delay_ms = event.delay.as_millis() as u64,
                        failure = %mlflow_secrets_auth_core::redact(&event.failure.to_string()),
                        "retrying"
                    );
                },
                || {
                    if again {
                        self.inner.refetch()
                    } else {
                        self.inner.fetch()
                    }
                },
            )
            .await;
        if let (Some(before), Some(breaker)) = (before, &self.breaker) {
            let after = breaker.state();
            if std::mem::discriminant(&before) != std::mem::discriminant(&after) {
                tracing::info!(provider = name, from = ?before, to = ?after, "circuit breaker changed");
            }
        }
        result.map_err(|e| retry_error(e, name, policy.attempt_timeout()))
    }
}

#[async_trait]
impl<P: SecretProvider> SecretProvider for Retrying<P> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn fetch(&self) -> Result<FetchedSecret> {
        self.run(&self.policy, false).await
    }

    async fn refetch(&self) -> Result<FetchedSecret> {
        self.run(&self.policy, true).await
    }

    fn describe(&self) -> ProviderDescription {
        self.inner.describe()
    }

    fn warnings(&self) -> Vec<String> {
        self.inner.warnings()
    }
}

/// Turns the retry layer's verdict back into a provider error.
fn retry_error(
    error: RetryError<SecretError>,
    provider: &'static str,
    timeout: Option<Duration>,
) -> SecretError {
    let attempts = error.attempts;
    match error.failure {
        Failure::Error(e) => e.with_provider(provider),
        Failure::TimedOut(after) => SecretError::new(
            ErrorKind::Timeout,
            format!(
                "no answer within {:.1}s (attempt {attempts}, per-attempt timeout {:.1}s)",
                after.as_secs_f64(),
                timeout.unwrap_or(after).as_secs_f64()
            ),
        )
        .with_provider(provider),
        Failure::CircuitOpen(open) => circuit_open(open, provider),
    }
}

fn circuit_open(open: BreakerRefusal, provider: &'static str) -> SecretError {
    SecretError::new(ErrorKind::CircuitOpen, open.to_string())
        .with_retry_after(open.retry_after())
        .with_provider(provider)
}

/// A provider behind a circuit breaker; see [`ProviderExt::with_breaker`].
#[derive(Debug)]
pub struct Breaking<P> {
    inner: P,
    breaker: CircuitBreaker,
}

impl<P> Breaking<P> {
    /// The breaker.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }
}

impl<P: SecretProvider> Breaking<P> {
    async fn call(
        &self,
        fetch: impl Future<Output = Result<FetchedSecret>>,
    ) -> Result<FetchedSecret> {
        match self.breaker.call(SecretError::is_transient, || fetch).await {
            Ok(fetched) => Ok(fetched),
            Err(BreakerError::Inner(error)) => Err(error),
            Err(BreakerError::Open(open)) => Err(circuit_open(open, self.inner.name())),
        }
    }
}

#[async_trait]
impl<P: SecretProvider> SecretProvider for Breaking<P> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn fetch(&self) -> Result<FetchedSecret> {
        self.call(self.inner.fetch()).await
    }

    async fn refetch(&self) -> Result<FetchedSecret> {
        self.call(self.inner.refetch()).await
    }

    fn describe(&self) -> ProviderDescription {
        self.inner.describe()
    }

    fn warnings(&self) -> Vec<String> {
        self.inner.warnings()
    }
}

/// What [`Cached`] keeps of a fetch.
struct Kept {
    text: SecretString,
    meta: SecretMeta,
}

fn keep(fetched: FetchedSecret) -> (Kept, EntryMeta) {
    let mut entry = EntryMeta::default();
    if let Some(valid_for) = fetched.meta.valid_for {
        entry = entry.with_valid_for(valid_for);
    }
    if let Some(lifetime) = fetched.meta.lifetime {
        entry = entry.with_lifetime(lifetime);
    }
    let kept = Kept {
        text: fetched.text,
        meta: fetched.meta,
    };
    (kept, entry)
}

fn unkeep(kept: &Kept) -> FetchedSecret {
    let text = SecretString::from(kept.text.expose_secret().to_owned());
    FetchedSecret::new(text).with_meta(kept.meta.clone())
}

/// A provider whose secret is cached; see [`ProviderExt::cached`].
pub struct Cached<P> {
    inner: Arc<P>,
    cache: SecretCache<(), Kept, SecretError>,
}

impl<P: fmt::Debug> fmt::Debug for Cached<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cached")
            .field("inner", &self.inner)
            .field("stats", &self.cache.stats())
            .finish()
    }
}

impl<P> Cached<P> {
    /// Expires the cached secret: the next fetch goes to the provider (the
    /// old value stays the stale fallback).
    pub fn invalidate(&self) {
        self.cache.expire(&());
    }

    /// The cache's counters.
    pub fn stats(&self) -> CacheStats {
        self.cache.stats()
    }
}

#[async_trait]
impl<P: SecretProvider + 'static> SecretProvider for Cached<P> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    /// The cached secret (its metadata as fetched), or a fetch.
    async fn fetch(&self) -> Result<FetchedSecret> {
        let inner = Arc::clone(&self.inner);
        let lookup = self
            .cache
            .get_or_fetch(&(), move || async move { Ok(keep(inner.fetch().await?)) })
            .await?;
        Ok(unkeep(&lookup.value))
    }

    /// Drops the cached secret and refetches from the provider (itself told
    /// the value was refused); the old value stays the stale fallback.
    async fn refetch(&self) -> Result<FetchedSecret> {
        let inner = Arc::clone(&self.inner);
        let lookup = self
            .cache
            .refetch(&(), move || async move { Ok(keep(inner.refetch().await?)) })
            .await?;
        Ok(unkeep(&lookup.value))
    }

    fn describe(&self) -> ProviderDescription {
        self.inner.describe()
    }

    fn warnings(&self) -> Vec<String> {
        self.inner.warnings()
    }
}

/// A provider made of an async function; see [`provider_fn`].
pub struct FnProvider<F> {
    name: &'static str,
    fetch: F,
}

impl<F> fmt::Debug for FnProvider<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnProvider")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A provider named `name` whose fetch is `fetch()`: for putting the layers
/// around any async source of a secret.
pub fn provider_fn<F, Fut>(name: &'static str, fetch: F) -> FnProvider<F>
where
    F: Fn() -> Fut + Send + Sync,
    Fut: Future<Output = Result<FetchedSecret>> + Send,
{
    FnProvider { name, fetch }
}

#[async_trait]
impl<F, Fut> SecretProvider for FnProvider<F>
where
    F: Fn() -> Fut + Send + Sync,
    Fut: Future<Output = Result<FetchedSecret>> + Send,
{
    fn name(&self) -> &'static str {
        self.name
    }

    async fn fetch(&self) -> Result<FetchedSecret> {
        (self.fetch)().await
    }

    fn describe(&self) -> ProviderDescription {
        ProviderDescription::new(self.name)
    }
}
