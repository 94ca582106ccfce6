//! The agent's Prometheus metrics (OpenMetrics text, `prometheus-client`):
//! requests by endpoint and status, fetch latency and errors, and on each
//! scrape the cache counters, breaker states, readiness and uptime.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use mlflow_secrets_auth::{FetchEvent, SecretsAuth};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabels {
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BreakerLabels {
    provider: &'static str,
    state: &'static str,
}

/// The metrics of one agent.
pub(crate) struct Metrics {
    auth: SecretsAuth,
    requests: Family<RequestLabels, Counter>,
    fetch_seconds: Family<ProviderLabels, Histogram>,
    fetch_errors: Family<KindLabels, Counter>,
    /// Errors by kind, also for the status endpoint.
    errors: Arc<Mutex<BTreeMap<&'static str, u64>>>,
    /// Connections open now (the servers count them).
    pub(crate) open_connections: Gauge,
    /// Hand-outs by tenant (the names in the tenants file).
    tenant_served: Family<TenantLabels, Counter>,
    /// Failed fetches by tenant.
    tenant_fetch_errors: Family<TenantLabels, Counter>,
    /// Audit records that could not be queued or written.
    pub(crate) audit_failures: Counter,
    /// Audit records held back by a uid's budget (counted on its next).
    pub(crate) audit_suppressed: Counter,
}

const OPEN_CONNECTIONS_HELP: &str = "Client connections open now (a scrape counts its own)";

fn latency_histogram() -> Histogram {
    // 1 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Metrics {
    pub(crate) fn new(auth: SecretsAuth) -> Self {
        Self {
            auth,
            requests: Family::default(),
            fetch_seconds: Family::new_with_constructor(latency_histogram),
            fetch_errors: Family::default(),
            errors: Arc::default(),
            open_connections: Gauge::default(),
            tenant_served: Family::default(),
            tenant_fetch_errors: Family::default(),
            audit_failures: Counter::default(),
            audit_suppressed: Counter::default(),
        }
    }

    /// Counts one hand-out to `tenant`.
    pub(crate) fn tenant_served(&self, tenant: &str) {
        self.tenant_served
            .get_or_create(&TenantLabels {
                tenant: tenant.to_owned(),
            })
            .inc();
    }

    /// The observer of one tenant's fetches: errors counted under its name,
    /// and whether the last one succeeded.
    pub(crate) fn tenant_fetch_observer(
        &self,
        tenant: &str,
        last_ok: Arc<AtomicBool>,
    ) -> impl Fn(&FetchEvent) + Send + Sync + 'static {
        let counted = self.tenant_fetch_errors.clone();
        let labels = TenantLabels {
            tenant: tenant.to_owned(),
        };
        move |event: &FetchEvent| {
            last_ok.store(event.error.is_none(), Ordering::Relaxed);
            if event.error.is_some() {
                counted.get_or_create(&labels).inc();
            }
        }
    }

    /// Counts one answered request.
    pub(crate) fn request(&self, endpoint: &'static str, status: StatusCode) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint,
                status: status.as_u16(),
            })
            .inc();
    }

    /// The observer of the agent's fetches: latency, errors by kind, and
    /// whether the last one succeeded.
    pub(crate) fn fetch_observer(
        &self,
        last_ok: Arc<AtomicBool>,
    ) -> impl Fn(&FetchEvent) + Send + Sync + 'static {
        let seconds = self.fetch_seconds.clone();
        let counted = self.fetch_errors.clone();
        let errors = Arc::clone(&self.errors);
        move |event: &FetchEvent| {
            seconds
                .get_or_create(&ProviderLabels {
                    provider: event.provider,
                })
                .observe(event.took.as_secs_f64());
            last_ok.store(event.error.is_none(), Ordering::Relaxed);
            if let Some(kind) = event.error {
                counted
                    .get_or_create(&KindLabels {
                        kind: kind.as_str(),
                    })
                    .inc();
                *errors
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(kind.as_str())
                    .or_default() += 1;
            }
        }
    }

    /// Fetch errors by kind name.
    pub(crate) fn errors_by_kind(&self) -> BTreeMap<&'static str, u64> {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The OpenMetrics text of a scrape now.
    pub(crate) fn encode(
        &self,
        uptime: Duration,
        clients: usize,
        ready: bool,
    ) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::with_prefix("mlflow_secrets_agent");
        registry.register(
            "requests",
            "Requests answered, by endpoint and HTTP status",
            self.requests.clone(),
        );
        registry.register(
            "fetch_duration_seconds",
            "Time of one fetch from a provider (retries included)",
            self.fetch_seconds.clone(),
        );
        registry.register(
            "fetch_errors",
            "Failed fetches from a provider, by error kind",
            self.fetch_errors.clone(),
        );
        registry.register(
            "open_connections",
            OPEN_CONNECTIONS_HELP,
            self.open_connections.clone(),
        );
        registry.register(
            "tenant_secrets_served",
            "Credentials handed out, by tenant",
            self.tenant_served.clone(),
        );
        registry.register(
            "tenant_fetch_errors",
            "Failed fetches of a tenant's secret, by tenant",
            self.tenant_fetch_errors.clone(),
        );
        registry.register(
            "audit_write_failures",
            "Audit records that could not be queued or written (lost)",
            self.audit_failures.clone(),
        );
        registry.register(
            "audit_suppressed",
            "Audit records held back (one user's burst used up), counted in that user's next record as `suppressed`",
            self.audit_suppressed.clone(),
        );
        let stats = self.auth.stats();
        for (name, help, value) in [
            (
                "cache_hits",
                "Calls answered from a valid entry",
                stats.hits,
            ),
            (
                "cache_misses",
                "Calls that found no valid entry",
                stats.misses,
            ),
            (
                "cache_coalesced",
                "Misses that waited on a fetch in flight",
                stats.coalesced,
            ),
            (
                "cache_stale_served",
                "Calls answered with an expired value during a backend failure",
                stats.stale_served,
            ),
            (
                "cache_fetches",
                "Fetches run (foreground and refresh)",
                stats.fetches,
            ),
            (
                "cache_failures",
                "Foreground fetches that failed",
                stats.failures,
            ),
            (
                "cache_refreshes",
                "Background refreshes ahead of expiry",
                stats.refreshes,
            ),
        ] {
            let counter: Counter = Counter::default();
            counter.inc_by(value);
            registry.register(name, help, counter);
        }
        let breakers: Family<BreakerLabels, Gauge> = Family::default();
        for provider in self.auth.status() {
            if let Some(state) = provider.circuit {
                breakers
                    .get_or_create(&BreakerLabels {
                        provider: provider.name,
                        state: circuit_name(state),
                    })
                    .set(1);
            }
        }
        registry.register(
            "breaker_state",
            "The circuit breaker state of each provider (1 for its current state)",
            breakers,
        );
        let remaining = self.auth.entry().map_or(0.0, |e| e.remaining.as_secs_f64());
        for (name, help, value) in [
            (
                "credential_remaining_seconds",
                "Time until the cached credential expires",
                remaining,
            ),
            (
                "uptime_seconds",
                "Time since the agent started",
                uptime.as_secs_f64(),
            ),
        ] {
            let gauge: Gauge<f64, std::sync::atomic::AtomicU64> = Gauge::default();
            gauge.set(value);
            registry.register(name, help, gauge);
        }
        for (name, help, value) in [
            (
                "ready",
                "1 when a credential is cached or the last fetch succeeded",
                i64::from(ready),
            ),
            (
                "clients",
                "Distinct client processes served",
                i64::try_from(clients).unwrap_or(i64::MAX),
            ),
        ] {
            let gauge: Gauge = Gauge::default();
            gauge.set(value);
            registry.register(name, help, gauge);
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)?;
        Ok(text)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: u16,
}

/// The proxy's metrics. Cheap to clone (clones share the counters).
#[derive(Clone)]
pub(crate) struct ProxyMetrics {
    requests: Family<StatusLabels, Counter>,
    /// The counter of `200` answers (most of them), looked up once.
    ok: Arc<std::sync::OnceLock<Counter>>,
    upstream_seconds: Histogram,
    bytes_in: Counter,
    bytes_out: Counter,
    refetches: Counter,
    /// Connections open now (the server counts them).
    pub(crate) open_connections: Gauge,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            ok: Arc::default(),
            upstream_seconds: latency_histogram(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            refetches: Counter::default(),
            open_connections: Gauge::default(),
        }
    }
}

impl ProxyMetrics {
    /// Counts one answered request.
    pub(crate) fn request(&self, status: StatusCode) {
        if status == StatusCode::OK {
            self.ok
                .get_or_init(|| {
                    self.requests
                        .get_or_create(&StatusLabels { status: 200 })
                        .clone()
                })
                .inc();
            return;
        }
        self.requests
            .get_or_create(&StatusLabels {
                status: status.as_u16(),
            })
            .inc();
    }

    /// Time until the upstream's response headers.
    pub(crate) fn upstream_latency(&self, took: Duration) {
        self.upstream_seconds.observe(took.as_secs_f64());
    }

    /// Request body bytes sent upstream.
    pub(crate) fn bytes_in(&self, n: usize) {
        self.bytes_in.inc_by(n as u64);
    }

    /// Response body bytes sent to clients.
    pub(crate) fn bytes_out(&self, n: usize) {
        self.bytes_out.inc_by(n as u64);
    }

    /// A credential refetched after the upstream refused it.
    pub(crate) fn refetch(&self) {
        self.refetches.inc();
    }

    /// The OpenMetrics text of a scrape now.
    pub(crate) fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::with_prefix("mlflow_secrets_proxy");
        registry.register(
            "requests",
            "Requests answered, by HTTP status",
            self.requests.clone(),
        );
        registry.register(
            "upstream_duration_seconds",
            "Time until the upstream's response headers",
            self.upstream_seconds.clone(),
        );
        registry.register(
            "request_bytes",
            "Request body bytes sent upstream",
            self.bytes_in.clone(),
        );
        registry.register(
            "response_bytes",
            "Response body bytes sent to clients",
            self.bytes_out.clone(),
        );
        registry.register(
            "refetches",
            "Credentials refetched after the upstream refused one",
            self.refetches.clone(),
        );
        registry.register(
            "open_connections",
            OPEN_CONNECTIONS_HELP,
            self.open_connections.clone(),
        );
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)?;
        Ok(text)
    }
}

/// A breaker state's name in status and metrics.
pub(crate) fn circuit_name(state: mlflow_secrets_auth::BreakerState) -> &'static str {
    match state {
        mlflow_secrets_auth::BreakerState::Closed { .. } => "closed",
        mlflow_secrets_auth::BreakerState::Open { .. } => "open",
        mlflow_secrets_auth::BreakerState::HalfOpen => "half-open",
        _ => "isolated",
    }
}
