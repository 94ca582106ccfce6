//! `agent`, `proxy` and `exec --proxy`: flags read into the servers'
//! builders (`mlflow-secrets-auth-server`), a runtime, signals, exit codes.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use mlflow_secrets_auth::SecretsAuth;
use mlflow_secrets_auth::secrecy::SecretString;
use mlflow_secrets_auth_server::{Agent, Proxy, random_token, stop_signal};

use crate::{FAILURE, SUCCESS, version};

/// The agent's options.
#[derive(Debug, clap::Args)]
pub(crate) struct AgentArgs {
    /// The Unix socket to serve (default: $XDG_RUNTIME_DIR/mlflow-secrets-auth/agent.sock,
    /// else /tmp/mlflow-secrets-auth-<uid>/agent.sock). Its directory is made 0700, the socket 0600.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Also serve this loopback TCP address (e.g. 127.0.0.1:8765); callers must send the token.
    #[arg(long, value_name = "ADDR", requires = "token_file")]
    listen: Option<SocketAddr>,
    /// The token TCP callers send as `Authorization: Bearer`; a new one is written (0600) when absent.
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// A uid besides the agent's own that may use the socket (repeatable).
    #[arg(long = "allow-uid", value_name = "UID")]
    allow_uid: Vec<u32>,
    /// Connections served at once; more get 503.
    #[arg(long, value_name = "N", default_value_t = 256)]
    max_connections: usize,
    /// Seconds a client has to send a request's headers (and to keep an
    /// idle connection open); slower clients are cut off.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    read_timeout: f64,
    /// Seconds a client may take none of an answer before its connection is closed.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    send_timeout: f64,
    /// A TOML file mapping Unix users (uids, users, groups) to the secret each
    /// is served ([[tenant]] tables; see docs/agent.md). Read again on SIGHUP.
    #[arg(long, value_name = "FILE", conflicts_with = "listen")]
    tenants: Option<PathBuf>,
    /// Append one JSON line per hand-out and refusal to this file (0600).
    #[arg(long, value_name = "PATH")]
    audit_log: Option<PathBuf>,
    /// Rotate the audit log when it reaches this many MiB.
    #[arg(long, value_name = "MIB", default_value_t = 10, requires = "audit_log")]
    audit_log_max_mb: u64,
    /// Rotated audit logs kept (PATH.1 … PATH.N).
    #[arg(long, value_name = "N", default_value_t = 5, requires = "audit_log")]
    audit_log_keep: u32,
}

/// The proxy's options.
#[derive(Debug, clap::Args)]
pub(crate) struct ProxyArgs {
    /// The MLflow server to forward to; its host must pass MLFLOW_SECRETS_ALLOWED_HOSTS.
    #[arg(long, value_name = "URL")]
    upstream: String,
    /// The TCP address to serve (loopback unless --allow-remote).
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:5000",
        conflicts_with = "socket"
    )]
    listen: SocketAddr,
    /// Serve a Unix socket instead of TCP (the peer uid is checked, no token).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// The local token TCP clients send as `Authorization: Bearer` (MLFLOW_TRACKING_TOKEN);
    /// written (0600) when absent. Default: next to the default agent socket, `proxy.token`.
    #[arg(long, value_name = "PATH")]
    local_token_file: Option<PathBuf>,
    /// Accept TCP clients without the local token: anyone on this machine may
    /// then act with the MLflow credential. Warned about at start.
    #[arg(long)]
    no_local_auth: bool,
    /// Allow a non-loopback --listen address (the local token stays required).
    #[arg(long)]
    allow_remote: bool,
    /// A uid besides the proxy's own that may use its socket (repeatable).
    #[arg(long = "allow-uid", value_name = "UID")]
    allow_uid: Vec<u32>,
    /// A PEM file of CA certificates to trust for the upstream (besides the system's).
    #[arg(long, value_name = "PATH")]
    upstream_ca: Option<PathBuf>,
    /// Connections served at once; more get 503.
    #[arg(long, value_name = "N", default_value_t = 256)]
    max_connections: usize,
    /// Seconds a client has to send a request's headers, the longest pause within its body, and how long an idle connection is kept.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    read_timeout: f64,
    /// Seconds a client may take none of a response before its connection is closed.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    send_timeout: f64,
    /// Seconds in-flight requests get to finish after SIGTERM.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    drain: f64,
}

/// `value` seconds as a duration; zero, negative or not finite is an error naming `flag`.
fn seconds(value: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("{flag} must be a positive number of seconds"))
}

/// `mlflow-secrets-auth agent`: serves until SIGTERM/SIGINT.
pub(crate) fn agent(args: AgentArgs) -> anyhow::Result<u8> {
    let auth = Agent::auth_from_env().context("reading the configuration")?;
    let read_timeout = seconds(args.read_timeout, "--read-timeout")?;
    let send_timeout = seconds(args.send_timeout, "--send-timeout")?;
    let mut agent = Agent::builder(auth)
        .max_connections(args.max_connections)
        .read_timeout(read_timeout)
        .send_timeout(send_timeout)
        .version(version());
    if let Some(socket) = args.socket {
        agent = agent.socket(socket);
    }
    if let (Some(addr), Some(file)) = (args.listen, args.token_file) {
        agent = agent.listen(addr, file);
    }
    for uid in args.allow_uid {
        agent = agent.allow_uid(uid);
    }
    if let Some(file) = args.tenants {
        agent = agent.tenants(file);
    }
    if let Some(path) = args.audit_log {
        agent = agent.audit_log(path).audit_log_rotation(
            args.audit_log_max_mb.saturating_mul(1024 * 1024),
            args.audit_log_keep,
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(agent.serve(stop_signal()))?;
    Ok(SUCCESS)
}

/// The proxy's runtime: one thread. A request's tasks (the client's
/// connection, the upstream's pooled connection, the credential) wake each
/// other on that thread instead of across threads; measured with `wrk` on 2
/// cores against a 2-worker runtime, the 1-connection p50 was a little lower
/// and the 16-connection throughput about a fifth higher.
fn proxy_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// `mlflow-secrets-auth proxy`: serves until SIGTERM/SIGINT (or `/-/quitquitquit`).
pub(crate) fn proxy(args: ProxyArgs) -> anyhow::Result<u8> {
    let read_timeout = seconds(args.read_timeout, "--read-timeout")?;
    let send_timeout = seconds(args.send_timeout, "--send-timeout")?;
    let drain = seconds(args.drain, "--drain")?;
    let auth = SecretsAuth::from_env().context("reading the configuration")?;
    let mut proxy = Proxy::builder(auth, args.upstream)
        .listen(args.listen)
        .allow_remote(args.allow_remote)
        .max_connections(args.max_connections)
        .read_timeout(read_timeout)
        .send_timeout(send_timeout)
        .drain(drain);
    if let Some(socket) = args.socket {
        proxy = proxy.socket(socket);
    }
    if let Some(file) = args.local_token_file {
        proxy = proxy.local_token_file(file);
    }
    if args.no_local_auth {
        proxy = proxy.no_local_auth();
    }
    for uid in args.allow_uid {
        proxy = proxy.allow_uid(uid);
    }
    if let Some(ca) = args.upstream_ca {
        proxy = proxy.upstream_ca(ca);
    }
    proxy_runtime()?.block_on(proxy.serve(stop_signal()))?;
    Ok(SUCCESS)
}

/// `exec --proxy -- CMD`: a proxy on an ephemeral loopback port with a fresh
/// token, CMD run with `MLFLOW_TRACKING_URI` pointing at it and
/// `MLFLOW_TRACKING_TOKEN` set to that token (no real credential in its
/// environment); signals forwarded; CMD's exit code returned.
pub(crate) fn exec_with_proxy(upstream: &str, command: &[OsString]) -> anyhow::Result<u8> {
    let Some((program, args)) = command.split_first() else {
        bail!("no command given after `--`");
    };
    let auth = SecretsAuth::from_env().context("reading the configuration")?;
    let token = random_token()?;
    // One client, CMD: a short read timeout and drain, as before the
    // proxy command's own defaults.
    let proxy = Proxy::builder(auth, upstream)
        .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
        .local_token(SecretString::from(token.clone()))
        .read_timeout(Duration::from_secs(10))
        .drain(Duration::from_secs(10));
    proxy_runtime()?.block_on(async {
        let running = proxy.start().await?;
        let port = running.local_addr().context("the proxy's port")?.port();
        // Caught before CMD exists: a signal from then on is CMD's, never
        // the end of this process with CMD left behind.
        let signals = Signals::new()?;
        // CMD reaches the proxy directly, never through a proxy from
        // HTTP_PROXY (which would read the local token).
        let no_proxy = crate::run::no_proxy_with("127.0.0.1");
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .env("NO_PROXY", &no_proxy)
            .env("no_proxy", &no_proxy)
            .env("MLFLOW_TRACKING_URI", format!("http://127.0.0.1:{port}"))
            .env("MLFLOW_TRACKING_TOKEN", &token)
            .env_remove("MLFLOW_TRACKING_USERNAME")
            .env_remove("MLFLOW_TRACKING_PASSWORD")
            .env_remove("MLFLOW_TRACKING_AUTH")
            .spawn()
            .with_context(|| format!("cannot run {}", program.to_string_lossy()))?;
        drop(token);
        let code = signals.wait_forwarding(&mut child).await?;
        running.stop();
        let _ = running.stopped().await;
        Ok::<u8, anyhow::Error>(code)
    })
}

/// SIGTERM, SIGINT and SIGHUP, caught from the moment this is made.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for `child`, passing the signals on to it; its exit code (128 +
    /// the signal when a signal ended it).
    async fn wait_forwarding(mut self, child: &mut tokio::process::Child) -> anyhow::Result<u8> {
        use std::os::unix::process::ExitStatusExt;
        let pid = child
            .id()
            .and_then(|id| rustix::process::Pid::from_raw(i32::try_from(id).ok()?));
        let status = loop {
            let forwarded = tokio::select! {
                status = child.wait() => break status?,
                _ = self.term.recv() => rustix::process::Signal::TERM,
                _ = self.int.recv() => rustix::process::Signal::INT,
                _ = self.hup.recv() => rustix::process::Signal::HUP,
            };
            if let Some(pid) = pid {
                let _ = rustix::process::kill_process(pid, forwarded);
            }
        };
        Ok(match (status.code(), status.signal()) {
            (Some(code), _) => u8::try_from(code).unwrap_or(FAILURE),
            (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(FAILURE),
            (None, None) => FAILURE,
        })
    }
}
