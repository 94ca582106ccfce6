//! The proxy's HTTP/1.1 client for its one upstream: a pool of kept
//! connections with `TCP_NODELAY`, a connect timeout and a timeout on
//! upstream silence. A request is written and its answer read in the task
//! of the client's request, with no task or channel in between. Requests go
//! out exactly as the proxy built them: the path it checked, the headers it
//! chose, `Host` and the body's framing written here. Nothing is followed,
//! retried or rewritten; a kept connection is used only when it is open and
//! has sent nothing since its last answer.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf as _, Bytes, BytesMut};
use http::{HeaderValue, Request, Response, Uri};
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::proxy::matcher::Matcher;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tower_service::Service as _;
use url::{Host, Url};

use crate::error::{Context as _, bail};
use crate::serve::BoxError;

mod h1;

/// The longest wait for a connection to the upstream (TCP, a proxy's
/// tunnel and the TLS handshake together).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A request body for the upstream: kept whole (small enough to resend) or
/// streamed from the client.
pub(crate) enum Outgoing {
    /// The whole body (`None` once sent).
    Kept(Option<Bytes>),
    /// A body passed on as it arrives, and its length when the client
    /// said it (else it goes chunked).
    Streamed(
        Pin<Box<dyn Body<Data = Bytes, Error = BoxError> + Send>>,
        Option<u64>,
    ),
}

impl Body for Outgoing {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Kept(bytes) => Poll::Ready(
                bytes
                    .take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            Self::Streamed(body, _) => body.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Kept(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
            Self::Streamed(body, _) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Kept(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Streamed(_, Some(length)) => SizeHint::with_exact(*length),
            Self::Streamed(body, None) => body.size_hint(),
        }
    }
}

/// How a new connection reaches the upstream.
enum Dial {
    Direct(HttpConnector),
    /// Through an HTTP proxy's `CONNECT` tunnel (https upstreams only).
    Tunnel(Tunnel<HttpConnector>),
}

/// The client of one upstream origin.
pub(crate) struct Client {
    shared: Arc<Shared>,
}

struct Shared {
    /// `scheme://host:port` for the connector (the port always written).
    address: Uri,
    dial: Dial,
    /// The TLS setup and the name the certificate must carry, for https.
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    /// The `Host` header: `host[:port]`, the port only when not the scheme's.
    host: HeaderValue,
    /// The longest silence of an upstream connection.
    read_timeout: Duration,
    /// Kept connections ready for a request, the most recently used last.
    /// One found closed, or silent for the read timeout, when taken is let go.
    idle: Mutex<Vec<Conn>>,
    max_idle: usize,
}

/// A stream to the upstream: TCP, or TLS over TCP or a proxy's tunnel.
trait Io: AsyncRead + AsyncWrite + Send + Sync + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin> Io for T {}

/// One connection to the upstream, and what was read from it but not yet
/// used.
struct Conn {
    io: Box<dyn Io>,
    buf: BytesMut,
}

/// Room made in a connection's read buffer before a read.
const READ_SIZE: usize = 64 * 1024;

impl Conn {
    /// Reads more into the buffer; `Ok(0)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_SIZE / 16 {
            self.buf.reserve(READ_SIZE);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    /// Whether a kept connection is open, within its read timeout and has
    /// sent nothing since its last answer (an answer nobody asked for is a
    /// desynchronised or hostile upstream). Costs no system call while
    /// nothing has arrived.
    fn usable(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        self.poll_fill(&mut cx).is_pending() && self.buf.is_empty()
    }
}

impl Client {
    /// A client of the origin of `url` (`http` or `https`), trusting the
    /// system's CAs and those of the PEM file `ca`. An https upstream is
    /// reached through the proxy the environment names for it (`HTTPS_PROXY`,
    /// `ALL_PROXY`, unless `NO_PROXY`); a plain-http one never is.
    pub(crate) fn new(
        url: &Url,
        ca: Option<&std::path::Path>,
        read_timeout: Duration,
        max_idle: usize,
    ) -> crate::Result<Self> {
        let host = url.host().context("--upstream has no host")?;
        let port = url
            .port_or_known_default()
            .context("--upstream has no port")?;
        let host_str = url.host_str().unwrap_or_default();
        let address: Uri = format!("{}://{host_str}:{port}", url.scheme())
            .parse()
            .context("--upstream is not a URL")?;
        let host_header = match url.port() {
            Some(port) => format!("{host_str}:{port}"),
            None => host_str.to_owned(),
        };
        let host_header =
            HeaderValue::from_str(&host_header).context("--upstream's host is no header value")?;
        let mut connector = HttpConnector::new();
        connector.enforce_http(false);
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let (tls, dial) = if url.scheme() == "https" {
            let name = match host {
                Host::Domain(domain) => rustls::pki_types::ServerName::try_from(domain.to_owned())
                    .context("--upstream's host is no TLS server name")?,
                Host::Ipv4(ip) => rustls::pki_types::ServerName::from(std::net::IpAddr::V4(ip)),
                Host::Ipv6(ip) => rustls::pki_types::ServerName::from(std::net::IpAddr::V6(ip)),
            };
            let tls = tokio_rustls::TlsConnector::from(Arc::new(tls_config(ca)?));
            (Some((tls, name)), tunnel(&address, connector)?)
        } else {
            // Never through a proxy from HTTP_PROXY: it would read the
            // credential (over https a proxy only tunnels).
            (None, Dial::Direct(connector))
        };
        Ok(Self {
            shared: Arc::new(Shared {
                address,
                dial,
                tls,
                host: host_header,
                read_timeout,
                idle: Mutex::new(Vec::new()),
                max_idle,
            }),
        })
    }

    /// Sends `request` (its path and query; `Host` and the body's framing
    /// are written here) on a kept connection when one is usable, else on a
    /// new one, and reads the answer's head. The request is written and the
    /// answer read in the caller's task: no task, channel or wake-up in
    /// between.
    pub(crate) async fn send(
        &self,
        request: Request<Outgoing>,
    ) -> Result<Response<Answer>, BoxError> {
        let (parts, body) = request.into_parts();
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let sent = h1::Sent::of(&parts.method, body.size_hint().exact());
        let head = h1::request_head(
            &parts.method,
            target,
            &self.shared.host,
            &parts.headers,
            sent,
        );
        let mut conn = match self.shared.checkout() {
            Some(conn) => conn,
            // Boxed: dialling (a tunnel, a TLS handshake) is a large future,
            // and every request's future would carry its size, moved on
            // each call, for a path a kept connection never takes.
            None => Box::pin(self.shared.connect()).await?,
        };
        let mut interim = 0;
        let whole = write_request(&mut conn, head, body, sent, &parts.method, &mut interim).await?;
        let head = read_head(&mut conn, &parts.method, interim).await?;
        let state = match head.framing {
            h1::Framing::Empty | h1::Framing::Length(0) => State::Done,
            h1::Framing::Length(n) => State::Length(n),
            h1::Framing::Chunked => State::Chunked(h1::Chunked::default()),
            h1::Framing::Close => State::Close,
        };
        let mut answer = Response::new(Answer {
            conn: Some(conn),
            state,
            // A request cut short by an early answer leaves the upstream
            // reading a body that never ends.
            reusable: head.reusable && whole,
            shared: Arc::clone(&self.shared),
        });
        *answer.status_mut() = head.status;
        *answer.headers_mut() = head.headers;
        Ok(answer)
    }
}

/// Writes the request head and body; `false` when the upstream began its
/// final answer before all of it went (the rest is not sent). Interim
/// answers skipped on the way are counted in `interim`.
async fn write_request(
    conn: &mut Conn,
    mut head: Vec<u8>,
    body: Outgoing,
    sent: h1::Sent,
    method: &http::Method,
    interim: &mut usize,
) -> Result<bool, BoxError> {
    // A small kept body goes in the same write as the head.
    let mut body = match body {
        Outgoing::Kept(Some(bytes)) if bytes.len() <= READ_SIZE / 4 => {
            head.extend_from_slice(&bytes);
            None
        }
        other => Some(other),
    };
    let chunked = sent == h1::Sent::Chunked;
    let mut owed = match sent {
        h1::Sent::Length(n) => n,
        _ => 0,
    };
    let mut queue = std::collections::VecDeque::from([Bytes::from(head)]);
    std::future::poll_fn(|cx| {
        loop {
            while let Some(front) = queue.front_mut() {
                match Pin::new(&mut conn.io).poll_write(cx, front) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into()));
                    }
                    Poll::Ready(Ok(n)) => {
                        front.advance(n);
                        if front.is_empty() {
                            queue.pop_front();
                        }
                    }
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error.into())),
                    Poll::Pending => return answered_early(conn, cx, method, interim),
                }
            }
            let Some(frames) = body.as_mut() else {
                return match Pin::new(&mut conn.io).poll_flush(cx) {
                    Poll::Ready(result) => Poll::Ready(result.map(|()| true).map_err(Into::into)),
                    Poll::Pending => answered_early(conn, cx, method, interim),
                };
            };
            match Pin::new(frames).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers are not passed on.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    if chunked {
                        queue.push_back(Bytes::from(format!("{:x}\r\n", data.len())));
                        queue.push_back(data);
                        queue.push_back(Bytes::from_static(b"\r\n"));
                    } else {
                        let Some(rest) = owed.checked_sub(data.len() as u64) else {
                            return Poll::Ready(Err(Box::new(ClientBody(
                                "it is longer than its length".into(),
                            ))));
                        };
                        owed = rest;
                        queue.push_back(data);
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    return Poll::Ready(Err(Box::new(ClientBody(error))));
                }
                Poll::Ready(None) => {
                    body = None;
                    if chunked {
                        queue.push_back(Bytes::from_static(b"0\r\n\r\n"));
                    } else if owed != 0 {
                        return Poll::Ready(Err(Box::new(ClientBody(
                            "it is shorter than its length".into(),
                        ))));
                    }
                }
                Poll::Pending => return answered_early(conn, cx, method, interim),
            }
        }
    })
    .await
}

/// The client's request body failed, or did not match its length: the
/// client's doing, not the upstream's.
#[derive(Debug)]
pub(crate) struct ClientBody(BoxError);

impl std::fmt::Display for ClientBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the request body failed: {}", self.0)
    }
}

impl std::error::Error for ClientBody {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// While the request waits (the upstream takes no more, or the client
/// sends no more): whether the upstream has begun its final answer.
/// Interim (1xx) answers, which a server may send unasked, are skipped and
/// the request goes on.
fn answered_early(
    conn: &mut Conn,
    cx: &mut Context<'_>,
    method: &http::Method,
    interim: &mut usize,
) -> Poll<Result<bool, BoxError>> {
    loop {
        let before = conn.buf.len();
        match ready!(conn.poll_fill(cx)) {
            Ok(0) => return Poll::Ready(Err(CLOSED_BEFORE_ANSWER.into())),
            Ok(_) => {}
            Err(error) => return Poll::Ready(Err(error.into())),
        }
        // A head can only be whole once a line has ended. A final head (or
        // one `read_head` refuses) stays in the buffer for it.
        if conn.buf[before..].contains(&b'\n')
            && !matches!(
                after_interim(conn, method, interim)?,
                Ok(h1::Parsed::Partial)
            )
        {
            return Poll::Ready(Ok(false));
        }
        // What is left of a head too long for `read_head`, which refuses it.
        if conn.buf.len() >= h1::MAX_HEAD {
            return Poll::Ready(Ok(false));
        }
    }
}

const CLOSED_BEFORE_ANSWER: &str = "the upstream closed the connection before answering";

/// Reads the final answer's head, skipping interim (1xx) ones (`interim`
/// of them skipped already).
async fn read_head(
    conn: &mut Conn,
    method: &http::Method,
    mut interim: usize,
) -> Result<h1::Head, BoxError> {
    let mut complete = !conn.buf.is_empty();
    loop {
        // A head can only be whole once a line has ended since the last try.
        if complete && let Some(head) = parsed(conn, method, &mut interim)? {
            return Ok(head);
        }
        if conn.buf.len() >= h1::MAX_HEAD {
            return Err(HEAD_TOO_LONG.into());
        }
        let before = conn.buf.len();
        if std::future::poll_fn(|cx| conn.poll_fill(cx)).await? == 0 {
            return Err(CLOSED_BEFORE_ANSWER.into());
        }
        complete = conn.buf[before..].contains(&b'\n');
    }
}

/// The final answer's head at the start of the buffer, taken out of it,
/// after the interim answers before it (counted in `interim`); `None`
/// while it is not whole.
fn parsed(
    conn: &mut Conn,
    method: &http::Method,
    interim: &mut usize,
) -> Result<Option<h1::Head>, BoxError> {
    match after_interim(conn, method, interim)?.map_err(|e| format!("the upstream sent {e}"))? {
        h1::Parsed::Final(length, head) => {
            conn.buf.advance(length);
            Ok(Some(head))
        }
        // Never an interim one: `after_interim` took those.
        h1::Parsed::Partial | h1::Parsed::Interim(_) => Ok(None),
    }
}

/// Takes the interim (1xx) answers at the start of the buffer out of it,
/// counted in `interim` (an error past [`MAX_INTERIM`]), and parses what
/// follows them: a final head (left in the buffer), one not whole yet, or
/// no answer.
fn after_interim(
    conn: &mut Conn,
    method: &http::Method,
    interim: &mut usize,
) -> Result<Result<h1::Parsed, &'static str>, BoxError> {
    loop {
        match h1::parse_answer(&conn.buf, method) {
            Ok(h1::Parsed::Interim(length)) => {
                conn.buf.advance(length);
                *interim += 1;
                if *interim > MAX_INTERIM {
                    return Err(TOO_MANY_INTERIM.into());
                }
            }
            other => return Ok(other),
        }
    }
}

const TOO_MANY_INTERIM: &str = "the upstream sent too many interim answers";
const HEAD_TOO_LONG: &str = "the upstream sent an answer head longer than 64 KiB";

/// Interim (1xx) answers skipped before the final one.
const MAX_INTERIM: usize = 16;

/// The tunnel through the proxy the environment names for `address`, or a
/// direct connection when it names none.
fn tunnel(address: &Uri, connector: HttpConnector) -> crate::Result<Dial> {
    let Some(proxy) = Matcher::from_env().intercept(address) else {
        return Ok(Dial::Direct(connector));
    };
    if proxy.uri().scheme_str() != Some("http") {
        bail!(
            "the proxy HTTPS_PROXY/ALL_PROXY names for the upstream is not an http:// proxy; only http:// proxies tunnel the proxy's upstream (or set NO_PROXY for its host)"
        );
    }
    let mut tunnel = Tunnel::new(proxy.uri().clone(), connector);
    if let Some(auth) = proxy.basic_auth() {
        tunnel = tunnel.with_auth(auth.clone());
    }
    Ok(Dial::Tunnel(tunnel))
}

/// TLS 1.2/1.3 with the platform's verifier, and the CAs of `ca` besides
/// the system's.
fn tls_config(ca: Option<&std::path::Path>) -> crate::Result<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;

    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let verifier = match ca {
        None => rustls_platform_verifier::Verifier::new(Arc::clone(&provider)),
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading --upstream-ca {}", path.display()))?;
            let roots = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| {
                    format!("--upstream-ca {}: not PEM certificates", path.display())
                })?;
            if roots.is_empty() {
                bail!("--upstream-ca {}: no PEM certificate in it", path.display());
            }
            rustls_platform_verifier::Verifier::new_with_extra_roots(roots, Arc::clone(&provider))
        }
    }
    .context("loading the CA certificates for the upstream")?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("setting up TLS for the upstream")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

impl Shared {
    /// A kept connection that is still usable; the others are let go.
    fn checkout(&self) -> Option<Conn> {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some(mut conn) = idle.pop() {
            if conn.usable() {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps `conn` for the next request, when there is room.
    fn keep(&self, conn: Conn) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
    }

    /// A new connection.
    async fn connect(&self) -> Result<Conn, BoxError> {
        tokio::time::timeout(CONNECT_TIMEOUT, async {
            let tcp = match &self.dial {
                Dial::Direct(connector) => connector.clone().call(self.address.clone()).await?,
                Dial::Tunnel(tunnel) => tunnel.clone().call(self.address.clone()).await?,
            }
            .into_inner();
            let io: Box<dyn Io> = match &self.tls {
                None => Box::new(Timed::new(tcp, self.read_timeout)),
                Some((connector, name)) => {
                    let tls = connector.connect(name.clone(), tcp).await?;
                    Box::new(Timed::new(tls, self.read_timeout))
                }
            };
            Ok(Conn {
                io,
                buf: BytesMut::new(),
            })
        })
        .await
        .map_err(|_| "connecting to the upstream timed out")?
    }
}

/// Where an answer's body stands.
enum State {
    /// This many bytes to come.
    Length(u64),
    Chunked(h1::Chunked),
    /// Until the upstream closes.
    Close,
    /// Ended.
    Done,
}

/// The upstream's answer body, read from its connection as the client's
/// side asks for it. At its end the connection goes back to the pool when
/// it can carry another request; dropped before its end, or failed, the
/// connection closes with it.
pub(crate) struct Answer {
    conn: Option<Conn>,
    state: State,
    reusable: bool,
    shared: Arc<Shared>,
}

impl Answer {
    /// Keeps the connection when the answer ended exactly where its
    /// framing said (nothing after it) and may be followed by another.
    fn ended(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.reusable
            && conn.buf.is_empty()
        {
            self.shared.keep(conn);
        }
    }

    fn failed(&mut self, error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
        self.conn = None;
        io::Error::new(io::ErrorKind::InvalidData, error)
    }
}

impl Body for Answer {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut this.state {
                State::Done => {
                    this.ended();
                    return Poll::Ready(None);
                }
                State::Length(left) if !conn.buf.is_empty() => {
                    let n = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(conn.buf.len());
                    *left -= n as u64;
                    if *left == 0 {
                        this.state = State::Done;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(h1::take(&mut conn.buf, n)))));
                }
                State::Chunked(decoder) => match decoder.step(&mut conn.buf) {
                    Ok(h1::Step::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(h1::Step::End) => {
                        this.state = State::Done;
                        continue;
                    }
                    Ok(h1::Step::More) => {}
                    Err(error) => {
                        return Poll::Ready(Some(Err(
                            this.failed(format!("the upstream sent {error}"))
                        )));
                    }
                },
                State::Close if !conn.buf.is_empty() => {
                    let n = conn.buf.len();
                    return Poll::Ready(Some(Ok(Frame::data(h1::take(&mut conn.buf, n)))));
                }
                State::Length(_) | State::Close => {}
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if matches!(this.state, State::Close) => {
                    this.reusable = false;
                    this.state = State::Done;
                }
                Ok(0) => {
                    return Poll::Ready(Some(Err(this.failed(
                        "the upstream closed the connection in the middle of an answer",
                    ))));
                }
                Ok(_) => {}
                Err(error) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(error)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            State::Chunked(_) | State::Close => SizeHint::default(),
        }
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        // Never polled to its end because it had ended (HEAD, 204, length
        // 0, the last frame taken).
        if self.is_end_stream() {
            self.ended();
        }
    }
}

/// A connection to the upstream that fails once the upstream has neither
/// sent nor taken a byte for `limit` while it is waited for: the silence is
/// counted from the last byte either way, so a request written on a kept
/// connection starts it again even when nothing polls the read in between.
struct Timed<S> {
    stream: S,
    limit: Duration,
    /// When a byte last went either way.
    last: tokio::time::Instant,
    /// Made on the first wait; moved later only when it fires before the
    /// deadline.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> Timed<S> {
    fn new(stream: S, limit: Duration) -> Self {
        Self {
            stream,
            limit,
            last: tokio::time::Instant::now(),
            timer: None,
        }
    }

    fn timed<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.last = tokio::time::Instant::now();
            return poll;
        }
        let deadline = self.last + self.limit;
        // The timer is left where it was while bytes move (the deadline only
        // ever moves later) and moved when it fires early: no timer-wheel
        // work on every wait.
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        while timer.as_mut().poll(cx).is_ready() {
            if timer.deadline() >= deadline {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the upstream sent and took nothing for the read timeout",
                )));
            }
            timer.as_mut().reset(deadline);
        }
        Poll::Pending
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Timed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_read(cx, buf);
        this.timed(cx, poll)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Timed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.timed(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.timed(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::time::Instant;

    use super::*;

    /// A connection over an in-memory pipe, and the upstream's end of it.
    fn piped() -> (Conn, tokio::io::DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(256 * 1024);
        let conn = Conn {
            io: Box::new(ours),
            buf: BytesMut::new(),
        };
        (conn, theirs)
    }

    /// A request body whose frames come when the test sends them.
    struct Later(tokio::sync::mpsc::Receiver<Bytes>);

    impl Body for Later {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            self.0
                .poll_recv(cx)
                .map(|next| next.map(|data| Ok(Frame::data(data))))
        }
    }

    /// Reads from `theirs` until `end` has arrived; all it read.
    async fn read_until(theirs: &mut tokio::io::DuplexStream, end: &[u8]) -> Vec<u8> {
        let mut seen = Vec::new();
        let mut byte = [0u8; 1];
        while !seen.ends_with(end) {
            assert_eq!(theirs.read(&mut byte).await.unwrap(), 1, "{seen:?}");
            seen.push(byte[0]);
        }
        seen
    }

    #[tokio::test]
    async fn an_answer_head_without_line_ends_is_cut_off_at_its_limit() {
        let (mut conn, mut theirs) = piped();
        let upstream = tokio::spawn(async move {
            theirs.write_all(b"HTTP/1.1 200 OK\r\nx: ").await.unwrap();
            // Never a line end: only the limit ends this head.
            let endless = vec![b'a'; 16 * 1024];
            while theirs.write_all(&endless).await.is_ok() {}
        });
        let error = read_head(&mut conn, &http::Method::GET, 0)
            .await
            .unwrap_err();
        assert_eq!(error.to_string(), HEAD_TOO_LONG);
        assert!(
            conn.buf.len() < h1::MAX_HEAD + READ_SIZE,
            "{}",
            conn.buf.len()
        );
        drop(conn);
        upstream.await.unwrap();
    }

    // Paused: the clock moves only once every task waits, so the interim
    // answers are read while the body's second frame is still to come.
    #[tokio::test(start_paused = true)]
    async fn interim_answers_while_the_body_streams_are_skipped_and_the_body_goes_on() {
        let (mut conn, mut theirs) = piped();
        let (more, frames) = tokio::sync::mpsc::channel(1);
        let (sent_interim, interim_sent) = tokio::sync::oneshot::channel();
        let upstream = tokio::spawn(async move {
            let head = read_until(&mut theirs, b"\r\n\r\n").await;
            let first = read_until(&mut theirs, b"hello\r\n").await;
            // Unasked, while the body is still to come: more than a head's
            // limit at once, each within it.
            let hints = format!("link: </{}.css>; rel=preload\r\n", "x".repeat(500)).repeat(80);
            let interim = format!(
                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n{hints}\r\nHTTP/1.1 103 Early Hints\r\n{hints}\r\nHTTP/1.1 102 Processing\r\n\r\n"
            );
            assert!(interim.len() > h1::MAX_HEAD);
            theirs.write_all(interim.as_bytes()).await.unwrap();
            sent_interim.send(()).unwrap();
            let rest = read_until(&mut theirs, b"0\r\n\r\n").await;
            theirs
                .write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
            (head, [first, rest].concat())
        });
        let client = tokio::spawn(async move {
            more.send(Bytes::from("hello")).await.unwrap();
            interim_sent.await.unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
            more.send(Bytes::from(", world")).await.unwrap();
        });
        let head = h1::request_head(
            &http::Method::PUT,
            "/artifact",
            &HeaderValue::from_static("up"),
            &http::HeaderMap::new(),
            h1::Sent::Chunked,
        );
        let body = Outgoing::Streamed(Box::pin(Later(frames)), None);
        let mut interim = 0;
        let whole = write_request(
            &mut conn,
            head,
            body,
            h1::Sent::Chunked,
            &http::Method::PUT,
            &mut interim,
        )
        .await
        .unwrap();
        assert!(whole, "the whole body went");
        assert_eq!(interim, 4);
        let answer = read_head(&mut conn, &http::Method::PUT, interim)
            .await
            .unwrap();
        assert_eq!(answer.status, http::StatusCode::CREATED);
        assert_eq!(answer.framing, h1::Framing::Length(2));
        assert_eq!(&conn.buf[..], b"ok");
        client.await.unwrap();
        let (head, body) = upstream.await.unwrap();
        assert!(head.starts_with(b"PUT /artifact HTTP/1.1\r\nhost: up\r\n"));
        assert_eq!(body, b"5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n");
    }

    #[tokio::test(start_paused = true)]
    async fn silence_is_counted_from_the_last_byte_either_way() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let started = Instant::now();
        let (mut reader, mut writer) = tokio::io::split(Timed::new(ours, Duration::from_secs(120)));
        let read = tokio::spawn(async move {
            let mut byte = [0u8; 1];
            let first = reader.read(&mut byte).await.map_err(|e| e.kind());
            let second = reader.read(&mut byte).await.map_err(|e| e.kind());
            (first, second, Instant::now())
        });
        // A byte in after 90 s, one out after 150 s: neither pause is the limit.
        tokio::time::sleep(Duration::from_secs(90)).await;
        theirs.write_all(b"x").await.unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        writer.write_all(b"y").await.unwrap();
        let (first, second, at) = read.await.unwrap();
        assert_eq!(first, Ok(1));
        assert_eq!(second, Err(io::ErrorKind::TimedOut));
        // 120 s after the last byte (the write), not after the read began.
        let silent = at - started;
        assert!(
            silent >= Duration::from_secs(270) && silent < Duration::from_secs(271),
            "{silent:?}"
        );
        let mut out = [0u8; 1];
        theirs.read_exact(&mut out).await.unwrap();
        assert_eq!(&out, b"y");
    }
}
