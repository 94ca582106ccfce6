//! [`CacheConfig`]: TTL and its bounds, jitter, refresh-ahead point, stale grace,
//! capacity; and [`EntryMeta`], what a fetch says about one entry's lifetime.

use std::time::Duration;

/// How long past its expiry an entry may still be served when the backend fails
/// transiently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StaleGrace {
    /// Never serve an expired entry.
    Never,
    /// As long as the entry's own TTL (the default).
    #[default]
    SameAsTtl,
    /// A fixed time.
    For(Duration),
}

/// How the cache keeps entries. Start from [`CacheConfig::default`] and change
/// what you need; out-of-range values are brought into range, never a panic.
///
/// ```
/// use std::time::Duration;
/// use mlflow_secrets_auth_cache::{CacheConfig, StaleGrace};
/// let config = CacheConfig::default()
///     .with_ttl(Duration::from_secs(120))
///     .with_jitter(0.0)
///     .with_stale_grace(StaleGrace::For(Duration::from_secs(600)));
/// assert_eq!(config.capacity, 1024);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CacheConfig {
    /// TTL of an entry whose fetch did not give one (default 300 s).
    pub ttl: Duration,
    /// Lower bound of every TTL before jitter (default 60 s).
    pub min_ttl: Duration,
    /// Upper bound of every TTL (default 3600 s).
    pub max_ttl: Duration,
    /// Largest random shortening of a TTL, as a fraction: 0.1 = up to 10 %
    /// (default). 0 turns jitter off. Kept within 0..=1.
    pub jitter: f64,
    /// Fraction of the TTL after which the first hit starts one background
    /// refresh (default 0.8). 1 or more turns refresh-ahead off.
    pub refresh_ahead: f64,
    /// How long past expiry an entry may be served on transient errors.
    pub stale_grace: StaleGrace,
    /// While a stale entry is served, how long to wait after a failed fetch
    /// before the backend is tried again (default 5 s); calls in between get
    /// the stale value at once. Also the first wait before a failed
    /// refresh-ahead is tried again (doubling each time, until expiry).
    pub stale_retry_after: Duration,
    /// How long after the fetch in flight started a caller that could be
    /// answered with an expired value (one within its stale grace) still
    /// waits for it, before it gets that value instead (default 25 ms): the
    /// first callers wait up to this, later ones not at all. The fetch goes on in the
    /// background under its own retries and deadline; its first success
    /// replaces the value. So nobody waits for a failing or hanging backend
    /// while a usable value exists.
    pub stale_wait: Duration,
    /// Most entries kept; the least recently used goes first (default 1024, at least 1).
    pub capacity: usize,
    /// `false` = keep nothing: every call fetches (concurrent calls still share a fetch).
    pub enabled: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(300),
            min_ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(3600),
            jitter: 0.1,
            refresh_ahead: 0.8,
            stale_grace: StaleGrace::SameAsTtl,
            stale_retry_after: Duration::from_secs(5),
            stale_wait: Duration::from_millis(25),
            capacity: 1024,
            enabled: true,
        }
    }
}

impl CacheConfig {
    /// Sets the default TTL.
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets the bounds every TTL is clamped to.
    #[must_use]
    pub fn with_ttl_bounds(mut self, min: Duration, max: Duration) -> Self {
        self.min_ttl = min;
        self.max_ttl = max;
        self
    }

    /// Sets the jitter fraction (0 for deterministic tests).
    #[must_use]
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// Sets the refresh-ahead fraction.
    #[must_use]
    pub fn with_refresh_ahead(mut self, fraction: f64) -> Self {
        self.refresh_ahead = fraction;
        self
    }

    /// Sets the stale grace.
    #[must_use]
    pub fn with_stale_grace(mut self, grace: StaleGrace) -> Self {
        self.stale_grace = grace;
        self
    }

    /// Sets how long stale serving waits before trying the backend again.
    #[must_use]
    pub fn with_stale_retry_after(mut self, wait: Duration) -> Self {
        self.stale_retry_after = wait;
        self
    }

    /// Sets how long a caller holding a stale alternative waits for a fetch.
    #[must_use]
    pub fn with_stale_wait(mut self, wait: Duration) -> Self {
        self.stale_wait = wait;
        self
    }

    /// Sets the capacity.
    #[must_use]
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Turns caching on or off.
    #[must_use]
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// The same configuration with every value in range.
    pub(crate) fn sanitized(mut self) -> Self {
        if self.min_ttl > self.max_ttl {
            std::mem::swap(&mut self.min_ttl, &mut self.max_ttl);
        }
        self.jitter = if self.jitter.is_nan() {
            0.0
        } else {
            self.jitter.clamp(0.0, 1.0)
        };
        if self.refresh_ahead.is_nan() || self.refresh_ahead <= 0.0 {
            self.refresh_ahead = 1.0;
        }
        self.capacity = self.capacity.max(1);
        self
    }

    /// The lifetime of a new entry: the fetch's TTL (or the default), clamped,
    /// shortened by jitter, then by the backend's expiry. The flag says whether
    /// the backend's expiry decided it.
    pub(crate) fn lifetime(&self, meta: &EntryMeta) -> (Duration, bool) {
        let base = meta
            .ttl
            .unwrap_or(self.ttl)
            .clamp(self.min_ttl, self.max_ttl);
        let ttl = if self.jitter > 0.0 {
            base.mul_f64(1.0 - fastrand::f64() * self.jitter)
        } else {
            base
        };
        match meta.valid_for {
            Some(valid_for) if valid_for < ttl => (valid_for, true),
            _ => (ttl, false),
        }
    }

    /// How long after its fetch an entry of lifetime `ttl` is refreshed
    /// ahead: at the refresh-ahead fraction; for a value the backend said
    /// expires, [`REFRESH_MARGIN`] before that when this is earlier and
    /// still past half its lifetime (so a 15-minute token is renewed with 5
    /// minutes to spare, a token of seconds at the fraction, never at once).
    pub(crate) fn refresh_after(&self, ttl: Duration, backend_limited: bool) -> Duration {
        if self.refresh_ahead >= 1.0 {
            return ttl;
        }
        let ahead = ttl.mul_f64(self.refresh_ahead);
        let margin = ttl.saturating_sub(REFRESH_MARGIN);
        if backend_limited && margin < ahead && margin >= ttl / 2 {
            margin
        } else {
            ahead
        }
    }

    /// How long after its fetch an entry may be served at all, stale
    /// answers included: its lifetime and grace, but never past what the
    /// backend said the value is valid for (a TTL shorter than that leaves
    /// room for a grace that must still end there).
    pub(crate) fn servable_for(
        &self,
        meta: &EntryMeta,
        ttl: Duration,
        backend_limited: bool,
    ) -> Duration {
        let served = ttl.saturating_add(self.grace(ttl, backend_limited));
        meta.valid_for
            .map_or(served, |valid_for| served.min(valid_for))
    }

    /// How long past expiry an entry of this lifetime may be served.
    pub(crate) fn grace(&self, ttl: Duration, backend_limited: bool) -> Duration {
        if backend_limited {
            // The backend said the value stops being valid: never serve it past that.
            return Duration::ZERO;
        }
        match self.stale_grace {
            StaleGrace::Never => Duration::ZERO,
            StaleGrace::SameAsTtl => ttl,
            StaleGrace::For(grace) => grace,
        }
    }
}

/// How long before a backend's expiry a value is refreshed when the
/// refresh-ahead fraction would leave less (see the refresh-ahead rules).
pub const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// What a fetch says about the lifetime of the value it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct EntryMeta {
    /// The TTL to use instead of the configured default (still clamped and jittered).
    pub ttl: Option<Duration>,
    /// How long the backend says the value stays valid; shortens the TTL, never lengthens it.
    pub valid_for: Option<Duration>,
    /// The value's whole remaining life when `valid_for` is only its usable
    /// part: refresh ahead is reckoned from it (never past the expiry).
    pub lifetime: Option<Duration>,
}

impl EntryMeta {
    /// Sets the TTL.
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Sets the backend's validity.
    #[must_use]
    pub fn with_valid_for(mut self, valid_for: Duration) -> Self {
        self.valid_for = Some(valid_for);
        self
    }

    /// Sets the whole remaining life (see [`Self::lifetime`]).
    #[must_use]
    pub fn with_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = Some(lifetime);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn ttl_is_clamped_then_shortened_by_the_backend() {
        let config = CacheConfig::default().with_jitter(0.0).sanitized();
        assert_eq!(config.lifetime(&EntryMeta::default()), (S(300), false));
        assert_eq!(
            config.lifetime(&EntryMeta::default().with_ttl(S(5))),
            (S(60), false)
        );
        assert_eq!(
            config.lifetime(&EntryMeta::default().with_ttl(S(99_999))),
            (S(3600), false)
        );
        assert_eq!(
            config.lifetime(&EntryMeta::default().with_valid_for(S(10))),
            (S(10), true)
        );
        assert_eq!(
            config.lifetime(&EntryMeta::default().with_valid_for(S(900))),
            (S(300), false)
        );
    }

    #[test]
    fn out_of_range_values_are_brought_into_range() {
        let config = CacheConfig::default()
            .with_ttl_bounds(S(100), S(10))
            .with_jitter(f64::NAN)
            .with_refresh_ahead(-1.0)
            .with_capacity(0)
            .sanitized();
        assert_eq!((config.min_ttl, config.max_ttl), (S(10), S(100)));
        assert_eq!(config.jitter, 0.0);
        assert_eq!(config.refresh_ahead, 1.0);
        assert_eq!(config.capacity, 1);
    }

    #[test]
    fn grace_never_outlives_a_backend_expiry() {
        let config = CacheConfig::default();
        assert_eq!(config.grace(S(300), false), S(300));
        assert_eq!(config.grace(S(300), true), Duration::ZERO);
        let never = config.clone().with_stale_grace(StaleGrace::Never);
        assert_eq!(never.grace(S(300), false), Duration::ZERO);
    }
}
