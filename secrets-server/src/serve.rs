//! What a local server of this command needs besides its routes: a Unix
//! socket in a private directory or a loopback TCP port, the caller checks
//! (peer uid on the socket; token, loopback `Host` and no forwarding headers
//! on TCP), a cap on connections, timeouts against slow clients, and a
//! graceful stop on SIGTERM/SIGINT.

mod connection;

use std::convert::Infallible;
use std::future::Future;
use std::io::{self, Read as _};
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::error::{Context as _, bail};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use mlflow_secrets_auth::secrecy::{ExposeSecret, SecretString};
use mlflow_secrets_auth_agent::protocol;
use prometheus_client::metrics::gauge::Gauge;
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use zeroize::Zeroizing;

/// The longest socket path a client can connect to (`sun_path` less its NUL).
const MAX_SOCKET_PATH: usize = 107;
/// The largest token file read, in bytes.
const MAX_TOKEN_BYTES: u64 = 4096;

/// Told the status of every answer the server gives itself, before any
/// handler (refusals: token, `Host`, forwarding headers, uid, connection cap).
pub(crate) type Refusals = Arc<dyn Fn(StatusCode) + Send + Sync>;

/// What a handler's response body may fail with.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body: a whole buffer or a stream.
pub(crate) type Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// A body of `bytes`.
pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A connection's slot under the cap, counted in the open-connections
/// gauge until the connection ends.
struct Held {
    _slot: OwnedSemaphorePermit,
    open: Gauge,
}

impl Held {
    fn new(slot: OwnedSemaphorePermit, open: &Gauge) -> Self {
        open.inc();
        Self {
            _slot: slot,
            open: open.clone(),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// The largest connection cap (a file descriptor each; far above any
/// process's descriptor limit).
const MAX_CONNECTIONS: usize = 1 << 20;

/// The longest timeout or drain: a day.
const MAX_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

/// Limits of a server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Connections served at once; more get 503.
    pub(crate) max_connections: usize,
    /// Time a client has to send a request's headers (also the keep-alive idle time).
    pub(crate) header_timeout: Duration,
    /// The largest request head, in bytes (and at most 100 headers,
    /// hyper's own limit: naming another makes hyper fill and move a header
    /// array on every request).
    pub(crate) max_head_bytes: usize,
    /// Time a client may take none of a response before its connection is
    /// closed (nginx's `send_timeout`).
    pub(crate) send_timeout: Duration,
    /// Time in-flight requests get to finish after SIGTERM/SIGINT.
    pub(crate) drain: Duration,
}

impl Limits {
    /// Refuses a zero timeout or drain (it would cut every client off), one
    /// above [`MAX_WAIT`] (a deadline past what the clock holds panics) and a
    /// connection cap above [`MAX_CONNECTIONS`].
    pub(crate) fn checked(&self) -> crate::Result<()> {
        if self.max_connections > MAX_CONNECTIONS {
            bail!("the connection cap must be at most {MAX_CONNECTIONS}");
        }
        for (value, what) in [
            (self.header_timeout, "the read timeout"),
            (self.send_timeout, "the send timeout"),
            (self.drain, "the drain time"),
        ] {
            if value.is_zero() {
                bail!("{what} must be longer than zero");
            }
            if value > MAX_WAIT {
                bail!("{what} must be at most {} s", MAX_WAIT.as_secs());
            }
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            header_timeout: Duration::from_secs(10),
            max_head_bytes: 16 * 1024,
            send_timeout: Duration::from_secs(60),
            drain: Duration::from_secs(10),
        }
    }
}

/// Who is calling, as the listener knows it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Peer {
    /// A Unix socket peer (from `SO_PEERCRED`).
    Unix {
        /// Its uid.
        uid: u32,
        /// Its pid, when the kernel says.
        pid: Option<i32>,
    },
    /// A loopback TCP peer (it proves itself with the token).
    Tcp,
}

/// Where a server listens.
#[derive(Debug)]
pub(crate) enum Listener {
    /// A Unix socket; the file is removed on stop.
    Unix {
        listener: UnixListener,
        path: PathBuf,
        /// Whether a uid other than this process's own is served.
        admit: Admit,
    },
    /// A loopback TCP port; every request must carry the token.
    Tcp {
        listener: TcpListener,
        /// What callers must present; `None` only when local auth was
        /// turned off explicitly.
        token: Option<SecretString>,
        /// Whether `Host` must name a loopback address (off only for an
        /// explicitly remote listener).
        loopback_host: bool,
        /// See [`TcpAccess::challenge`].
        challenge: Option<&'static str>,
    },
}

/// Whether a Unix peer of another uid (its uid and pid) is served; it may
/// record the refusals it decides.
#[derive(Clone)]
pub(crate) struct Admit(pub(crate) Arc<dyn Fn(u32, Option<i32>) -> bool + Send + Sync>);

impl std::fmt::Debug for Admit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Admit(..)")
    }
}

/// Who may use a TCP listener.
#[derive(Debug)]
pub(crate) struct TcpAccess {
    /// The token callers present as `Authorization: Bearer`; `None`: anyone
    /// who can connect (an explicit choice, warned about).
    pub(crate) token: Option<SecretString>,
    /// Listening beyond loopback is allowed (with a token only).
    pub(crate) allow_remote: bool,
    /// A path handing out challenges: a request may then prove it knows the
    /// token by signing the challenge (`protocol::signature`) instead of
    /// sending the token (the agent's own clients do).
    pub(crate) challenge: Option<&'static str>,
}

/// The uid this process runs as.
pub(crate) fn own_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// The default socket of a server called `name` (`agent`, `proxy`):
/// `$XDG_RUNTIME_DIR/mlflow-secrets-auth/<name>.sock`, else
/// `/tmp/mlflow-secrets-auth-<uid>/<name>.sock`.
pub fn default_socket(name: &str) -> PathBuf {
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(runtime) => PathBuf::from(runtime).join("mlflow-secrets-auth"),
        None => std::env::temp_dir().join(format!("mlflow-secrets-auth-{}", own_uid())),
    };
    dir.join(format!("{name}.sock"))
}

impl Listener {
    /// Binds the Unix socket at `path`: its directory made (or found) owned
    /// by this uid, a stale socket of a dead server replaced, a live one
    /// left alone (an error). Private (no `allowed_uids`): directory 0700,
    /// socket 0600. Shared: a new directory 0711 (an existing one as its
    /// owner set it), the socket 0666 — the peer uid check is the gate.
    pub(crate) async fn unix(path: &Path, allowed_uids: Vec<u32>) -> crate::Result<Self> {
        let shared = !allowed_uids.is_empty();
        let admit = Admit(Arc::new(move |uid, _| allowed_uids.contains(&uid)));
        Self::unix_admitting(path, shared, admit).await
    }

    /// [`Self::unix`] serving the uids `admit` lets in; `shared`: others may
    /// be let in (the directory 0711, the socket 0666).
    pub(crate) async fn unix_admitting(
        path: &Path,
        shared: bool,
        admit: Admit,
    ) -> crate::Result<Self> {
        use std::os::unix::ffi::OsStrExt;
        // What a client can connect to: sun_path holds 108 bytes with the NUL.
        let raw = path.as_os_str().as_bytes();
        if raw.len() > MAX_SOCKET_PATH {
            bail!(
                "the socket path {} is {} bytes long; clients can reach one of at most {MAX_SOCKET_PATH}",
                path.display(),
                raw.len()
            );
        }
        if raw.ends_with(b"/") || raw.ends_with(b"/.") || raw.ends_with(b"/..") || raw == b"." {
            bail!("the socket path {} names no file", path.display());
        }
        let dir = parent_dir(path);
        own_dir(dir, shared)?;
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                if tokio::net::UnixStream::connect(path).await.is_ok() {
                    bail!(
                        "{} is in use by a running server; stop it or choose another --socket",
                        path.display()
                    );
                }
                std::fs::remove_file(path)
                    .with_context(|| format!("removing the stale socket {}", path.display()))?;
            }
            Ok(_) => bail!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("checking {}", path.display())),
        }
        let mode = if shared { 0o666 } else { 0o600 };
        let listener =
            bind_private(path, mode).with_context(|| format!("binding {}", path.display()))?;
        listener.set_nonblocking(true)?;
        let listener = UnixListener::from_std(listener)?;
        Ok(Self::Unix {
            listener,
            path: path.to_owned(),
            admit,
        })
    }

    /// Binds a TCP address: loopback only (anything else is refused) unless
    /// `access.allow_remote` and a token are both given.
    pub(crate) async fn tcp(addr: SocketAddr, access: TcpAccess) -> crate::Result<Self> {
        let listener = Self::bind_tcp(addr, access.allow_remote && access.token.is_some()).await?;
        Ok(Self::tcp_with(listener, access))
    }

    /// Binds `addr`: loopback only unless `remote_allowed`.
    pub(crate) async fn bind_tcp(
        addr: SocketAddr,
        remote_allowed: bool,
    ) -> crate::Result<TcpListener> {
        loopback_only(addr, remote_allowed)?;
        TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))
    }

    /// Serves a port [`Self::bind_tcp`] bound, with `access`.
    pub(crate) fn tcp_with(listener: TcpListener, access: TcpAccess) -> Self {
        let remote = listener
            .local_addr()
            .map_or(true, |addr| !addr.ip().is_loopback());
        Self::Tcp {
            listener,
            token: access.token,
            loopback_host: !remote,
            challenge: access.challenge,
        }
    }

    /// The bound TCP address (`None` for a Unix socket).
    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Self::Tcp { listener, .. } => listener.local_addr().ok(),
            Self::Unix { .. } => None,
        }
    }

    /// Where it listens, for logs and for clients (`unix:/path` or `http://addr`).
    pub(crate) fn address(&self) -> String {
        match self {
            Self::Unix { path, .. } => format!("unix:{}", path.display()),
            Self::Tcp { listener, .. } => listener
                .local_addr()
                .map_or_else(|_| "http://?".to_owned(), |a| format!("http://{a}")),
        }
    }

    /// Serves `handler` until `stop` completes, then lets in-flight requests
    /// finish within `limits.drain` and removes the socket file. On TCP,
    /// `open_paths` need no token.
    pub(crate) async fn serve<H, F>(
        self,
        limits: Limits,
        open_paths: &'static [&'static str],
        handler: H,
        refused: Refusals,
        open: Gauge,
        stop: impl Future<Output = ()>,
    ) -> crate::Result<()>
    where
        H: Fn(Request<Incoming>, Peer) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        let address = self.address();
        let slots = Arc::new(Semaphore::new(limits.max_connections));
        let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
        let (mut over_cap, mut foreign_uid, mut accept_failed) =
            (Quiet::default(), Quiet::default(), Quiet::default());
        let stopping = Arc::new(connection::Stopping::default());
        let checks = Arc::new(match &self {
            Self::Tcp {
                token,
                loopback_host,
                challenge,
                listener,
            } => {
                let local = listener.local_addr().ok();
                Checks {
                    tcp: true,
                    token: token.clone(),
                    loopback_host: *loopback_host,
                    open_paths,
                    challenge: *challenge,
                    addr: local.map(|a| a.to_string()).unwrap_or_default(),
                    usual_hosts: local.map(usual_hosts).unwrap_or_default(),
                }
            }
            Self::Unix { .. } => Checks {
                tcp: false,
                token: None,
                loopback_host: false,
                open_paths,
                challenge: None,
                addr: String::new(),
                usual_hosts: Vec::new(),
            },
        });
        tokio::pin!(stop);
        // A timer always due sooner than any header timeout hyper starts.
        // The runtime parks until its earliest timer, and a timer started
        // due before that wakes it through a system call. Each answered
        // request starts the next request's header timeout, due sooner than
        // anything pending while a request ran (an upstream's silence
        // limit): without this floor, one more write to the runtime's
        // eventfd and one more wake-up per request.
        let floor_period = (limits.header_timeout / 2).max(Duration::from_millis(1));
        let floor = tokio::time::sleep(floor_period);
        tokio::pin!(floor);
        loop {
            let accepted = tokio::select! {
                () = &mut stop => break,
                () = &mut floor => {
                    floor.as_mut().reset(tokio::time::Instant::now() + floor_period);
                    continue;
                }
                accepted = self.accept(limits.send_timeout) => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    if let Some(not_logged) = accept_failed.due() {
                        tracing::warn!(%error, not_logged, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if let Self::Unix { admit, .. } = &self
                && let Peer::Unix { uid, pid } = peer
                && uid != own_uid()
                && !(admit.0)(uid, pid)
            {
                if let Some(not_logged) = foreign_uid.due() {
                    tracing::warn!(
                        uid,
                        not_logged,
                        "connection from a uid that is not allowed refused"
                    );
                }
                refused(StatusCode::FORBIDDEN);
                refuse_raw(
                    &refusing,
                    stream,
                    StatusCode::FORBIDDEN,
                    "this uid may not use this server",
                );
                continue;
            }
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                if let Some(not_logged) = over_cap.due() {
                    tracing::warn!(
                        limit = limits.max_connections,
                        not_logged,
                        "too many connections: 503"
                    );
                }
                refused(StatusCode::SERVICE_UNAVAILABLE);
                refuse_raw(
                    &refusing,
                    stream,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many connections; retry later",
                );
                continue;
            };
            let handler = handler.clone();
            let checks = Arc::clone(&checks);
            let refused = Arc::clone(&refused);
            // The challenge last given on this connection.
            let nonce = std::sync::Mutex::new(None);
            let service = service_fn(move |request: Request<Incoming>| {
                let handler = handler.clone();
                let refusal = checks.refusal(&request, &nonce);
                if let Some(refusal) = &refusal
                    && !refusal.status().is_success()
                {
                    refused(refusal.status());
                }
                async move {
                    if let Some(refusal) = refusal {
                        return Ok::<_, Infallible>(refusal);
                    }
                    Ok(handler(request, peer).await)
                }
            });
            let connection = http1::Builder::new()
                .timer(connection::HeadTimer::default())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(limits.max_head_bytes)
                .serve_connection(stream, service);
            let stop = stopping.wait();
            let held = Held::new(slot, &open);
            tokio::spawn(async move {
                let mut connection = std::pin::pin!(connection);
                let ended = tokio::select! {
                    biased;
                    ended = connection.as_mut() => ended,
                    () = stop => {
                        connection.as_mut().graceful_shutdown();
                        connection.await
                    }
                };
                if let Err(error) = ended {
                    tracing::debug!(%error, "connection ended early");
                }
                drop(held);
            });
        }
        let path = match &self {
            Self::Unix { path, .. } => Some(path.clone()),
            Self::Tcp { .. } => None,
        };
        drop(self);
        if let Some(path) = &path {
            let _ = std::fs::remove_file(path);
        }
        stopping.stop();
        // Every connection holds a slot until it ends.
        let every_slot = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
        tokio::select! {
            _ = slots.acquire_many(every_slot) => tracing::info!(%address, "stopped: every request finished"),
            () = tokio::time::sleep(limits.drain) => {
                tracing::warn!(%address, drain_s = limits.drain.as_secs_f64(), "stopped: requests still running after the drain time were cut");
            }
        }
        Ok(())
    }

    async fn accept(&self, send_timeout: Duration) -> io::Result<(TokioIo<Stream>, Peer)> {
        match self {
            Self::Unix { listener, .. } => {
                let (stream, _) = listener.accept().await?;
                let cred = stream.peer_cred()?;
                let peer = Peer::Unix {
                    uid: cred.uid(),
                    pid: cred.pid(),
                };
                Ok((
                    TokioIo::new(Stream::new(Io::Unix(stream), send_timeout)),
                    peer,
                ))
            }
            Self::Tcp { listener, .. } => {
                let (stream, _) = listener.accept().await?;
                let _ = stream.set_nodelay(true);
                Ok((
                    TokioIo::new(Stream::new(Io::Tcp(stream), send_timeout)),
                    Peer::Tcp,
                ))
            }
        }
    }
}

/// A connection of either kind, whose writes fail once the client has taken
/// none of the response for `send_timeout`: a client that stops reading
/// would otherwise hold its connection slot (and, in the proxy, an upstream
/// connection) for as long as it likes.
#[derive(Debug)]
pub(crate) struct Stream {
    io: Io,
    /// Armed while a write waits for the client.
    stall: Stall,
}

#[derive(Debug)]
enum Io {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

impl Stream {
    fn new(io: Io, send_timeout: Duration) -> Self {
        Self {
            io,
            stall: Stall::new(send_timeout),
        }
    }

    /// `poll` as it is, except that a write pending for the send timeout fails.
    fn bound<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stall.progress();
            return poll;
        }
        if self.stall.poll_expired(cx) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read none of the response within the send timeout",
            )));
        }
        Poll::Pending
    }
}

/// A deadline for an operation that waits on its peer: armed when it starts
/// waiting, disarmed by progress, so it bounds each pause, not the whole.
#[derive(Debug)]
pub(crate) struct Stall {
    limit: Duration,
    /// Made on the first wait and reset after that (no allocation per pause).
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    armed: bool,
}

impl Stall {
    /// Pauses of up to `limit`.
    pub(crate) fn new(limit: Duration) -> Self {
        Self {
            limit,
            timer: None,
            armed: false,
        }
    }

    /// The operation made progress: the next wait starts a new pause.
    pub(crate) fn progress(&mut self) {
        self.armed = false;
    }

    /// The operation is waiting: `true` once this pause has lasted `limit`
    /// (else `cx` is woken when it will have).
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.armed {
            // The clock is read once a pause, not at every poll.
            let deadline = tokio::time::Instant::now() + self.limit;
            match &mut self.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.armed = true;
        }
        self.timer
            .as_mut()
            .is_some_and(|timer| timer.as_mut().poll(cx).is_ready())
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tcp(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = match &mut this.io {
            Io::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tcp(s) => Pin::new(s).poll_write(cx, buf),
        };
        this.bound(cx, poll)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = match &mut this.io {
            Io::Unix(s) => Pin::new(s).poll_flush(cx),
            Io::Tcp(s) => Pin::new(s).poll_flush(cx),
        };
        this.bound(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tcp(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Refused connections answered at once; more are closed unanswered, so a
/// flood of connections cannot pile up tasks and open sockets.
const MAX_REFUSING: usize = 64;

/// A warning that repeats at most once per [`Quiet::EVERY`].
#[derive(Debug, Default)]
struct Quiet {
    last: Option<tokio::time::Instant>,
    held: u64,
}

impl Quiet {
    const EVERY: Duration = Duration::from_secs(10);

    /// `Some(how many were held back since the last one)` when this one is
    /// to be logged.
    fn due(&mut self) -> Option<u64> {
        let now = tokio::time::Instant::now();
        if self.last.is_some_and(|last| now - last < Self::EVERY) {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }
}

/// Answers a connection that is not served with one short response and
/// closes it (in the background, bounded by two seconds; closed unanswered
/// when [`MAX_REFUSING`] are being answered already).
fn refuse_raw(
    refusing: &Arc<Semaphore>,
    stream: TokioIo<Stream>,
    status: StatusCode,
    reason: &'static str,
) {
    let Ok(permit) = Arc::clone(refusing).try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let mut stream = stream.into_inner();
        // Read the request head first (bounded): a client still writing to
        // a closed socket would see a reset instead of the answer.
        let mut head = Vec::new();
        let read_head = async {
            let mut buf = [0u8; 1024];
            while head.len() < 16 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), read_head).await;
        let body = error_body(reason, None);
        let head = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            body.len()
        );
        let write = async {
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(body.as_bytes()).await?;
            stream.shutdown().await
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
    });
}

/// The JSON error body: `{"error": reason, "kind": kind}`.
pub(crate) fn error_body(reason: &str, kind: Option<&str>) -> String {
    let mut body = serde_json::json!({ "error": reason });
    if let Some(kind) = kind {
        body["kind"] = kind.into();
    }
    body.to_string()
}

/// A JSON response.
pub(crate) fn json(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

/// An error response with a short reason.
pub(crate) fn refusal(status: StatusCode, reason: &str) -> Response<Body> {
    json(status, error_body(reason, None))
}

/// The checks every request passes before its handler.
struct Checks {
    tcp: bool,
    token: Option<SecretString>,
    loopback_host: bool,
    open_paths: &'static [&'static str],
    challenge: Option<&'static str>,
    /// The address served (what a signed request names), on TCP.
    addr: String,
    /// `Host` values clients usually send for `addr` that [`loopback_name`]
    /// passes: matched byte for byte before it parses anything.
    usual_hosts: Vec<String>,
}

impl Checks {
    /// No forwarding headers (this server is never behind a proxy); on TCP a
    /// loopback `Host` (against DNS rebinding) and the token (constant-time
    /// compare) — or a signature of the challenge last given on this
    /// connection (`nonce`, used once) — except on the open paths. The
    /// challenge path itself is answered here.
    fn refusal(
        &self,
        request: &Request<Incoming>,
        nonce: &std::sync::Mutex<Option<String>>,
    ) -> Option<Response<Body>> {
        let headers = request.headers();
        if headers
            .keys()
            .map(HeaderName::as_str)
            .any(|name| same_header(name, "x-forwarded-for") || same_header(name, "forwarded"))
        {
            return Some(refusal(
                StatusCode::BAD_REQUEST,
                "forwarded requests are refused: call this server directly",
            ));
        }
        if !self.tcp {
            return None;
        }
        if self.loopback_host && !loopback_host(headers, &self.usual_hosts) {
            return Some(refusal(
                StatusCode::FORBIDDEN,
                "one Host header, naming a loopback address, is required",
            ));
        }
        let mut nonce = nonce
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.challenge == Some(request.uri().path()) {
            if request.method() != http::Method::GET {
                return Some(refusal(StatusCode::METHOD_NOT_ALLOWED, "GET a challenge"));
            }
            return Some(match random_token() {
                Ok(fresh) => {
                    let response = Response::new(full(fresh.clone()));
                    *nonce = Some(fresh);
                    response
                }
                Err(_) => refusal(StatusCode::INTERNAL_SERVER_ERROR, "no random bytes"),
            });
        }
        // A challenge answers one request, whatever it is.
        let nonce = nonce.take();
        match &self.token {
            Some(token)
                if !self.open_paths.contains(&request.uri().path())
                    && !bearer_matches(headers, token)
                    && !signed(request, token, &self.addr, nonce.as_deref()) =>
            {
                Some(refusal(
                    StatusCode::UNAUTHORIZED,
                    "missing or wrong token (Authorization: Bearer <token>)",
                ))
            }
            _ => None,
        }
    }
}

/// Whether the header names `name` and `wanted` (lower case) are one name
/// as CGI-style servers read them: any byte but a letter or digit read as
/// `_` (lighttpd maps `.`, `+` and `:` so; most map `-`).
pub(crate) fn same_header(name: &str, wanted: &str) -> bool {
    name.len() == wanted.len()
        && name.bytes().zip(wanted.bytes()).all(|(a, b)| {
            a.eq_ignore_ascii_case(&b) || (!a.is_ascii_alphanumeric() && !b.is_ascii_alphanumeric())
        })
}

/// Whether the one `Host` names a loopback address (`127.x`, `[::1]`,
/// `localhost`), any port: one of `usual` (each such a name) or parsed. Two
/// `Host` headers never pass (RFC 9112, section 3.2): a reader of the
/// second would see another host.
fn loopback_host(headers: &HeaderMap, usual: &[String]) -> bool {
    let mut hosts = headers.get_all(header::HOST).iter();
    let (Some(host), None) = (hosts.next(), hosts.next()) else {
        return false;
    };
    usual.iter().any(|u| u.as_bytes() == host.as_bytes()) || host.to_str().is_ok_and(loopback_name)
}

/// The `Host` values clients usually send for a listener at `addr`, those
/// of them [`loopback_name`] passes.
fn usual_hosts(addr: SocketAddr) -> Vec<String> {
    [addr.to_string(), format!("localhost:{}", addr.port())]
        .into_iter()
        .filter(|host| loopback_name(host))
        .collect()
}

/// Whether `host` (a `Host` value) names a loopback address, any port
/// written as digits.
fn loopback_name(host: &str) -> bool {
    let Ok(authority) = host.parse::<http::uri::Authority>() else {
        return false;
    };
    let name = authority.host();
    // Nothing but a port may follow the name (`127.0.0.1:1,evil` has none).
    let port_only = host.strip_prefix(name).is_some_and(|rest| {
        rest.is_empty()
            || rest.strip_prefix(':').is_some_and(|port| {
                (1..=5).contains(&port.len()) && port.bytes().all(|b| b.is_ascii_digit())
            })
    });
    if !port_only {
        return false;
    }
    let name = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether the request carries `Authorization: MSA-HMAC-SHA256 <signature>`,
/// the signature of `nonce` for this server's address `addr` made with the
/// token (compared in constant time).
fn signed(
    request: &Request<Incoming>,
    token: &SecretString,
    addr: &str,
    nonce: Option<&str>,
) -> bool {
    let (Some(nonce), Some(value)) = (nonce, request.headers().get(header::AUTHORIZATION)) else {
        return false;
    };
    let scheme = protocol::SIGNED_SCHEME;
    let value = value.as_bytes();
    let Some(given) = value
        .get(..=scheme.len())
        .filter(|s| {
            s[..scheme.len()].eq_ignore_ascii_case(scheme.as_bytes()) && s[scheme.len()] == b' '
        })
        .map(|_| &value[scheme.len() + 1..])
    else {
        return false;
    };
    let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let expected = protocol::signature(
        token.expose_secret().as_bytes(),
        addr,
        nonce,
        request.method().as_str(),
        target,
    );
    same_secret(given, expected.as_bytes())
}

/// Whether the request carries `Authorization: Bearer <token>` (compared in
/// constant time).
fn bearer_matches(headers: &HeaderMap, token: &SecretString) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let value = value.as_bytes();
    let Some(given) = value
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
        .map(|_| &value[7..])
    else {
        return false;
    };
    same_secret(given, token.expose_secret().as_bytes())
}

/// Whether `given` is `secret`, in a time that depends on their lengths
/// only: the differences of every byte pair are folded together (no branch
/// on a byte) and the fold is judged once, in constant time.
fn same_secret(given: &[u8], secret: &[u8]) -> bool {
    let differences = given
        .iter()
        .zip(secret)
        .fold(0u8, |folded, (a, b)| folded | (a ^ b));
    given.len() == secret.len() && bool::from(differences.ct_eq(&0))
}

/// Makes the directory of a socket or token file, or checks an existing one
/// — never changing the modes of a directory this program did not make.
/// Made: `0700` (private) or `0711` (shared: others may reach the socket, not
/// list the directory). Existing: it must be a directory (not a symlink)
/// owned by this uid or by root, and if other users may write in it, sticky
/// (`/tmp`) or root's (a pod's `emptyDir`, `0777`: another user there could
/// remove our files, never read them or stand in for them, since our files
/// are private and clients check the server's uid); anything else is refused.
pub(crate) fn own_dir(dir: &Path, shared: bool) -> crate::Result<()> {
    let mode = if shared { 0o711 } else { 0o700 };
    match std::fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {
            // The umask may have taken bits away: set them on the directory
            // made, never on a symlink or another user's directory put in
            // its place since.
            let made = open_dir(rustix::fs::CWD, dir)
                .with_context(|| format!("opening {}", dir.display()))?;
            if rustix::fs::fstat(&made).map_err(io::Error::from)?.st_uid != own_uid() {
                bail!("{} was replaced right after it was made", dir.display());
            }
            rustix::fs::fchmod(&made, rustix::fs::Mode::from_raw_mode(mode))
                .with_context(|| format!("making {} {mode:o}", dir.display()))?;
            return Ok(());
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
    }
    let meta =
        std::fs::symlink_metadata(dir).with_context(|| format!("checking {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let (owner, mine) = (meta.uid(), own_uid());
    if owner != mine && owner != 0 {
        bail!(
            "{} belongs to uid {owner}, not to this user ({mine}) or root: its owner could replace what is put there; choose a directory of your own",
            dir.display()
        );
    }
    let others_write = meta.mode() & 0o022 != 0;
    let sticky = meta.mode() & 0o1000 != 0;
    if others_write && !sticky {
        if owner != 0 {
            bail!(
                "{} (mode {:o}) lets other users replace what is put there; remove their write access (chmod go-w) or choose another directory",
                dir.display(),
                meta.mode() & 0o7777
            );
        }
        tracing::warn!(
            dir = %dir.display(),
            mode = format!("{:o}", meta.mode() & 0o7777),
            "other users may remove files in this directory (a pod's emptyDir is so); they cannot read them or stand in for this server"
        );
    }
    Ok(())
}

/// Opens `dir` itself (never a symlink in its place) as a directory.
fn open_dir<Fd: std::os::fd::AsFd>(at: Fd, dir: &Path) -> rustix::io::Result<std::os::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    rustix::fs::openat(
        at,
        dir,
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY,
        Mode::empty(),
    )
}

/// Binds a Unix socket at `path` with `mode`, leaving no moment in which
/// another user of a shared directory could swap the socket for a symlink
/// and have the mode set on the link's target: the socket is bound and
/// its mode set in a fresh private directory (reached through its file
/// descriptor), then renamed into place.
fn bind_private(path: &Path, mode: u32) -> crate::Result<std::os::unix::net::UnixListener> {
    use rustix::fs::{AtFlags, CWD, Mode};
    use std::os::fd::AsRawFd;
    let name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?;
    let parent = open_dir(CWD, parent_dir(path)).map_err(io::Error::from)?;
    let staging = format!(".{}.{}", name.to_string_lossy(), &random_token()?[..16]);
    rustix::fs::mkdirat(&parent, staging.as_str(), Mode::from_raw_mode(0o700))
        .map_err(io::Error::from)?;
    let bound = match open_dir(&parent, Path::new(&staging)) {
        Ok(private) => {
            let bound = (|| {
                let meta = rustix::fs::fstat(&private).map_err(io::Error::from)?;
                if meta.st_uid != own_uid() || meta.st_mode & 0o077 != 0 {
                    bail!("the private directory {staging} was replaced");
                }
                let inside = PathBuf::from(format!("/proc/self/fd/{}/s", private.as_raw_fd()));
                let listener = std::os::unix::net::UnixListener::bind(inside)?;
                rustix::fs::chmodat(&private, "s", Mode::from_raw_mode(mode), AtFlags::empty())
                    .map_err(io::Error::from)?;
                rustix::fs::renameat(&private, "s", &parent, name).map_err(io::Error::from)?;
                Ok(listener)
            })();
            // Gone already when it was renamed into place.
            let _ = rustix::fs::unlinkat(&private, "s", AtFlags::empty());
            bound
        }
        Err(error) => Err(io::Error::from(error).into()),
    };
    let _ = rustix::fs::unlinkat(&parent, staging.as_str(), AtFlags::REMOVEDIR);
    bound
}

/// The directory a file path lives in (`.` for a bare name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The token in `path`, or a new random one written there (mode 0600). An
/// existing file must be a regular file (not a symlink: opened with
/// `O_NOFOLLOW`) owned by this uid and private to it: a token another user
/// made or can read is refused, since whoever knows it reads the credential.
pub(crate) fn load_or_make_token(path: &Path) -> crate::Result<SecretString> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => {
            let mut file = std::fs::File::from(fd);
            let meta = file
                .metadata()
                .with_context(|| format!("checking the token file {}", path.display()))?;
            if !meta.is_file() {
                bail!("the token file {} is not a regular file", path.display());
            }
            if meta.uid() != own_uid() {
                bail!(
                    "the token file {} belongs to uid {}, not to this user ({}); remove it, or let its owner run this server",
                    path.display(),
                    meta.uid(),
                    own_uid()
                );
            }
            if meta.mode() & 0o077 != 0 {
                bail!(
                    "the token file {} is open to other users (mode {:o}); chmod 600 it",
                    path.display(),
                    meta.mode() & 0o777
                );
            }
            let mut text = Zeroizing::new(String::new());
            io::Read::take(&mut file, MAX_TOKEN_BYTES + 1)
                .read_to_string(&mut text)
                .with_context(|| format!("reading the token file {}", path.display()))?;
            let token = text.trim();
            if text.len() as u64 > MAX_TOKEN_BYTES {
                bail!(
                    "the token file {} is longer than {MAX_TOKEN_BYTES} bytes",
                    path.display()
                );
            }
            checked_token(token, &format!("the token in {}", path.display()))?;
            Ok(token.into())
        }
        Err(rustix::io::Errno::NOENT) => {
            let token = random_token()?;
            // `create_new` (O_EXCL) never follows a symlink planted there.
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("creating the token file {}", path.display()))?;
            io::Write::write_all(&mut file, token.as_bytes())?;
            tracing::info!(path = %path.display(), "new token written");
            Ok(token.into())
        }
        Err(rustix::io::Errno::LOOP) => bail!(
            "the token file {} is a symbolic link; refusing to follow it",
            path.display()
        ),
        Err(e) => Err(io::Error::from(e))
            .with_context(|| format!("reading the token file {}", path.display())),
    }
}

/// `token` when it is one clients can send: 16 characters or more, within
/// [`MAX_TOKEN_BYTES`], visible ASCII only (it travels in a header); else an
/// error about `what` that never shows it.
pub(crate) fn checked_token(token: &str, what: &str) -> crate::Result<()> {
    if token.len() < 16 {
        bail!("{what} is shorter than 16 characters");
    }
    if token.len() as u64 > MAX_TOKEN_BYTES {
        bail!("{what} is longer than {MAX_TOKEN_BYTES} bytes");
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        bail!("{what} holds a character other than visible ASCII");
    }
    Ok(())
}

/// Refuses `addr` unless it is loopback or remote clients are allowed.
pub(crate) fn loopback_only(addr: SocketAddr, remote_allowed: bool) -> crate::Result<()> {
    if !addr.ip().is_loopback() && !remote_allowed {
        bail!(
            "--listen {addr}: only loopback addresses (127.0.0.0/8, ::1) are allowed; use a Unix socket to serve other containers of a pod"
        );
    }
    Ok(())
}

/// A new random token: 32 bytes from the OS, as 64 hex characters.
pub fn random_token() -> crate::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| io::Error::other(format!("reading random bytes for the token: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Completes on SIGTERM or SIGINT.
pub async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn only_loopback_hosts_pass() {
        for good in [
            "127.0.0.1:8765",
            "localhost",
            "LOCALHOST:1",
            "[::1]:9",
            "127.1.2.3",
        ] {
            assert!(loopback_host(&headers(&[("host", good)]), &[]), "{good}");
        }
        for bad in [
            "evil.example:8765",
            "10.0.0.1",
            "127.0.0.1.nip.io",
            "",
            "[::2]:1",
            "localhost.evil",
            "127.0.0.1:1,evil",
            "localhost:+80",
            "localhost:",
            "localhost:123456",
            "user@localhost",
            "[::1]x",
        ] {
            for usual in [&[][..], &["127.0.0.1:8765".into(), "localhost:8765".into()]] {
                assert!(!loopback_host(&headers(&[("host", bad)]), usual), "{bad}");
            }
        }
        assert!(!loopback_host(&HeaderMap::new(), &[]));
        // Two Host headers, loopback first or both: refused.
        for second in ["evil.example", "localhost"] {
            let mut two = headers(&[("host", "localhost")]);
            two.append(header::HOST, http::HeaderValue::from_static(second));
            assert!(!loopback_host(&two, &["localhost".into()]), "{second}");
        }
        // Only loopback names are matched byte for byte.
        let usual = |addr: &str| usual_hosts(addr.parse().unwrap());
        assert_eq!(
            usual("127.0.0.1:8765"),
            ["127.0.0.1:8765", "localhost:8765"]
        );
        assert_eq!(usual("[::1]:9"), ["[::1]:9", "localhost:9"]);
        assert_eq!(usual("0.0.0.0:8765"), ["localhost:8765"]);
        assert_eq!(usual("10.0.0.1:80"), ["localhost:80"]);
    }

    #[test]
    fn the_token_must_match_exactly() {
        let token: SecretString = "0123456789abcdef".into();
        assert!(bearer_matches(
            &headers(&[("authorization", "Bearer 0123456789abcdef")]),
            &token
        ));
        assert!(bearer_matches(
            &headers(&[("authorization", "bearer 0123456789abcdef")]),
            &token
        ));
        for bad in [
            "Bearer 0123456789abcde",
            "Bearer 0123456789abcdef0",
            "Basic 0123456789abcdef",
            "Bearer",
            "",
        ] {
            assert!(
                !bearer_matches(&headers(&[("authorization", bad)]), &token),
                "{bad}"
            );
        }
        assert!(!bearer_matches(&HeaderMap::new(), &token));
    }

    #[test]
    fn a_token_file_is_made_private_and_one_open_to_others_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let made = load_or_make_token(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(
            load_or_make_token(&path).unwrap().expose_secret(),
            made.expose_secret()
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = load_or_make_token(&path).unwrap_err().to_string();
        assert!(error.contains("open to other users"), "{error}");
        assert!(!error.contains(made.expose_secret()));
        // A bare file name lives in the current directory.
        assert_eq!(parent_dir(Path::new("proxy.token")), Path::new("."));
    }

    #[tokio::test]
    async fn socket_paths_no_client_could_reach_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let long = dir.path().join("d".repeat(110)).join("agent.sock");
        let error = Listener::unix(&long, Vec::new())
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("bytes long"), "{error}");
        assert!(!long.parent().unwrap().exists(), "nothing was made");
        for bad in ["run/.", "run/", "run/.."] {
            let path = PathBuf::from(format!("{}/{bad}", dir.path().display()));
            let error = Listener::unix(&path, Vec::new())
                .await
                .unwrap_err()
                .to_string();
            assert!(error.contains("names no file"), "{bad}: {error}");
        }
        // A path of the longest usable length is served, and reachable.
        let name_len = MAX_SOCKET_PATH - dir.path().as_os_str().len() - 1;
        let longest = dir.path().join("s".repeat(name_len));
        let listener = Listener::unix(&longest, Vec::new()).await.unwrap();
        assert!(tokio::net::UnixStream::connect(&longest).await.is_ok());
        drop(listener);
    }

    #[test]
    fn a_token_file_behind_a_symlink_or_of_another_user_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let planted = dir.path().join("planted");
        std::fs::write(&planted, "tok-planted-by-someone-else-0123").unwrap();
        std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&planted, &link).unwrap();
        let error = load_or_make_token(&link).unwrap_err().to_string();
        assert!(error.contains("symbolic link"), "{error}");
        assert!(!error.contains("tok-planted"), "{error}");
        // A file another user made: as root, one given to uid 65534; as
        // anyone else, one of root's.
        let theirs = if own_uid() == 0 {
            rustix::fs::chown(&planted, Some(rustix::fs::Uid::from_raw(65534)), None).unwrap();
            planted
        } else {
            PathBuf::from("/etc/passwd")
        };
        let owner = std::fs::metadata(&theirs).unwrap().uid();
        let error = load_or_make_token(&theirs).unwrap_err().to_string();
        assert!(
            error.contains(&format!("belongs to uid {owner}")),
            "{error}"
        );
        assert!(!error.contains("tok-planted"), "{error}");
    }

    #[test]
    fn existing_directories_are_checked_and_never_changed() {
        let root = tempfile::tempdir().unwrap();
        let mode = |dir: &Path| std::fs::metadata(dir).unwrap().mode() & 0o7777;
        let made = root.path().join("made");
        own_dir(&made, false).unwrap();
        assert_eq!(mode(&made), 0o700);
        let shared = root.path().join("shared");
        own_dir(&shared, true).unwrap();
        assert_eq!(mode(&shared), 0o711);
        // Existing and acceptable: left exactly as they are.
        for (name, bits) in [("home", 0o755), ("sticky", 0o1777), ("private", 0o700)] {
            let dir = root.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(bits)).unwrap();
            for shared in [false, true] {
                own_dir(&dir, shared).unwrap();
                assert_eq!(mode(&dir), bits, "{name}");
            }
        }
        let link = root.path().join("link");
        std::os::unix::fs::symlink(root.path().join("home"), &link).unwrap();
        let error = own_dir(&link, false).unwrap_err().to_string();
        assert!(error.contains("not a directory"), "{error}");
        // Writable by others, not sticky, not root's: refused, unchanged.
        // (As root every such directory is root's; the agent tests run
        // this case as another uid.)
        if own_uid() != 0 {
            let open = root.path().join("open");
            std::fs::create_dir(&open).unwrap();
            std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
            let error = own_dir(&open, false).unwrap_err().to_string();
            assert!(error.contains("chmod go-w"), "{error}");
            assert_eq!(mode(&open), 0o777);
        } else {
            let theirs = root.path().join("theirs");
            std::fs::create_dir(&theirs).unwrap();
            std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
            rustix::fs::chown(&theirs, Some(rustix::fs::Uid::from_raw(65534)), None).unwrap();
            let error = own_dir(&theirs, false).unwrap_err().to_string();
            assert!(error.contains("belongs to uid 65534"), "{error}");
        }
    }

    const SEND_TIMEOUT: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn a_client_reading_nothing_fails_the_write_after_the_send_timeout() {
        let (ours, _theirs) = tokio::net::UnixStream::pair().unwrap();
        let mut stream = Stream::new(Io::Unix(ours), SEND_TIMEOUT);
        let chunk = vec![0u8; 64 * 1024];
        let started = tokio::time::Instant::now();
        let error = loop {
            if let Err(error) = stream.write_all(&chunk).await {
                break error;
            }
        };
        assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
        let waited = started.elapsed();
        assert!(
            (SEND_TIMEOUT..SEND_TIMEOUT + Duration::from_secs(1)).contains(&waited),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_reading_slowly_gets_the_whole_response() {
        const LEN: usize = 1024 * 1024;
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        // Every 50 s the client reads what has arrived: each pause is under
        // the send timeout, the whole transfer far over it.
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0;
            loop {
                tokio::time::sleep(SEND_TIMEOUT - Duration::from_secs(10)).await;
                theirs.readable().await.unwrap();
                loop {
                    match theirs.try_read(&mut buf) {
                        Ok(0) => return total,
                        Ok(n) => total += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        });
        let started = tokio::time::Instant::now();
        let mut stream = Stream::new(Io::Unix(ours), SEND_TIMEOUT);
        stream.write_all(&vec![1u8; LEN]).await.unwrap();
        stream.shutdown().await.unwrap();
        drop(stream);
        assert_eq!(reader.await.unwrap(), LEN);
        assert!(
            started.elapsed() > SEND_TIMEOUT * 3,
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_repeated_warning_is_logged_once_per_interval_with_a_count() {
        let mut quiet = Quiet::default();
        assert_eq!(quiet.due(), Some(0));
        assert_eq!(quiet.due(), None);
        tokio::time::advance(Quiet::EVERY - Duration::from_millis(1)).await;
        assert_eq!(quiet.due(), None);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(quiet.due(), Some(2));
        assert_eq!(quiet.due(), None);
    }
}
