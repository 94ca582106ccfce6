//! The proxy's HTTP/1.1 client for its one upstream: a pool of kept
//! connections, each a hyper connection driven by a task of its own, with
//! `TCP_NODELAY`, a connect timeout, and a timeout on upstream silence.
//! Requests go out exactly as the proxy built them: the path it checked,
//! the headers it chose, `Host` set here. Nothing is followed, retried or
//! rewritten, but a request a kept connection never took (it closed in
//! between) is sent on a new one.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri, header};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tower_service::Service as _;
use url::{Host, Url};

use crate::error::{Context as _, bail};
use crate::serve::BoxError;

/// The longest wait for a connection to the upstream (TCP, a proxy's
/// tunnel and the TLS handshake together).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A request body for the upstream: kept whole (small enough to resend) or
/// streamed from the client.
pub(crate) enum Outgoing {
    /// The whole body (`None` once sent).
    Kept(Option<Bytes>),
    /// A body passed on as it arrives.
    Streamed(Pin<Box<dyn Body<Data = Bytes, Error = BoxError> + Send>>),
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
            Self::Streamed(body) => body.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Kept(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
            Self::Streamed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Kept(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Streamed(body) => body.size_hint(),
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
    /// One idle for the read timeout ends itself (its read fails), so none
    /// is kept longer.
    idle: Mutex<Vec<SendRequest<Outgoing>>>,
    max_idle: usize,
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

    /// Sends `request` (origin-form URI) with `Host` set, on a kept
    /// connection when one is ready, else on a new one.
    pub(crate) async fn send(
        &self,
        mut request: Request<Outgoing>,
    ) -> Result<Response<Answer>, BoxError> {
        request
            .headers_mut()
            .insert(header::HOST, self.shared.host.clone());
        if let Some(mut sender) = self.shared.checkout() {
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.answer(response, sender)),
                // Never taken by the connection (it closed in between):
                // nothing reached the upstream, so it goes on a new one.
                Err(mut error) => match error.take_message() {
                    Some(untaken) => request = untaken,
                    None => return Err(error.into_error().into()),
                },
            }
        }
        let mut sender = self.shared.connect().await?;
        let response = sender.send_request(request).await?;
        Ok(self.answer(response, sender))
    }

    fn answer(
        &self,
        response: Response<Incoming>,
        sender: SendRequest<Outgoing>,
    ) -> Response<Answer> {
        response.map(|body| Answer {
            body,
            home: Some((Arc::clone(&self.shared), sender)),
        })
    }
}

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
    /// A kept connection ready for a request; those closed or not ready
    /// are let go.
    fn checkout(&self) -> Option<SendRequest<Outgoing>> {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some(sender) = idle.pop() {
            if sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    /// Keeps `sender` for the next request, when there is room.
    fn keep(&self, sender: SendRequest<Outgoing>) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < self.max_idle {
            idle.push(sender);
        }
    }

    /// Kept once the connection has finished its last exchange; dropped
    /// (so closed) when it cannot take another.
    fn give_back(self: Arc<Self>, mut sender: SendRequest<Outgoing>) {
        if sender.is_ready() {
            self.keep(sender);
        } else if !sender.is_closed()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                if sender.ready().await.is_ok() {
                    self.keep(sender);
                }
            });
        }
    }

    /// A new connection, its hyper task spawned.
    async fn connect(&self) -> Result<SendRequest<Outgoing>, BoxError> {
        tokio::time::timeout(CONNECT_TIMEOUT, async {
            let tcp = match &self.dial {
                Dial::Direct(connector) => connector.clone().call(self.address.clone()).await?,
                Dial::Tunnel(tunnel) => tunnel.clone().call(self.address.clone()).await?,
            }
            .into_inner();
            match &self.tls {
                None => self.handshake(tcp).await,
                Some((connector, name)) => {
                    let tls = connector.connect(name.clone(), tcp).await?;
                    self.handshake(tls).await
                }
            }
        })
        .await
        .map_err(|_| "connecting to the upstream timed out")?
    }

    /// HTTP/1.1 on `stream`, its connection driven by a task of its own.
    async fn handshake<S>(&self, stream: S) -> Result<SendRequest<Outgoing>, BoxError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(Timed::new(stream, self.read_timeout));
        let (sender, connection) = hyper::client::conn::http1::Builder::new()
            .handshake(io)
            .await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "upstream connection ended");
            }
        });
        Ok(sender)
    }
}

/// The upstream's response body. At its end the connection goes back to the
/// pool; dropped before its end, the connection closes with it.
pub(crate) struct Answer {
    body: Incoming,
    home: Option<(Arc<Shared>, SendRequest<Outgoing>)>,
}

impl Answer {
    fn ended(&mut self) {
        if let Some((shared, sender)) = self.home.take() {
            shared.give_back(sender);
        }
    }
}

impl Body for Answer {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = ready!(Pin::new(&mut self.body).poll_frame(cx));
        match &frame {
            None => self.ended(),
            Some(Err(_)) => self.home = None,
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        // A body never polled because it was empty (HEAD, 204, length 0).
        if self.body.is_end_stream() {
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
    /// Made on the first wait, reset after that.
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
        let timer = match &mut self.timer {
            Some(timer) => {
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                timer
            }
            None => self
                .timer
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the upstream sent and took nothing for the read timeout",
            )));
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
