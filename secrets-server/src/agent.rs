//! `mlflow-secrets-auth agent`: one credential cache for every process on a
//! node, served over a Unix socket (and optionally a loopback port), with
//! status, health and Prometheus metrics. See `docs/agent.md`.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use mlflow_secrets_auth::secrecy::ExposeSecret;
use mlflow_secrets_auth::{
    Credential, EntryState, Env, EnvSource, ErrorKind, ProviderKind, SecretError, SecretsAuth,
    redact,
};
use mlflow_secrets_auth_agent::protocol::{self, SecretAnswer, WireCredential};

use crate::audit::{AuditLog, Record, Rotation};
use crate::error::bail;
use crate::metrics::{Metrics, circuit_name};
use crate::serve::{self, Admit, Body, Limits, Listener, Peer, TcpAccess, full, json};
use crate::tenants::{Tenant, TenantMap, check_secure_path, tenant_auth, tenant_provider};

/// Builds and serves the node agent: one credential cache for every process
/// of a machine, on a Unix socket (peer uids checked) and optionally a
/// loopback TCP port (a token required).
///
/// ```no_run
/// # async fn demo() -> mlflow_secrets_auth_server::Result<()> {
/// use mlflow_secrets_auth_server::Agent;
///
/// let auth = Agent::auth_from_env()?;
/// Agent::builder(auth)
///     .socket("/run/mlflow-secrets-auth/agent.sock")
///     .allow_uid(1000)
///     .serve(mlflow_secrets_auth_server::stop_signal())
///     .await
/// # }
/// ```
#[derive(Debug)]
pub struct AgentBuilder {
    auth: SecretsAuth,
    socket: Option<PathBuf>,
    tcp: Option<(SocketAddr, PathBuf)>,
    allow_uid: Vec<u32>,
    limits: Limits,
    version: String,
    tenants: Option<PathBuf>,
    audit_log: Option<PathBuf>,
    rotation: Rotation,
}

impl AgentBuilder {
    /// The Unix socket to serve (default: `$XDG_RUNTIME_DIR/mlflow-secrets-auth/agent.sock`,
    /// else `/tmp/mlflow-secrets-auth-<uid>/agent.sock`). Its directory is made 0700, the socket 0600.
    #[must_use]
    pub fn socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.socket = Some(path.into());
        self
    }

    /// Also serve this loopback TCP address; callers send the token in
    /// `token_file` as `Authorization: Bearer` (a new one is written, 0600,
    /// when the file is absent).
    #[must_use]
    pub fn listen(mut self, addr: SocketAddr, token_file: impl Into<PathBuf>) -> Self {
        self.tcp = Some((addr, token_file.into()));
        self
    }

    /// A uid besides the agent's own that may use the socket.
    #[must_use]
    pub fn allow_uid(mut self, uid: u32) -> Self {
        self.allow_uid.push(uid);
        self
    }

    /// Serves each Unix user the secret a tenants file maps them to (TOML
    /// `[[tenant]]` tables of `uids`, `users` or `groups` and a `secret`
    /// reference with `{user}` and `{uid}` substituted; see docs/agent.md).
    /// Each tenant's configuration is the agent's process environment with
    /// the provider's secret variable (and `auth_mode`, `ttl_sec`) replaced;
    /// exactly one provider must be enabled. A uid the file maps may connect;
    /// one it does not is refused unless it is the agent's own or allowed.
    /// The file is read again on SIGHUP. Not with [`Self::listen`]: TCP has
    /// no peer uid.
    #[must_use]
    pub fn tenants(mut self, file: impl Into<PathBuf>) -> Self {
        self.tenants = Some(file.into());
        self
    }

    /// Appends one JSON line per hand-out and refusal to `path` (created
    /// 0600, opened `O_APPEND`, rotated at 10 MiB with 5 files kept unless
    /// [`Self::audit_log_rotation`] says otherwise). Records never hold a
    /// value, only its fingerprint; a record that cannot be written is
    /// counted in the metrics and never holds a client up.
    #[must_use]
    pub fn audit_log(mut self, path: impl Into<PathBuf>) -> Self {
        self.audit_log = Some(path.into());
        self
    }

    /// When the audit log is rotated (`max_bytes`, at least 4 KiB) and how
    /// many rotated files (`PATH.1` … `PATH.keep`) are kept.
    #[must_use]
    pub fn audit_log_rotation(mut self, max_bytes: u64, keep: u32) -> Self {
        self.rotation = Rotation {
            max_bytes: max_bytes.max(4096),
            keep,
        };
        self
    }

    /// Connections served at once; more get 503 (default 256).
    #[must_use]
    pub fn max_connections(mut self, n: usize) -> Self {
        self.limits.max_connections = n.max(1);
        self
    }

    /// How long a client has to send a request's headers, and an idle
    /// connection is kept (default 10 s).
    #[must_use]
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.limits.header_timeout = timeout;
        self
    }

    /// How long a client may take none of an answer before its connection
    /// is closed (default 60 s).
    #[must_use]
    pub fn send_timeout(mut self, timeout: Duration) -> Self {
        self.limits.send_timeout = timeout;
        self
    }

    /// The version `/v1/status` reports (default: this crate's).
    #[must_use]
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Serves until `shutdown` completes, then stops accepting and lets
    /// answers in flight finish.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> crate::Result<()> {
        self.limits.checked()?;
        serve_until(self, shutdown).await
    }
}

/// The node agent ([`Agent::builder`]).
#[derive(Debug)]
pub struct Agent(());

/// The environment, without the variable naming an agent: the agent reads
/// the backend itself and must never ask itself.
struct OwnEnv;

impl EnvSource for OwnEnv {
    fn var_os(&self, name: &str) -> Option<std::ffi::OsString> {
        (name != mlflow_secrets_auth_agent::AGENT_VAR)
            .then(|| std::env::var_os(name))
            .flatten()
    }

    fn names(&self) -> Option<Vec<String>> {
        Env::process().names()
    }
}

impl Agent {
    /// The agent's own configuration: the process environment without
    /// `MLFLOW_SECRETS_AGENT` (an agent must never ask itself), read as a
    /// server reads it ([`SecretsAuth::from_source_serving`]).
    pub fn auth_from_env() -> mlflow_secrets_auth::Result<SecretsAuth> {
        SecretsAuth::from_source_serving(&Env::new(&OwnEnv))
    }

    /// An agent serving the credentials of `auth` (see [`Agent::auth_from_env`]).
    pub fn builder(auth: SecretsAuth) -> AgentBuilder {
        AgentBuilder {
            auth,
            socket: None,
            tcp: None,
            allow_uid: Vec::new(),
            limits: Limits {
                max_connections: 256,
                header_timeout: Duration::from_secs(10),
                send_timeout: Duration::from_secs(60),
                ..Limits::default()
            },
            version: env!("CARGO_PKG_VERSION").to_owned(),
            tenants: None,
            audit_log: None,
            rotation: Rotation::default(),
        }
    }
}

/// What a TCP caller may ask without the token: liveness only.
const OPEN_PATHS: &[&str] = &[protocol::HEALTH_PATH, protocol::READY_PATH];

/// How many distinct client processes are remembered for the status.
const MAX_CLIENTS_REMEMBERED: usize = 65_536;

/// One tenant's cache: the agent's configuration with the tenant's secret.
struct TenantEntry {
    tenant: Tenant,
    auth: SecretsAuth,
    last_fetch_ok: Arc<AtomicBool>,
    /// When it was last asked, in seconds since the agent started.
    last_used: AtomicU64,
}

impl TenantEntry {
    fn used(&self, started: Instant) {
        self.last_used
            .store(started.elapsed().as_secs(), Ordering::Relaxed);
    }

    /// Whether no one asked for it in [`TENANT_IDLE`].
    fn idle(&self, started: Instant) -> bool {
        started
            .elapsed()
            .as_secs()
            .saturating_sub(self.last_used.load(Ordering::Relaxed))
            > TENANT_IDLE.as_secs()
    }
}

/// A tenant's cache no one asked for this long is dropped (and made again
/// at its next request), so a user gone for good is not fetched for.
const TENANT_IDLE: Duration = Duration::from_secs(3600);
/// The hand-out records (served, failed, cleared) one uid may have written
/// at once, and then per second.
const AUDIT_BURST: (f64, f64) = (60.0, 1.0);
/// The refusal records one uid may have written at once, and then per
/// second (one per 10 s: a uid in no tenant floods the log no faster).
const REFUSAL_BURST: (f64, f64) = (10.0, 0.1);
/// The uids whose audit budgets are kept at once.
const MAX_AUDITED_UIDS: usize = 4096;

/// One uid's audit records of one kind: a token bucket.
struct Budget {
    /// The burst and the records per second after it.
    rate: (f64, f64),
    tokens: f64,
    at: Instant,
    /// Records held back since the last one written.
    suppressed: u64,
}

impl Budget {
    /// Its tokens at `now`.
    fn tokens(&self, now: Instant) -> f64 {
        let (burst, per_second) = self.rate;
        (self.tokens + now.duration_since(self.at).as_secs_f64() * per_second).min(burst)
    }
}

/// The tenants of a shared agent ([`AgentBuilder::tenants`]): the map read
/// from the file (replaced on SIGHUP) and one cache per secret served.
struct Tenancy {
    kind: ProviderKind,
    map: RwLock<Arc<TenantMap>>,
    entries: Mutex<HashMap<Tenant, Arc<TenantEntry>>>,
}

impl Tenancy {
    fn load(file: &std::path::Path, auth: &SecretsAuth) -> crate::Result<Self> {
        let kind = tenant_provider(auth)?;
        let map = TenantMap::load(file)?;
        if let Some((_, why)) = refused_tenants(&map, kind, auth).into_iter().next() {
            bail!("{why}");
        }
        Ok(Self {
            kind,
            map: RwLock::new(Arc::new(map)),
            entries: Mutex::default(),
        })
    }

    fn map(&self) -> Arc<TenantMap> {
        Arc::clone(&self.map.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Reads the file again; on success the new map serves the next
    /// request and the caches of secrets no longer mapped are dropped.
    fn reload(&self, auth: &SecretsAuth) -> crate::Result<Arc<TenantMap>> {
        let file = self.map().file.clone();
        let mut map = TenantMap::load(&file)?;
        // A tenant that cannot be served is left out, the others applied:
        // a removal always takes effect.
        let refused = refused_tenants(&map, self.kind, auth);
        for (_, why) in &refused {
            tracing::error!(error = %why, "a tenant cannot be served: its uids are refused");
        }
        map.without(&refused.into_iter().map(|(tenant, _)| tenant).collect());
        let map = Arc::new(map);
        let kept: HashSet<&Tenant> = map.tenants().collect();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|tenant, _| kept.contains(tenant));
        *self.map.write().unwrap_or_else(|e| e.into_inner()) = Arc::clone(&map);
        drop(entries);
        Ok(map)
    }

    /// Why `tenant`'s file (file provider) may not be read now, if so.
    fn untrusted(&self, tenant: &Tenant) -> Option<String> {
        (self.kind == ProviderKind::File)
            .then(|| check_secure_path(std::path::Path::new(&tenant.secret)).err())
            .flatten()
    }

    /// Drops the caches no one asked for in [`TENANT_IDLE`].
    fn drop_idle(&self, started: Instant) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, entry| !entry.idle(started));
    }

    fn entries(&self) -> Vec<Arc<TenantEntry>> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

/// The tenants of `map` that cannot be served, and why: a configuration
/// that cannot be built (the agent's environment with the tenant's secret
/// reference), a warning of its own (a TTL out of range), or, for files, a
/// file another user could redirect ([`check_secure_path`]).
fn refused_tenants(
    map: &TenantMap,
    kind: ProviderKind,
    agent: &SecretsAuth,
) -> Vec<(Tenant, String)> {
    let distinct: HashSet<&Tenant> = map.tenants().collect();
    let mut refused = Vec::new();
    for tenant in distinct {
        let at = format!("{}: tenant `{}`", map.place(tenant), tenant.name);
        let why = (|| {
            if kind == ProviderKind::File {
                check_secure_path(std::path::Path::new(&tenant.secret))?;
            }
            let auth = tenant_auth(&OwnEnv, kind, tenant)
                .map_err(|error| redact(&error.to_string()).into_owned())?;
            match auth
                .warnings()
                .iter()
                .find(|w| !agent.warnings().iter().any(|a| a.message() == w.message()))
            {
                Some(warning) => Err(redact(warning.message()).into_owned()),
                None => Ok(()),
            }
        })();
        if let Err(why) = why {
            refused.push((tenant.clone(), format!("{at}: {why}")));
        }
    }
    refused
}

/// Whose configuration answers a request.
enum Served {
    /// The agent's own (its own uid, an allowed uid, a TCP caller).
    Own,
    /// A tenant's.
    Tenant(Arc<TenantEntry>),
}

/// The agent's state, shared by every connection.
pub(crate) struct AgentState {
    auth: SecretsAuth,
    started: Instant,
    metrics: Metrics,
    last_fetch_ok: Arc<AtomicBool>,
    secrets_served: AtomicU64,
    clients: Mutex<HashSet<(u32, i32)>>,
    /// The key of the values' fingerprints (random per process).
    fingerprints: RandomState,
    /// The version the status reports.
    version: String,
    tenancy: Option<Tenancy>,
    audit: Option<AuditLog>,
    /// The uids besides the agent's own served its own configuration.
    allow_uid: Vec<u32>,
    /// Each uid's audit budgets (hand-outs, refusals).
    audit_budgets: Mutex<HashMap<(u32, bool), Budget>>,
}

impl AgentState {
    /// The agent for `auth`; its fetches are counted in the metrics.
    fn new(
        auth: SecretsAuth,
        version: String,
        tenancy: Option<Tenancy>,
        audit: Option<(PathBuf, Rotation)>,
        allow_uid: Vec<u32>,
    ) -> Arc<Self> {
        let metrics = Metrics::new(auth.clone());
        let last_fetch_ok = Arc::new(AtomicBool::new(false));
        let observed = metrics.fetch_observer(Arc::clone(&last_fetch_ok));
        auth.observe_fetches(observed);
        let audit = audit.map(|(path, rotation)| {
            AuditLog::start(path, rotation, metrics.audit_failures.clone())
        });
        Arc::new(Self {
            auth,
            started: Instant::now(),
            metrics,
            last_fetch_ok,
            secrets_served: AtomicU64::new(0),
            clients: Mutex::new(HashSet::new()),
            fingerprints: RandomState::new(),
            version,
            tenancy,
            audit,
            allow_uid,
            audit_budgets: Mutex::default(),
        })
    }

    /// Whose configuration serves `peer`: a mapped uid its tenant's (the
    /// cache made at its first request), the agent's own uid and allowed
    /// ones the agent's own. Asked at every request: a uid a reload took out
    /// of the map is refused on a connection it opened before.
    fn served(&self, peer: Peer) -> Result<Served, Box<Response<Body>>> {
        let (Some(tenancy), Peer::Unix { uid, .. }) = (&self.tenancy, peer) else {
            return Ok(Served::Own);
        };
        // A reload swaps the map and prunes the caches under the caches'
        // lock: a cache is found or added under it, for the map of now.
        let mut built = None;
        loop {
            let mut entries = tenancy.entries.lock().unwrap_or_else(|e| e.into_inner());
            let map = tenancy.map();
            let Some(tenant) = map.get(uid) else {
                drop(entries);
                if uid == serve::own_uid() || self.allow_uid.contains(&uid) {
                    return Ok(Served::Own);
                }
                self.refused(peer, "request", "this uid is in no tenant");
                return Err(Box::new(serve::refusal(
                    StatusCode::FORBIDDEN,
                    "this uid may not use this agent",
                )));
            };
            if let Some(entry) = entries.get(tenant) {
                entry.used(self.started);
                let entry = Arc::clone(entry);
                drop(entries);
                return self.still_trusted(tenancy, entry, peer);
            }
            if let Some(entry) = built
                .take()
                .filter(|e: &Arc<TenantEntry>| e.tenant == *tenant)
            {
                entries.insert(tenant.clone(), Arc::clone(&entry));
                drop(entries);
                return self.still_trusted(tenancy, entry, peer);
            }
            // Made without the lock (a provider's setup may read files),
            // then added if the map still says the same.
            let tenant = tenant.clone();
            drop(entries);
            built = Some(self.tenant_entry(tenancy, tenant, peer)?);
        }
    }

    /// `entry`, unless its file (file provider) is no longer in a place
    /// only root or the agent can change — checked at every request, as
    /// something changed since the file was read would be read next.
    fn still_trusted(
        &self,
        tenancy: &Tenancy,
        entry: Arc<TenantEntry>,
        peer: Peer,
    ) -> Result<Served, Box<Response<Body>>> {
        match tenancy.untrusted(&entry.tenant) {
            None => Ok(Served::Tenant(entry)),
            Some(why) => {
                tracing::error!(tenant = &*entry.tenant.name, error = %why, "a tenant's file is not read");
                let served = Served::Tenant(entry);
                self.audit(peer, "request", &served, Outcome::Failed("config"));
                Err(Box::new(serve::refusal(
                    StatusCode::BAD_GATEWAY,
                    "this tenant's secret file is in a place other users could change; the agent's log says which",
                )))
            }
        }
    }

    /// A new cache for `tenant`, its fetches counted under its name.
    fn tenant_entry(
        &self,
        tenancy: &Tenancy,
        tenant: Tenant,
        peer: Peer,
    ) -> Result<Arc<TenantEntry>, Box<Response<Body>>> {
        let auth = tenant_auth(&OwnEnv, tenancy.kind, &tenant).map_err(|error| {
            tracing::warn!(
                tenant = &*tenant.name,
                error = %redact(&error.to_string()),
                "cannot configure a tenant's secret"
            );
            let entry = Served::Own;
            self.audit(
                peer,
                "request",
                &entry,
                Outcome::Failed(error.kind().as_str()),
            );
            Box::new(fetch_failed(&error))
        })?;
        let last_fetch_ok = Arc::new(AtomicBool::new(false));
        auth.observe_fetches(
            self.metrics
                .tenant_fetch_observer(&tenant.name, Arc::clone(&last_fetch_ok)),
        );
        let entry = Arc::new(TenantEntry {
            tenant,
            auth,
            last_fetch_ok,
            last_used: AtomicU64::new(0),
        });
        entry.used(self.started);
        Ok(entry)
    }

    /// Records a refusal of `peer` ([`Self::audit`]).
    fn refused(&self, peer: Peer, endpoint: &'static str, why: &'static str) {
        self.audit(peer, endpoint, &Served::Own, Outcome::Refused(why));
    }

    /// Whether a record of `uid` may be written now, and how many of its
    /// records of the kind were held back since its last: each uid has a
    /// burst and a rate ([`AUDIT_BURST`], [`REFUSAL_BURST`]), so no one
    /// user's flood (of refusals or of hand-outs) can rotate the others'
    /// records away quickly.
    fn audit_budget(&self, uid: u32, refusal: bool) -> Option<u64> {
        let key = (uid, refusal);
        let rate = if refusal { REFUSAL_BURST } else { AUDIT_BURST };
        let mut budgets = self.audit_budgets.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if budgets.len() >= MAX_AUDITED_UIDS && !budgets.contains_key(&key) {
            // Those full again and holding nothing back are forgotten.
            budgets.retain(|_, b| b.suppressed > 0 || b.tokens(now) < b.rate.0);
            if budgets.len() >= MAX_AUDITED_UIDS {
                return None;
            }
        }
        let budget = budgets.entry(key).or_insert(Budget {
            rate,
            tokens: rate.0,
            at: now,
            suppressed: 0,
        });
        budget.tokens = budget.tokens(now);
        budget.at = now;
        if budget.tokens < 1.0 {
            budget.suppressed += 1;
            return None;
        }
        budget.tokens -= 1.0;
        Some(std::mem::take(&mut budget.suppressed))
    }

    /// Whether `peer` sees the whole agent (status of every tenant, the
    /// metrics, clearing every cache): without tenants anyone admitted,
    /// with tenants the agent's own uid only.
    fn is_admin(&self, peer: Peer) -> bool {
        self.tenancy.is_none() || matches!(peer, Peer::Unix { uid, .. } if uid == serve::own_uid())
    }

    /// Records one hand-out or refusal in the audit log, if there is one.
    fn audit(&self, peer: Peer, endpoint: &'static str, served: &Served, outcome: Outcome) {
        let Some(audit) = &self.audit else {
            return;
        };
        let (uid, pid) = match peer {
            Peer::Unix { uid, pid } => (uid, pid),
            Peer::Tcp => (serve::own_uid(), None),
        };
        let refusal = matches!(outcome, Outcome::Refused(_));
        let Some(suppressed) = self.audit_budget(uid, refusal) else {
            self.metrics.audit_suppressed.inc();
            return;
        };
        let (tenant, secret) = match served {
            Served::Own => (None, None),
            Served::Tenant(entry) => (
                Some(entry.tenant.name.to_string()),
                Some(entry.tenant.secret.clone()),
            ),
        };
        let (outcome, fingerprint, reason) = match outcome {
            Outcome::Served(fingerprint) => ("served", Some(fingerprint), None),
            Outcome::Cleared => ("cleared", None, None),
            Outcome::Failed(kind) => ("failed", None, Some(kind.to_owned())),
            Outcome::Refused(reason) => ("refused", None, Some(reason.to_owned())),
        };
        audit.record(Record {
            uid,
            pid,
            endpoint,
            tenant,
            secret,
            outcome,
            fingerprint,
            reason,
            suppressed,
        });
    }

    /// Whether a Unix peer of another uid is let in: an allowed uid or one
    /// the tenants file maps. A refusal is audited.
    fn admits(&self, uid: u32, pid: Option<i32>) -> bool {
        let mapped = self
            .tenancy
            .as_ref()
            .is_some_and(|t| t.map().get(uid).is_some());
        if self.allow_uid.contains(&uid) || mapped {
            return true;
        }
        self.refused(
            Peer::Unix { uid, pid },
            "connect",
            "this uid may not use this agent",
        );
        false
    }

    /// Answers one request.
    pub(crate) async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        peer: Peer,
    ) -> Response<Body> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let (endpoint, response) = match path.as_str() {
            protocol::SECRET_PATH => (
                protocol::SECRET_PATH,
                self.only(&method, Method::GET, || self.secret(peer)).await,
            ),
            protocol::INVALIDATE_PATH => (
                protocol::INVALIDATE_PATH,
                self.only(&method, Method::POST, || {
                    self.invalidate(peer, refused_param(request.uri().query()))
                })
                .await,
            ),
            protocol::STATUS_PATH => (
                protocol::STATUS_PATH,
                self.only(&method, Method::GET, || async { self.status(peer) })
                    .await,
            ),
            protocol::HEALTH_PATH => (
                protocol::HEALTH_PATH,
                self.only(&method, Method::GET, || async {
                    json(StatusCode::OK, r#"{"status":"ok"}"#.to_owned())
                })
                .await,
            ),
            protocol::READY_PATH => (
                protocol::READY_PATH,
                self.only(&method, Method::GET, || async { self.ready() })
                    .await,
            ),
            protocol::METRICS_PATH => (
                protocol::METRICS_PATH,
                self.only(&method, Method::GET, || async { self.metrics(peer) })
                    .await,
            ),
            _ => (
                "other",
                serve::refusal(StatusCode::NOT_FOUND, "no such endpoint"),
            ),
        };
        self.metrics.request(endpoint, response.status());
        response
    }

    /// Runs `answer` for `wanted`, else 405.
    async fn only<F, Fut>(&self, method: &Method, wanted: Method, answer: F) -> Response<Body>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Response<Body>>,
    {
        if *method == wanted {
            answer().await
        } else {
            let mut response = serve::refusal(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            if let Ok(allow) = header::HeaderValue::from_str(wanted.as_str()) {
                response.headers_mut().insert(header::ALLOW, allow);
            }
            response
        }
    }

    /// The configuration of `served`.
    fn auth_of<'a>(&'a self, served: &'a Served) -> &'a SecretsAuth {
        match served {
            Served::Own => &self.auth,
            Served::Tenant(entry) => &entry.auth,
        }
    }

    async fn secret(&self, peer: Peer) -> Response<Body> {
        let served = match self.served(peer) {
            Ok(served) => served,
            Err(response) => return *response,
        };
        let lease = match self.auth_of(&served).lease().await {
            Ok(lease) => lease,
            Err(error) => {
                self.audit(
                    peer,
                    protocol::SECRET_PATH,
                    &served,
                    Outcome::Failed(error.kind().as_str()),
                );
                return fetch_failed(&error);
            }
        };
        self.secrets_served.fetch_add(1, Ordering::Relaxed);
        if let Served::Tenant(entry) = &served {
            self.metrics.tenant_served(&entry.tenant.name);
        }
        if let Peer::Unix {
            uid,
            pid: Some(pid),
        } = peer
        {
            let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
            if clients.len() < MAX_CLIENTS_REMEMBERED {
                clients.insert((uid, pid));
            }
        }
        // Served stale (expired, within the grace): clients keep it briefly
        // and ask again.
        let valid_for = if lease.valid_for.is_zero() {
            Duration::from_secs(1)
        } else {
            lease.valid_for
        };
        let fingerprint = fingerprint(&self.fingerprints, &lease.credential);
        self.audit(
            peer,
            protocol::SECRET_PATH,
            &served,
            Outcome::Served(fingerprint.clone()),
        );
        let answer = SecretAnswer {
            credential: WireCredential::from(&lease.credential),
            auth_mode: lease.auth_mode.as_str().to_owned(),
            valid_for_secs: valid_for.as_secs_f64(),
            provider: lease.provider.to_owned(),
            fingerprint: Some(fingerprint),
        };
        match serde_json::to_string(&answer) {
            Ok(body) => json(StatusCode::OK, body),
            Err(_) => serve::refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot encode the answer",
            ),
        }
    }

    /// Refetches under the bounded rule; when the client names the value it
    /// saw refused and another one is held already, answers without a fetch.
    /// A tenant clears its own cache; with tenants, the agent's own uid
    /// clears every tenant's too.
    async fn invalidate(&self, peer: Peer, refused: Option<String>) -> Response<Body> {
        let served = match self.served(peer) {
            Ok(served) => served,
            Err(response) => return *response,
        };
        let auth = self.auth_of(&served);
        let outcome = async {
            if let Some(refused) = refused {
                let lease = auth.lease().await?;
                if fingerprint(&self.fingerprints, &lease.credential) != refused {
                    tracing::debug!(
                        "the value a client saw refused was replaced already: not fetching again"
                    );
                    return Ok(true);
                }
            }
            if let (Served::Own, Some(tenancy), true) =
                (&served, &self.tenancy, self.is_admin(peer))
            {
                for entry in tenancy.entries() {
                    entry.auth.invalidate();
                }
            }
            auth.refetch().await
        }
        .await;
        match outcome {
            Ok(changed) => {
                self.audit(peer, protocol::INVALIDATE_PATH, &served, Outcome::Cleared);
                json(
                    StatusCode::OK,
                    serde_json::json!({ "changed": changed }).to_string(),
                )
            }
            Err(error) => {
                self.audit(
                    peer,
                    protocol::INVALIDATE_PATH,
                    &served,
                    Outcome::Failed(error.kind().as_str()),
                );
                fetch_failed(&error)
            }
        }
    }

    /// Whether a credential is cached (fresh or within the stale grace) or
    /// the last fetch succeeded.
    fn is_ready(&self) -> bool {
        cached_or_ok(&self.auth, &self.last_fetch_ok)
    }

    fn ready(&self) -> Response<Body> {
        if self.is_ready() {
            json(StatusCode::OK, r#"{"ready":true}"#.to_owned())
        } else {
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"ready":false,"reason":"no credential cached and the last fetch failed"}"#
                    .to_owned(),
            )
        }
    }

    /// The status: a tenant sees its own cache only; the agent's own uid
    /// (anyone admitted, without tenants) sees everything.
    fn status(&self, peer: Peer) -> Response<Body> {
        let served = match self.served(peer) {
            Ok(served) => served,
            Err(response) => return *response,
        };
        let mut body = match &served {
            Served::Tenant(entry) => {
                let mut body = cache_status(&entry.auth);
                body["ready"] = cached_or_ok(&entry.auth, &entry.last_fetch_ok).into();
                body["tenant"] = (*entry.tenant.name).into();
                body["secret"] = entry.tenant.secret.clone().into();
                body
            }
            Served::Own => {
                let mut body = cache_status(&self.auth);
                body["ready"] = self.is_ready().into();
                body["fetch_errors"] = serde_json::json!(self.metrics.errors_by_kind());
                if self.is_admin(peer) {
                    body["secrets_served"] = self.secrets_served.load(Ordering::Relaxed).into();
                    body["clients"] = self
                        .clients
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .len()
                        .into();
                    if let Some(tenancy) = &self.tenancy {
                        body["tenants"] = self.tenants_status(tenancy);
                    }
                }
                body
            }
        };
        body["version"] = self.version.clone().into();
        body["uptime_secs"] = self.started.elapsed().as_secs_f64().into();
        json(StatusCode::OK, body.to_string())
    }

    /// Every tenant's cache, for the agent's own uid.
    fn tenants_status(&self, tenancy: &Tenancy) -> serde_json::Value {
        let map = tenancy.map();
        let caches: Vec<_> = tenancy
            .entries()
            .iter()
            .map(|entry| {
                serde_json::json!({
                    "tenant": &*entry.tenant.name,
                    "secret": entry.tenant.secret,
                    "ready": cached_or_ok(&entry.auth, &entry.last_fetch_ok),
                    "entry": entry_status(&entry.auth),
                })
            })
            .collect();
        serde_json::json!({
            "file": map.file.display().to_string(),
            "names": map.names.iter().map(|n| &**n).collect::<Vec<_>>(),
            "uids": map.len(),
            "caches": caches,
        })
    }

    fn metrics(&self, peer: Peer) -> Response<Body> {
        if !self.is_admin(peer) {
            self.refused(
                peer,
                protocol::METRICS_PATH,
                "the metrics are the agent's own user's",
            );
            return serve::refusal(
                StatusCode::FORBIDDEN,
                "with tenants, only the agent's own user reads the metrics",
            );
        }
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner()).len();
        match self
            .metrics
            .encode(self.started.elapsed(), clients, self.is_ready())
        {
            Ok(text) => {
                let mut response = Response::new(full(text));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                response
            }
            Err(_) => serve::refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot encode the metrics",
            ),
        }
    }
}

/// What an audit record says happened.
enum Outcome {
    /// A credential handed out (its fingerprint).
    Served(String),
    /// A cache cleared at a client's request.
    Cleared,
    /// The chain could not produce the credential (the error's kind).
    Failed(&'static str),
    /// The request was refused (why).
    Refused(&'static str),
}

/// Whether `auth` holds a usable credential or its last fetch succeeded.
fn cached_or_ok(auth: &SecretsAuth, last_ok: &AtomicBool) -> bool {
    let cached = auth.entry().is_some_and(|e| e.state != EntryState::Expired);
    cached || last_ok.load(Ordering::Relaxed)
}

/// The cached entry of `auth`, for a status.
fn entry_status(auth: &SecretsAuth) -> serde_json::Value {
    auth.entry().map_or(serde_json::Value::Null, |e| {
        serde_json::json!({
            "age_secs": e.age.as_secs_f64(),
            "remaining_secs": e.remaining.as_secs_f64(),
            "state": entry_state_name(e.state),
        })
    })
}

/// The providers, entry and counters of one configuration.
fn cache_status(auth: &SecretsAuth) -> serde_json::Value {
    let stats = auth.stats();
    let providers: Vec<_> = auth
        .status()
        .into_iter()
        .map(|p| {
            serde_json::json!({
                "name": p.name,
                "configured": p.configured,
                "problem": p.problem.map(|m| redact(&m).into_owned()),
                "description": p.description.map(|d| d.to_string()),
                "circuit": p.circuit.map(circuit_name),
                "last_error": p.last_error.map(ErrorKind::as_str),
                "auth_mode": p.settings.map(|s| s.auth_mode.as_str()),
                "ttl_secs": p.settings.map(|s| s.ttl.as_secs_f64()),
            })
        })
        .collect();
    serde_json::json!({
        "providers": providers,
        "entry": entry_status(auth),
        "counters": {
            "hits": stats.hits,
            "misses": stats.misses,
            "coalesced": stats.coalesced,
            "stale_served": stats.stale_served,
            "fetches": stats.fetches,
            "failures": stats.failures,
            "refreshes": stats.refreshes,
            "refresh_failures": stats.refresh_failures,
        },
    })
}

/// The fingerprint of `credential`: a hash under `key` (random per agent
/// process), so it names a value to this agent's clients and tells nothing
/// about it.
fn fingerprint(key: &RandomState, credential: &Credential) -> String {
    let hash = match credential {
        Credential::Token(token) => key.hash_one((0u8, token.expose_secret())),
        Credential::UserPassword { username, password } => {
            key.hash_one((1u8, username.expose_secret(), password.expose_secret()))
        }
    };
    format!("{hash:016x}")
}

/// The `refused` parameter of an invalidate request, when it is a
/// fingerprint this agent could have made.
fn refused_param(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .find_map(|pair| {
            pair.strip_prefix(protocol::REFUSED_PARAM)?
                .strip_prefix('=')
        })
        .filter(|f| f.len() <= protocol::MAX_FINGERPRINT_CHARS)
        .map(str::to_owned)
}

/// The answer when the chain could not produce the credential: 503 for a
/// transient failure (a client fails over), 502 otherwise; the kind named.
fn fetch_failed(error: &SecretError) -> Response<Body> {
    let status = if error.is_transient() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::BAD_GATEWAY
    };
    let reason = redact(&error.to_string()).into_owned();
    json(
        status,
        serve::error_body(&reason, Some(error.kind().as_str())),
    )
}

fn entry_state_name(state: EntryState) -> &'static str {
    match state {
        EntryState::Fresh => "fresh",
        EntryState::Refreshing => "refreshing",
        EntryState::Stale => "stale",
        _ => "expired",
    }
}

/// How often the agent touches its entry so the cache refreshes it ahead of
/// expiry: a quarter of the shortest TTL, between 100 ms and 5 s.
fn refresh_tick(auth: &SecretsAuth) -> Duration {
    (auth.config().ttl_min / 4).clamp(Duration::from_millis(100), Duration::from_secs(5))
}

/// Serves until `stop` completes.
async fn serve_until(builder: AgentBuilder, stop: impl Future<Output = ()>) -> crate::Result<()> {
    let AgentBuilder {
        auth,
        socket,
        tcp,
        mut allow_uid,
        limits,
        version,
        tenants,
        audit_log,
        rotation,
    } = builder;
    let socket = socket.unwrap_or_else(|| serve::default_socket("agent"));
    allow_uid.sort_unstable();
    allow_uid.dedup();
    let tenancy = match &tenants {
        Some(_) if tcp.is_some() => bail!(
            "--tenants cannot be served on a TCP port (--listen): a TCP peer has no uid, so the agent could not tell which tenant asks; serve the Unix socket only"
        ),
        Some(file) => Some(Tenancy::load(file, &auth)?),
        None => None,
    };
    // TCP first: its checks fail before a socket file exists.
    let tcp = match tcp {
        Some((addr, file)) => {
            // Refused before a token file is written for it.
            serve::loopback_only(addr, false)?;
            let access = TcpAccess {
                token: Some({
                    serve::own_dir(serve::parent_dir(&file), false)?;
                    serve::load_or_make_token(&file)?
                }),
                allow_remote: false,
                challenge: Some(protocol::CHALLENGE_PATH),
            };
            Some(Listener::tcp(addr, access).await?)
        }
        None => None,
    };
    let shared = !allow_uid.is_empty() || tenancy.is_some();
    let agent = AgentState::new(
        auth.clone(),
        version.clone(),
        tenancy,
        audit_log.map(|path| (path, rotation)),
        allow_uid,
    );
    let admit = {
        let agent = Arc::downgrade(&agent);
        Admit(Arc::new(move |uid, pid| {
            agent.upgrade().is_some_and(|agent| agent.admits(uid, pid))
        }))
    };
    let unix = Listener::unix_admitting(&socket, shared, admit).await?;
    let tick = refresh_tick(&auth);
    let refresher = {
        let agent = Arc::clone(&agent);
        tokio::spawn(async move {
            loop {
                // Each tenant's cache is refreshed ahead of expiry too, all
                // at once: a backend slow for one never delays another.
                let mut warming = tokio::task::JoinSet::new();
                if let Some(tenancy) = &agent.tenancy {
                    tenancy.drop_idle(agent.started);
                }
                for entry in agent.tenancy.iter().flat_map(Tenancy::entries) {
                    if agent
                        .tenancy
                        .as_ref()
                        .and_then(|t| t.untrusted(&entry.tenant))
                        .is_some()
                    {
                        continue;
                    }
                    warming.spawn(async move {
                        if let Err(error) = entry.auth.warm().await {
                            tracing::warn!(
                                tenant = &*entry.tenant.name,
                                error = %redact(&error.to_string()),
                                "fetch failed"
                            );
                        }
                    });
                }
                if let Err(error) = auth.warm().await {
                    tracing::warn!(error = %redact(&error.to_string()), "fetch failed");
                }
                warming.join_all().await;
                tokio::time::sleep(tick).await;
            }
        })
    };
    let reloader = match &agent.tenancy {
        Some(tenancy) => {
            let names = tenancy.map().names.len();
            tracing::info!(
                file = %tenancy.map().file.display(),
                tenants = names,
                uids = tenancy.map().len(),
                "serving tenants; SIGHUP reads the file again"
            );
            let mut hangups =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
            let agent = Arc::clone(&agent);
            Some(tokio::spawn(async move {
                while hangups.recv().await.is_some() {
                    let Some(tenancy) = &agent.tenancy else {
                        break;
                    };
                    match tenancy.reload(&agent.auth) {
                        Ok(map) => tracing::info!(
                            tenants = map.names.len(),
                            uids = map.len(),
                            "tenants file read again: the new mapping applies"
                        ),
                        Err(error) => tracing::error!(
                            %error,
                            "the tenants file could not be read again: the previous mapping stays"
                        ),
                    }
                }
            }))
        }
        None => None,
    };
    tracing::info!(
        socket = %unix.address(),
        tcp = tcp.as_ref().map(Listener::address).unwrap_or_default(),
        version = version.as_str(),
        "agent listening"
    );
    let (stopped, _) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let handler = {
        let agent = Arc::clone(&agent);
        move |request, peer| Arc::clone(&agent).handle(request, peer)
    };
    let refused: serve::Refusals = {
        let agent = Arc::clone(&agent);
        Arc::new(move |status| agent.metrics.request("refused", status))
    };
    let unix_served = unix.serve(
        limits,
        OPEN_PATHS,
        handler.clone(),
        Arc::clone(&refused),
        agent.metrics.open_connections.clone(),
        wait(stopped.subscribe()),
    );
    let tcp_served = async {
        match tcp {
            Some(tcp) => {
                tcp.serve(
                    limits,
                    OPEN_PATHS,
                    handler,
                    refused,
                    agent.metrics.open_connections.clone(),
                    wait(stopped.subscribe()),
                )
                .await
            }
            None => Ok(()),
        }
    };
    let signal = async {
        stop.await;
        let _ = stopped.send(true);
    };
    let (unix_result, tcp_result, ()) = tokio::join!(unix_served, tcp_served, signal);
    refresher.abort();
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    unix_result.and(tcp_result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_names_one_value_of_one_agent() {
        let key = RandomState::new();
        let print = |text: &str| fingerprint(&key, &Credential::parse(text).unwrap());
        assert_eq!(print("alice:pw-1"), print("alice:pw-1"));
        assert_ne!(print("alice:pw-1"), print("alice:pw-2"));
        assert_ne!(print("tok-a"), print(r#"{"token": "tok-b"}"#));
        // A token is not the user and password its text would split into.
        assert_ne!(print(r#"{"token": "alice:pw-1"}"#), print("alice:pw-1"));
        let other = fingerprint(
            &RandomState::new(),
            &Credential::parse("alice:pw-1").unwrap(),
        );
        assert_ne!(print("alice:pw-1"), other, "another agent, another key");
        assert!(!print("tok-secret-value").contains("secret"));
    }

    #[test]
    fn the_refused_parameter_is_read_and_bounded() {
        assert_eq!(refused_param(Some("refused=00ab")).as_deref(), Some("00ab"));
        assert_eq!(refused_param(Some("x=1&refused=ff")).as_deref(), Some("ff"));
        assert_eq!(refused_param(Some("refusedx=ff")), None);
        assert_eq!(refused_param(Some("")), None);
        assert_eq!(refused_param(None), None);
        let long = format!(
            "refused={}",
            "a".repeat(protocol::MAX_FINGERPRINT_CHARS + 1)
        );
        assert_eq!(refused_param(Some(&long)), None);
    }
}
