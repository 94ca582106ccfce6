//! `mlflow-secrets-auth agent`: one credential cache for every process on a
//! node, served over a Unix socket (and optionally a loopback port), with
//! status, health and Prometheus metrics. See `docs/agent.md`.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use mlflow_secrets_auth::secrecy::ExposeSecret;
use mlflow_secrets_auth::{
    Credential, EntryState, Env, EnvSource, ErrorKind, SecretError, SecretsAuth, redact,
};
use mlflow_secrets_auth_agent::protocol::{self, SecretAnswer, WireCredential};

use crate::metrics::{Metrics, circuit_name};
use crate::serve::{self, Body, Limits, Listener, Peer, TcpAccess, full, json};

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
        }
    }
}

/// What a TCP caller may ask without the token: liveness only.
const OPEN_PATHS: &[&str] = &[protocol::HEALTH_PATH, protocol::READY_PATH];

/// How many distinct client processes are remembered for the status.
const MAX_CLIENTS_REMEMBERED: usize = 65_536;

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
}

impl AgentState {
    /// The agent for `auth`; its fetches are counted in the metrics.
    pub(crate) fn new(auth: SecretsAuth, version: String) -> Arc<Self> {
        let metrics = Metrics::new(auth.clone());
        let last_fetch_ok = Arc::new(AtomicBool::new(false));
        let observed = metrics.fetch_observer(Arc::clone(&last_fetch_ok));
        auth.observe_fetches(observed);
        Arc::new(Self {
            auth,
            started: Instant::now(),
            metrics,
            last_fetch_ok,
            secrets_served: AtomicU64::new(0),
            clients: Mutex::new(HashSet::new()),
            fingerprints: RandomState::new(),
            version,
        })
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
                    self.invalidate(refused_param(request.uri().query()))
                })
                .await,
            ),
            protocol::STATUS_PATH => (
                protocol::STATUS_PATH,
                self.only(&method, Method::GET, || async { self.status() })
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
                self.only(&method, Method::GET, || async { self.metrics() })
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

    async fn secret(&self, peer: Peer) -> Response<Body> {
        let lease = match self.auth.lease().await {
            Ok(lease) => lease,
            Err(error) => return fetch_failed(&error),
        };
        self.secrets_served.fetch_add(1, Ordering::Relaxed);
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
        let answer = SecretAnswer {
            credential: WireCredential::from(&lease.credential),
            auth_mode: lease.auth_mode.as_str().to_owned(),
            valid_for_secs: valid_for.as_secs_f64(),
            provider: lease.provider.to_owned(),
            fingerprint: Some(fingerprint(&self.fingerprints, &lease.credential)),
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
    async fn invalidate(&self, refused: Option<String>) -> Response<Body> {
        if let Some(refused) = refused {
            match self.auth.lease().await {
                Ok(lease) if fingerprint(&self.fingerprints, &lease.credential) != refused => {
                    tracing::debug!(
                        "the value a client saw refused was replaced already: not fetching again"
                    );
                    return json(StatusCode::OK, r#"{"changed":true}"#.to_owned());
                }
                Ok(_) => {}
                Err(error) => return fetch_failed(&error),
            }
        }
        match self.auth.refetch().await {
            Ok(changed) => json(
                StatusCode::OK,
                serde_json::json!({ "changed": changed }).to_string(),
            ),
            Err(error) => fetch_failed(&error),
        }
    }

    /// Whether a credential is cached (fresh or within the stale grace) or
    /// the last fetch succeeded.
    fn is_ready(&self) -> bool {
        let cached = self
            .auth
            .entry()
            .is_some_and(|e| e.state != EntryState::Expired);
        cached || self.last_fetch_ok.load(Ordering::Relaxed)
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

    fn status(&self) -> Response<Body> {
        let stats = self.auth.stats();
        let providers: Vec<_> = self
            .auth
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
        let entry = self.auth.entry().map(|e| {
            serde_json::json!({
                "age_secs": e.age.as_secs_f64(),
                "remaining_secs": e.remaining.as_secs_f64(),
                "state": entry_state_name(e.state),
            })
        });
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner()).len();
        let body = serde_json::json!({
            "version": self.version,
            "uptime_secs": self.started.elapsed().as_secs_f64(),
            "ready": self.is_ready(),
            "providers": providers,
            "entry": entry,
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
            "fetch_errors": self.metrics.errors_by_kind(),
            "secrets_served": self.secrets_served.load(Ordering::Relaxed),
            "clients": clients,
        });
        json(StatusCode::OK, body.to_string())
    }

    fn metrics(&self) -> Response<Body> {
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
    } = builder;
    let socket = socket.unwrap_or_else(|| serve::default_socket("agent"));
    allow_uid.sort_unstable();
    allow_uid.dedup();
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
    let unix = Listener::unix(&socket, allow_uid).await?;
    let agent = AgentState::new(auth.clone(), version.clone());
    let tick = refresh_tick(&auth);
    let refresher = tokio::spawn(async move {
        loop {
            if let Err(error) = auth.warm().await {
                tracing::warn!(error = %redact(&error.to_string()), "fetch failed");
            }
            tokio::time::sleep(tick).await;
        }
    });
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
