//! [`SecretsAuth`]: the request path — host check, cache, provider chain,
//! header — and its status.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use mlflow_secrets_auth_cache::{
    CacheConfig, CacheStats, Clock, EntryInfo, EntryMeta, Outcome, SecretCache, StaleGrace,
    SystemClock,
};
use mlflow_secrets_auth_core::secrecy::ExposeSecret;
use mlflow_secrets_auth_core::{
    AuthHeader, AuthMode, Credential, Env, ErrorKind, Hop, HopPolicy, ProviderDescription,
    ProviderSettings, Result, SecretError, SecretProvider, Withheld, is_loopback, plain_origin,
    text_agrees,
};
use mlflow_secrets_auth_retry::BreakerState;
use url::Url;

use crate::chain::{Chain, FetchEvent, FetchObserver, Resolved};
use crate::config::{Config, Warning, WarningKind};

struct Inner {
    config: Config,
    policy: HopPolicy,
    warnings: Vec<Warning>,
    chain: Chain,
    cache: SecretCache<(), Resolved, SecretError>,
    clock: Arc<dyn Clock>,
    /// The credential last refetched because a server refused it, and when.
    refetched: Mutex<Option<(AuthHeader, Duration)>>,
    /// Verdicts of plain origins already judged ([`SecretsAuth::header_for`]).
    judged: Judged,
    /// The (host, reason) pairs already warned about ([`SecretsAuth::permits`]).
    withheld_said: WithheldSaid,
    warned_plain_http: AtomicBool,
    observer: OnceLock<FetchObserver>,
}

/// Fetches, caches and attaches the credential. Cheap to clone; `Send + Sync`.
///
/// ```no_run
/// # async fn demo() -> mlflow_secrets_auth_core::Result<()> {
/// use mlflow_secrets_auth::SecretsAuth;
/// let auth = SecretsAuth::from_env()?;
/// if let Some(header) = auth.header_for("https://mlflow.example.com/api/2.0/mlflow/experiments/search").await? {
///     println!("{header}"); // masked: "Authorization: Bearer abcd…wxyz"
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SecretsAuth {
    inner: Arc<Inner>,
}

impl fmt::Debug for SecretsAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretsAuth")
            .field("providers", &self.provider_names())
            .field("allowlist", &self.inner.config.allowlist.to_string())
            .field("header", &self.inner.config.header_name.as_str())
            .finish_non_exhaustive()
    }
}

/// What [`SecretsAuth::status`] says about one provider (never a secret).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProviderStatus {
    /// The provider's name.
    pub name: &'static str,
    /// Whether it is configured and in the chain.
    pub configured: bool,
    /// Why it is not, when it is not.
    pub problem: Option<String>,
    /// Its redacted configuration.
    pub description: Option<ProviderDescription>,
    /// Its circuit breaker.
    pub circuit: Option<BreakerState>,
    /// The kind of its last failure, cleared by a success.
    pub last_error: Option<ErrorKind>,
    /// Its auth mode and TTL (after clamping), when configured; `None` for
    /// the node agent, whose answers carry its own provider's mode and validity.
    pub settings: Option<ProviderSettings>,
}

/// The credential and how to use it, as [`SecretsAuth::lease`] hands it on.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Lease {
    /// The credential (`Debug` shows no value).
    pub credential: Credential,
    /// How it is written into the header.
    pub auth_mode: AuthMode,
    /// The provider that served it.
    pub provider: &'static str,
    /// How long the cached entry stays valid (zero when served stale).
    pub valid_for: Duration,
}

/// Builds a [`SecretsAuth`] from code.
pub struct SecretsAuthBuilder {
    config: Config,
    providers: Vec<(Arc<dyn SecretProvider>, ProviderSettings)>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for SecretsAuthBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretsAuthBuilder")
            .field("config", &self.config)
            .field("providers", &self.providers.len())
            .finish_non_exhaustive()
    }
}

impl SecretsAuthBuilder {
    /// Uses `config` (its `enabled` list is ignored: the chain is what
    /// [`Self::provider`] adds).
    #[must_use]
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Appends a provider to the chain (tried in the order added).
    #[must_use]
    pub fn provider(
        mut self,
        provider: impl SecretProvider + 'static,
        settings: ProviderSettings,
    ) -> Self {
        self.providers.push((Arc::new(provider), settings));
        self
    }

    /// Reads time from `clock` (tests use a manual clock).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The configured [`SecretsAuth`]; its warnings (an allowlist that admits
    /// every host, the providers' own) are logged as `from_env`'s are.
    pub fn build(self) -> SecretsAuth {
        let chain = Chain::new(&self.config, self.providers);
        let warnings = crate::config::allowlist_warnings(&self.config.allowlist);
        SecretsAuth::assemble(self.config, warnings, chain, self.clock)
    }
}

impl SecretsAuth {
    /// Reads every variable from the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from_source(&Env::process())
    }

    /// Reads every variable from `env`.
    pub fn from_source(env: &Env<'_>) -> Result<Self> {
        Self::read(env, false)
    }

    /// [`Self::from_source`] for a server that hands the credential to local
    /// clients and sends it to no host itself (the node agent): the
    /// allowlist's warnings are left to its clients, to whom they apply.
    pub fn from_source_serving(env: &Env<'_>) -> Result<Self> {
        Self::read(env, true)
    }

    fn read(env: &Env<'_>, serving: bool) -> Result<Self> {
        let (config, mut warnings) = Config::from_source(env)?;
        if serving {
            warnings.retain(|w| w.kind() != WarningKind::Allowlist);
        }
        let chain = Chain::from_env(&config, env, &mut warnings);
        Ok(Self::assemble(
            config,
            warnings,
            chain,
            Arc::new(SystemClock),
        ))
    }

    /// A builder.
    pub fn builder() -> SecretsAuthBuilder {
        SecretsAuthBuilder {
            config: Config::default(),
            providers: Vec::new(),
            clock: Arc::new(SystemClock),
        }
    }

    fn assemble(
        config: Config,
        mut warnings: Vec<Warning>,
        chain: Chain,
        clock: Arc<dyn Clock>,
    ) -> Self {
        for link in &chain.links {
            let name = link.provider.name();
            warnings.extend(
                link.provider
                    .warnings()
                    .into_iter()
                    .map(|w| Warning::new(WarningKind::Provider, format!("{name}: {w}"))),
            );
        }
        let grace = match config.stale_if_error {
            None => StaleGrace::SameAsTtl,
            Some(d) if d.is_zero() => StaleGrace::Never,
            Some(d) => StaleGrace::For(d),
        };
        let cache_config = CacheConfig::default()
            .with_ttl_bounds(config.ttl_min, config.ttl_max)
            .with_stale_grace(grace)
            .with_capacity(16)
            .with_enabled(!config.cache_disabled);
        let cache =
            SecretCache::with_clock(cache_config, SecretError::is_transient, Arc::clone(&clock));
        for warning in &warnings {
            tracing::warn!("{warning}");
        }
        Self {
            inner: Arc::new(Inner {
                policy: HopPolicy::new(config.allowlist.clone(), config.require_tls),
                config,
                warnings,
                chain,
                cache,
                clock,
                refetched: Mutex::new(None),
                judged: Judged::default(),
                withheld_said: WithheldSaid::default(),
                warned_plain_http: AtomicBool::new(false),
                observer: OnceLock::new(),
            }),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Warnings about the configuration (no allowlist, clamped TTLs, skipped providers, ...).
    pub fn warnings(&self) -> &[Warning] {
        &self.inner.warnings
    }

    fn provider_names(&self) -> Vec<&'static str> {
        self.inner
            .chain
            .links
            .iter()
            .map(|l| l.provider.name())
            .collect()
    }

    /// The hop policy in force (allowlist and TLS rule).
    pub fn policy(&self) -> &HopPolicy {
        &self.inner.policy
    }

    /// Whether the credential may go to `url` as a first request: `Ok(false)`
    /// for a host outside the allowlist (or no http(s) URL); an error for
    /// plain http to a non-loopback host under `MLFLOW_SECRETS_REQUIRE_TLS`.
    pub fn permits(&self, url: &Url) -> Result<bool> {
        let verdict = self.inner.policy.permits(url)?;
        Ok(self.judged(url, verdict))
    }

    /// Logs a verdict (once for plain http) and turns it into a yes/no.
    fn judged(&self, url: &Url, verdict: std::result::Result<(), Withheld>) -> bool {
        if let Err(why) = verdict {
            let host = url.host_str().unwrap_or_default();
            // Once per (host, reason): a 401 then has its cause in the log,
            // and a loop of requests does not fill it.
            if self.inner.withheld_said.first(host, why) {
                tracing::warn!(
                    host,
                    "no credential sent to this host: {why} (the hosts that get it are set by MLFLOW_SECRETS_ALLOWED_HOSTS)"
                );
            } else {
                tracing::debug!(host, %why, "no credential attached");
            }
            return false;
        }
        if url.scheme() == "http"
            && !is_loopback(url)
            && !self.inner.warned_plain_http.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                host = url.host_str().unwrap_or_default(),
                "sending the credential over plain http; set MLFLOW_SECRETS_REQUIRE_TLS=true to refuse"
            );
        }
        true
    }

    /// One hop of a request chain (see [`HopPolicy::decide`]): what to strip,
    /// and the header to attach when the hop may have it. `previous` is the
    /// URL of the hop before, `left_https` what the previous [`Hop`] said.
    pub async fn hop(
        &self,
        previous: Option<&Url>,
        left_https: bool,
        next: &Url,
    ) -> Result<(Hop, Option<AuthHeader>)> {
        let hop = self.inner.policy.decide(previous, left_https, next)?;
        if !self.judged(next, hop.verdict) {
            return Ok((hop, None));
        }
        Ok((hop, Some(self.current().await?.header.clone())))
    }

    /// A server refused the header whose value is `refused` (401/403): the
    /// header to resend the request with, or `None` when resending is pointless.
    ///
    /// - When the cache already holds a different credential (another caller
    ///   refetched), that one is returned without a fetch.
    /// - Otherwise the credential is refetched — at most once per credential
    ///   per [`Config::refetch_interval`] — keeping the old value as the
    ///   stale fallback. When the backend hands back the same credential, the
    ///   server refuses it for this resource (authorization, not staleness):
    ///   `None`, and the caller returns the 401/403 as it is.
    pub async fn refused(&self, refused: &str) -> Result<Option<AuthHeader>> {
        let (fresh, _) = self
            .refetch_bounded(refused, "server refused the credential: fetching it again")
            .await?;
        if same_value(&fresh, refused) {
            tracing::info!(
                "the backend holds the same credential: the server refuses it for this resource; not resending"
            );
            return Ok(None);
        }
        Ok(Some(fresh))
    }

    /// The header after a refetch of the credential whose header value is
    /// `old`, at most once per credential per refetch interval (see
    /// [`Self::refused`]); logs `why` when it fetches. With the error of a
    /// refetch that failed transiently (the old value was kept).
    async fn refetch_bounded(
        &self,
        old: &str,
        why: &'static str,
    ) -> Result<(AuthHeader, Option<SecretError>)> {
        if let Some(cached) = self.inner.cache.peek(&())
            && !same_value(&cached.header, old)
        {
            return Ok((cached.header.clone(), None));
        }
        let now = self.inner.clock.now();
        let refetch = {
            let mut last = self
                .inner
                .refetched
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let recent = last.as_ref().is_some_and(|(header, at)| {
                same_value(header, old)
                    && now.saturating_sub(*at) < self.inner.config.refetch_interval
            });
            if !recent && let Some(cached) = self.inner.cache.peek(&()) {
                *last = Some((cached.header.clone(), now));
            }
            !recent
        };
        if refetch {
            tracing::info!("{why}");
            let inner = Arc::clone(&self.inner);
            let lookup = self
                .inner
                .cache
                .refetch(&(), move || async move { inner.fetch(true).await })
                .await?;
            self.log(&lookup);
            let failed = match lookup.outcome {
                Outcome::Stale { error, .. } => Some(error),
                _ => None,
            };
            Ok((lookup.value.header.clone(), failed))
        } else {
            // Refetched recently: share that fetch's result (no new fetch).
            tracing::debug!("credential refetched recently: not again within the refetch interval");
            Ok((self.current().await?.header.clone(), None))
        }
    }

    /// The header for a request to `url`, or `None` when the credential may not
    /// go there (nothing is fetched then). Unparsable URLs get `None`.
    ///
    /// The verdict for a plain `scheme://host[:port]` prefix (lower-case
    /// letters, digits, `.`, `-`, `:` only: no userinfo, escapes, brackets or
    /// backslashes, so every parser reads the same host from it) is
    /// remembered, and later URLs with that exact prefix skip the parse.
    pub async fn header_for(&self, url: &str) -> Result<Option<AuthHeader>> {
        let prefix = plain_origin(url);
        if let Some(prefix) = prefix
            && let Some(permitted) = self.inner.judged.get(prefix)
        {
            if !permitted {
                return Ok(None);
            }
            return Ok(Some(self.current().await?.header.clone()));
        }
        let Ok(parsed) = Url::parse(url) else {
            return Ok(None);
        };
        match prefix {
            Some(prefix) => self.judge_origin(prefix),
            // The text may be handed to a client that reads it by RFC 3986
            // rather than as the `url` crate does (`http://a\@b/`): where
            // the two name different hosts, nothing is sent.
            None if !text_agrees(url, &parsed) => {
                self.judged(&parsed, Err(Withheld::Ambiguous));
                return Ok(None);
            }
            None => {}
        }
        self.header_for_url(&parsed).await
    }

    /// [`Self::header_for`] when it can answer without waiting: a plain
    /// origin already judged and, when permitted, a fresh credential with no
    /// refresh due (a hit). `None`: ask [`Self::header_for`]. For callers
    /// outside an async runtime (the blocking face, the Python plugin).
    pub fn header_for_cached(&self, url: &str) -> Option<Option<AuthHeader>> {
        if !self.inner.judged.get(plain_origin(url)?)? {
            return Some(None);
        }
        let served = self.inner.cache.fresh(&())?;
        tracing::trace!("credential cache hit");
        Some(Some(served.header.clone()))
    }

    /// Remembers the verdict for a plain origin (judged on `prefix/` alone, so
    /// the rest of one URL cannot decide for others). Errors are not remembered.
    fn judge_origin(&self, prefix: &str) {
        let Ok(origin) = Url::parse(&format!("{prefix}/")) else {
            return;
        };
        if let Ok(verdict) = self.inner.policy.permits(&origin) {
            self.inner.judged.insert(prefix, verdict.is_ok());
        }
    }

    /// [`Self::header_for`] for a parsed URL.
    pub async fn header_for_url(&self, url: &Url) -> Result<Option<AuthHeader>> {
        if !self.permits(url)? {
            return Ok(None);
        }
        Ok(Some(self.current().await?.header.clone()))
    }

    /// The credential itself (for handing to another program, as `exec`
    /// does), or `None` when it may not go to `url`.
    pub async fn credential_for_url(&self, url: &Url) -> Result<Option<Credential>> {
        if !self.permits(url)? {
            return Ok(None);
        }
        Ok(Some(self.current().await?.credential.clone()))
    }

    /// The header, whatever the destination: for diagnostics (`doctor`) only;
    /// requests should use [`Self::header_for`], which checks the host.
    pub async fn header_unchecked(&self) -> Result<AuthHeader> {
        Ok(self.current().await?.header.clone())
    }

    /// The credential, whatever the destination: for diagnostics (`doctor`)
    /// only, like [`Self::header_unchecked`].
    pub async fn credential_unchecked(&self) -> Result<Credential> {
        Ok(self.current().await?.credential.clone())
    }

    /// The current credential's header, from the cache or the chain.
    async fn current(&self) -> Result<Arc<Resolved>> {
        let inner = Arc::clone(&self.inner);
        let lookup = self
            .inner
            .cache
            .get_or_fetch(&(), move || async move { inner.fetch(false).await })
            .await?;
        self.log(&lookup);
        Ok(lookup.value)
    }

    fn log(&self, lookup: &mlflow_secrets_auth_cache::Lookup<Resolved, SecretError>) {
        match &lookup.outcome {
            Outcome::Hit => tracing::trace!("credential cache hit"),
            Outcome::Fetched => tracing::debug!(
                provider = self.inner.chain.links[lookup.value.index].provider.name(),
                "credential fetched"
            ),
            Outcome::Coalesced => tracing::debug!("credential fetch shared with another caller"),
            Outcome::Stale { error, expired_for } => tracing::warn!(
                expired_for_s = expired_for.as_secs_f64(),
                error = %mlflow_secrets_auth_core::redact(&error.to_string()),
                "backend unavailable: serving the cached credential past its expiry"
            ),
            Outcome::StaleWhileFetching { expired_for } => tracing::debug!(
                expired_for_s = expired_for.as_secs_f64(),
                "backend slow: serving the cached credential past its expiry while it is fetched"
            ),
            other => tracing::debug!(outcome = ?other, "credential served"),
        }
    }

    /// Fetches the credential now (unless cached) so the first request does
    /// not wait. Returns the name of the provider that served it.
    pub async fn warm(&self) -> Result<&'static str> {
        let served = self.current().await?;
        Ok(self.inner.chain.links[served.index].provider.name())
    }

    /// Expires the cached credential: the next request fetches it again. The
    /// old value stays the stale fallback: if that fetch fails transiently,
    /// callers still get it within the stale grace.
    pub fn invalidate(&self) {
        tracing::debug!("credential invalidated");
        self.inner.cache.expire(&());
    }

    /// The credential with what another process needs to use it as this
    /// one would: the auth mode, the provider that served it and how long
    /// the cached entry stays valid (zero when served stale). Whatever the
    /// destination, like [`Self::credential_unchecked`]: for handing on
    /// (the node agent), never for attaching to a request.
    pub async fn lease(&self) -> Result<Lease> {
        let served = self.current().await?;
        let valid_for = self.entry().map_or(Duration::ZERO, |e| e.remaining);
        Ok(Lease {
            credential: served.credential.clone(),
            auth_mode: served.mode,
            provider: self.inner.chain.links[served.index].provider.name(),
            valid_for,
        })
    }

    /// Fetches the credential again now, under the bounded-refetch rule of
    /// [`Self::refused`] (at most once per credential per
    /// [`Config::refetch_interval`]). `true` when the credential changed.
    /// Nothing cached: fetches it. A fetch that fails is an error, even when
    /// the old value is kept as the stale fallback (requests still get it).
    pub async fn refetch(&self) -> Result<bool> {
        match self.inner.cache.peek(&()) {
            Some(cached) => {
                let old = cached.header.value().expose_secret();
                let (fresh, failed) = self
                    .refetch_bounded(old, "asked to fetch the credential again")
                    .await?;
                match failed {
                    Some(error) => Err(error),
                    None => Ok(!same_value(&fresh, old)),
                }
            }
            None => {
                self.current().await?;
                Ok(true)
            }
        }
    }

    /// The cached entry's age, remaining validity and state (no value).
    pub fn entry(&self) -> Option<EntryInfo<()>> {
        self.inner.cache.entries().into_iter().next()
    }

    /// Calls `observe` after every fetch from a provider of the chain
    /// (foreground or background), with the provider, the time it took and
    /// its error kind — for metrics. One observer per `SecretsAuth`: `false`
    /// when one was already set (the new one is dropped).
    pub fn observe_fetches(&self, observe: impl Fn(&FetchEvent) + Send + Sync + 'static) -> bool {
        self.inner.observer.set(Box::new(observe)).is_ok()
    }

    /// Cache counters.
    pub fn stats(&self) -> CacheStats {
        self.inner.cache.stats()
    }

    /// Every enabled provider: configured or not, circuit, last error kind.
    pub fn status(&self) -> Vec<ProviderStatus> {
        let chain = &self.inner.chain;
        let mut out: Vec<ProviderStatus> = chain
            .links
            .iter()
            .enumerate()
            .map(|(i, link)| ProviderStatus {
                name: link.provider.name(),
                configured: true,
                problem: None,
                description: Some(link.provider.describe()),
                circuit: chain.breaker_state(i),
                last_error: *link.last_error.lock().unwrap_or_else(|e| e.into_inner()),
                // The agent's answers carry its own provider's mode and validity.
                settings: (link.provider.name() != crate::chain::AGENT).then_some(link.settings),
            })
            .collect();
        out.extend(chain.unusable.iter().map(|u| ProviderStatus {
            name: u.name,
            configured: false,
            problem: Some(u.error.to_string()),
            description: None,
            circuit: None,
            last_error: Some(u.error.kind()),
            settings: None,
        }));
        out
    }
}

/// The (host, reason) pairs a withheld credential was warned about, at most
/// [`WithheldSaid::CAPACITY`] (past it, withholding is logged at debug only).
#[derive(Default)]
struct WithheldSaid {
    said: Mutex<std::collections::HashMap<Withheld, std::collections::HashSet<Box<str>>>>,
}

impl WithheldSaid {
    const CAPACITY: usize = 64;

    /// Whether (host, why) is new, remembering it when there is room.
    fn first(&self, host: &str, why: Withheld) -> bool {
        let mut said = self.said.lock().unwrap_or_else(|e| e.into_inner());
        if said.get(&why).is_some_and(|hosts| hosts.contains(host)) {
            return false;
        }
        if said
            .values()
            .map(std::collections::HashSet::len)
            .sum::<usize>()
            >= Self::CAPACITY
        {
            return false;
        }
        said.entry(why).or_default().insert(host.into())
    }
}

/// Verdicts remembered for plain origins (at most [`Judged::CAPACITY`]).
#[derive(Default)]
struct Judged {
    verdicts: std::sync::RwLock<std::collections::HashMap<Box<str>, bool>>,
}

impl Judged {
    const CAPACITY: usize = 64;

    fn get(&self, origin: &str) -> Option<bool> {
        self.verdicts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(origin)
            .copied()
    }

    fn insert(&self, origin: &str, permitted: bool) {
        let mut verdicts = self.verdicts.write().unwrap_or_else(|e| e.into_inner());
        if verdicts.len() < Self::CAPACITY {
            verdicts.insert(origin.into(), permitted);
        }
    }
}

/// Whether `header` has the value `value`.
fn same_value(header: &AuthHeader, value: &str) -> bool {
    header.value().expose_secret() == value
}

impl Inner {
    /// `again`: see `Chain::fetch`.
    async fn fetch(&self, again: bool) -> Result<(Resolved, EntryMeta)> {
        let (served, meta) = self.chain.fetch(self.observer.get(), again).await?;
        let ttl = self.chain.links[served.index].settings.ttl;
        let mut entry = EntryMeta::default().with_ttl(ttl);
        if let Some(valid_for) = meta.valid_for {
            entry = entry.with_valid_for(valid_for);
        }
        if let Some(lifetime) = meta.lifetime {
            entry = entry.with_lifetime(lifetime);
        }
        Ok((served, entry))
    }
}

/// The total time a fetch may take with this configuration: every attempt
/// timing out plus the longest waits between them, bounded by the deadline.
pub fn worst_case_fetch_time(config: &Config) -> Duration {
    crate::chain::retry_policy(config)
        .with_deadline(config.fetch_deadline)
        .worst_case()
        .unwrap_or(config.fetch_deadline)
}
