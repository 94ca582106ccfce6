//! `mlflow-secrets-auth proxy`: a local authenticating proxy in front of one
//! MLflow server. Clients talk to it in the clear on loopback (or a Unix
//! socket) and prove themselves with a local token; it forwards every request
//! with the current credential, streaming bodies both ways, and never
//! follows a redirect. `exec --proxy` runs one in-process for a child. See
//! `docs/proxy.md`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::error::{Context as _, bail};
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, header,
};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body as _, Incoming};
use mlflow_secrets_auth::secrecy::{ExposeSecret, SecretString};
use mlflow_secrets_auth::{
    AuthHeader, EntryState, SecretsAuth, checked_endpoint, plain_origin, redact, source_chain,
};
use url::{Position, Url};

use crate::metrics::ProxyMetrics;
use crate::serve::{self, Body, BoxError, Limits, Listener, Peer, Stall, TcpAccess, full};
use crate::upstream::{Answer, Client, ClientBody, Outgoing};

/// Request bodies up to this size are kept so the request can be resent
/// after a 401/403 with a refetched credential; larger (or chunked) bodies
/// stream through and a refusal goes back to the client as it is.
pub(crate) const MAX_REPLAY_BYTES: u64 = 1 << 20;

/// The longest wait for the next bytes from the upstream.
const UPSTREAM_READ_TIMEOUT: Duration = Duration::from_secs(120);

/// Paths under this prefix are the proxy's own, never forwarded.
const RESERVED: &str = "/-/";
/// What a TCP caller may ask without the local token.
const OPEN_PATHS: &[&str] = &["/-/healthz", "/-/readyz", "/-/metrics"];

/// Request headers never forwarded besides those a credential travels in
/// ([`carries_credential`]): hop-by-hop ones, and `Host`, the body's framing
/// and `Expect` (written for the upstream by its client).
const DROPPED_REQUEST: [HeaderName; 8] = [
    header::CONNECTION,
    header::HOST,
    header::CONTENT_LENGTH,
    header::EXPECT,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The methods forwarded; any other is answered 405.
const FORWARDED_METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

/// Request headers never forwarded either: two more hop-by-hop ones, and
/// those some servers and frameworks read as the real path or method, which
/// would make the upstream act on a path or method the proxy never checked.
/// Compared with any punctuation read alike, as CGI-style servers read
/// header names.
const OVERRIDES: [&str; 14] = [
    "keep-alive",
    "proxy-connection",
    "x-original-url",
    "x-original-uri",
    "x-original-method",
    "x-forwarded-prefix",
    "x-forwarded-uri",
    "x-forwarded-path",
    "x-forwarded-host",
    "x-envoy-original-path",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Response headers not passed back (hop-by-hop).
const DROPPED_RESPONSE: [HeaderName; 6] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Where the proxy serves: a TCP address or a Unix socket.
#[derive(Debug, Clone)]
enum Serve {
    Tcp(SocketAddr),
    Socket(PathBuf),
}

/// The local token TCP clients must send.
#[derive(Debug, Clone)]
enum LocalToken {
    /// Read from this file, written (0600) when absent; `None`: the default file.
    File(Option<PathBuf>),
    /// Given (kept in memory only).
    Given(SecretString),
    /// None: any process that can reach the port may act with the credential.
    Off,
}

/// Builds and starts the authenticating proxy: MLflow clients talk plain
/// HTTP to it on loopback (with a local token) and it forwards to one
/// MLflow server with the credential attached.
///
/// ```no_run
/// # async fn demo() -> mlflow_secrets_auth_server::Result<()> {
/// use mlflow_secrets_auth::SecretsAuth;
/// use mlflow_secrets_auth_server::Proxy;
///
/// let auth = SecretsAuth::from_env()?;
/// Proxy::builder(auth, "https://mlflow.example.com")
///     .listen(std::net::SocketAddr::from(([127, 0, 0, 1], 5000)))
///     .local_token_file("/run/user/1000/mlflow-proxy.token")
///     .serve(mlflow_secrets_auth_server::stop_signal())
///     .await
/// # }
/// ```
pub struct ProxyBuilder {
    auth: SecretsAuth,
    upstream: String,
    serve: Serve,
    local_token: LocalToken,
    allow_remote: bool,
    allow_uid: Vec<u32>,
    upstream_ca: Option<PathBuf>,
    limits: Limits,
}

impl std::fmt::Debug for ProxyBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the upstream's text: unchecked, it may hold a password.
        f.debug_struct("ProxyBuilder")
            .field("serve", &self.serve)
            .field("allow_remote", &self.allow_remote)
            .field("allow_uid", &self.allow_uid)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// The authenticating proxy ([`Proxy::builder`]).
#[derive(Debug)]
pub struct Proxy(());

impl Proxy {
    /// A proxy to the MLflow server at `upstream` (whose host must pass the
    /// allowlist of `auth`), serving `127.0.0.1:5000` with the default
    /// local token file.
    pub fn builder(auth: SecretsAuth, upstream: impl Into<String>) -> ProxyBuilder {
        ProxyBuilder {
            auth,
            upstream: upstream.into(),
            serve: Serve::Tcp(SocketAddr::from(([127, 0, 0, 1], 5000))),
            local_token: LocalToken::File(None),
            allow_remote: false,
            allow_uid: Vec::new(),
            upstream_ca: None,
            limits: Limits {
                max_connections: 256,
                header_timeout: Duration::from_secs(30),
                send_timeout: Duration::from_secs(60),
                drain: Duration::from_secs(30),
                ..Limits::default()
            },
        }
    }
}

impl ProxyBuilder {
    /// The TCP address to serve (loopback unless [`Self::allow_remote`]).
    #[must_use]
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.serve = Serve::Tcp(addr);
        self
    }

    /// A Unix socket to serve instead of TCP (the peer uid is checked, no token).
    #[must_use]
    pub fn socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.serve = Serve::Socket(path.into());
        self
    }

    /// The file of the local token TCP clients send as `Authorization:
    /// Bearer` (MLflow's `MLFLOW_TRACKING_TOKEN`); written (0600) when absent.
    #[must_use]
    pub fn local_token_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.local_token = LocalToken::File(Some(path.into()));
        self
    }

    /// The local token itself, kept in memory only.
    #[must_use]
    pub fn local_token(mut self, token: SecretString) -> Self {
        self.local_token = LocalToken::Given(token);
        self
    }

    /// Accept TCP clients without a local token: anyone on this machine may
    /// then act with the MLflow credential (warned about at start).
    #[must_use]
    pub fn no_local_auth(mut self) -> Self {
        self.local_token = LocalToken::Off;
        self
    }

    /// Allow a non-loopback listen address (the local token stays required).
    #[must_use]
    pub fn allow_remote(mut self, allow: bool) -> Self {
        self.allow_remote = allow;
        self
    }

    /// A uid besides the proxy's own that may use its socket.
    #[must_use]
    pub fn allow_uid(mut self, uid: u32) -> Self {
        self.allow_uid.push(uid);
        self
    }

    /// A PEM file of CA certificates to trust for the upstream, besides the system's.
    #[must_use]
    pub fn upstream_ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.upstream_ca = Some(path.into());
        self
    }

    /// Connections served at once; more get 503 (default 256).
    #[must_use]
    pub fn max_connections(mut self, n: usize) -> Self {
        self.limits.max_connections = n.max(1);
        self
    }

    /// How long a client has to send a request's headers, the longest pause
    /// within its body, and how long an idle connection is kept (default 30 s).
    #[must_use]
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.limits.header_timeout = timeout;
        self
    }

    /// How long a client may take none of a response before its connection
    /// is closed (default 60 s).
    #[must_use]
    pub fn send_timeout(mut self, timeout: Duration) -> Self {
        self.limits.send_timeout = timeout;
        self
    }

    /// How long requests in flight get to finish once stopping (default 30 s).
    #[must_use]
    pub fn drain(mut self, drain: Duration) -> Self {
        self.limits.drain = drain;
        self
    }

    /// Serves until `shutdown` completes (or a client posts
    /// `/-/quitquitquit`), then drains.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> crate::Result<()> {
        let mut running = self.start().await?;
        tokio::select! {
            result = &mut running.done => return joined(result),
            () = shutdown => running.stop(),
        }
        running.stopped().await
    }

    /// Checks every setting, binds, and starts serving in a task of the
    /// current runtime.
    pub async fn start(self) -> crate::Result<RunningProxy> {
        // Everything is decided before anything is written or bound.
        self.limits.checked()?;
        if let LocalToken::Given(token) = &self.local_token {
            serve::checked_token(token.expose_secret(), "the local token")?;
        }
        let upstream = Upstream::checked(
            &self.auth,
            &self.upstream,
            self.upstream_ca.as_deref(),
            self.limits.max_connections,
        )?;
        let no_local_auth = matches!(self.local_token, LocalToken::Off);
        if let Serve::Tcp(listen) = self.serve {
            if self.allow_remote && no_local_auth {
                bail!("--allow-remote needs the local token (drop --no-local-auth)");
            }
            if !listen.ip().is_loopback() && !self.allow_remote {
                bail!(
                    "--listen {listen}: only loopback addresses (127.0.0.0/8, ::1) are served unless --allow-remote is given (clients then still need the local token); use --socket to serve other containers of a pod"
                );
            }
        }
        let listener = match &self.serve {
            Serve::Socket(path) => Listener::unix(path, self.allow_uid.clone()).await?,
            Serve::Tcp(listen) => {
                let listen = *listen;
                // Bound first: a port in use fails before a token file is
                // written and announced.
                let bound = Listener::bind_tcp(listen, self.allow_remote && !no_local_auth).await?;
                let token = match self.local_token {
                    LocalToken::Off => {
                        tracing::warn!(
                            "--no-local-auth: any process that can reach {listen} may act with the MLflow credential"
                        );
                        None
                    }
                    LocalToken::Given(token) => Some(token),
                    LocalToken::File(file) => {
                        let file = file.unwrap_or_else(|| {
                            serve::default_socket("proxy").with_extension("token")
                        });
                        serve::own_dir(serve::parent_dir(&file), false)?;
                        let token = serve::load_or_make_token(&file)?;
                        tracing::info!(
                            file = %file.display(),
                            "clients send the token in this file as MLFLOW_TRACKING_TOKEN"
                        );
                        Some(token)
                    }
                };
                if !listen.ip().is_loopback() {
                    tracing::warn!(
                        %listen,
                        "--allow-remote: other machines may connect; the local token travels in plain HTTP, so only a network no one else can read keeps it (and the use of the MLflow credential) private"
                    );
                }
                let access = TcpAccess {
                    token,
                    allow_remote: self.allow_remote,
                    challenge: None,
                };
                Listener::tcp_with(bound, access)
            }
        };
        start(self.auth, upstream, listener, self.limits).await
    }
}

/// The upstream and how to reach it.
struct Upstream {
    /// `scheme://host[:port]`.
    origin: String,
    /// The base path without a trailing `/` (`""` or `/mlflow`).
    base: String,
    /// The base as the most lenient server reads it ([`normalised_path`]).
    base_read: String,
    /// The number of segments of `base_read`: no `..` may remove one.
    floor: usize,
    /// The parsed base URL (for the origin comparison).
    url: Url,
    client: Client,
}

impl Upstream {
    /// The upstream `text`, refused unless its host may get the credential.
    fn checked(
        auth: &SecretsAuth,
        text: &str,
        ca: Option<&std::path::Path>,
        max_idle: usize,
    ) -> crate::Result<Self> {
        let upstream = Self::new(text, ca, max_idle)?;
        if !auth.permits(&upstream.url)? {
            bail!(
                "--upstream host `{}` is not in MLFLOW_SECRETS_ALLOWED_HOSTS ({}); refusing to start",
                upstream.url.host_str().unwrap_or_default(),
                auth.config().allowlist
            );
        }
        Ok(upstream)
    }

    fn new(text: &str, ca: Option<&std::path::Path>, max_idle: usize) -> crate::Result<Self> {
        // The check of every address a person writes: it names the mistake
        // and never shows more of the text than scheme, host and port.
        let checked = checked_endpoint(
            text,
            "--upstream",
            &["http", "https"],
            "https://mlflow.example.com or http://127.0.0.1:5000",
        )?;
        let url = Url::parse(&checked).context("--upstream is not a URL")?;
        let origin = url.origin().ascii_serialization();
        let base = url.path().trim_end_matches('/').to_owned();
        let slashes = |path: &str| path.matches('/').count();
        let ends_early = decoded_until_settled(&base).is_none_or(|text| {
            text.contains(|c: char| matches!(c, '?' | '#') || c.is_whitespace() || c.is_control())
        });
        let base_read = normalised_path(&base, 0);
        if !base.is_empty()
            && (ends_early
                || base_read
                    .as_ref()
                    .is_none_or(|read| slashes(read) != slashes(&base)))
        {
            bail!(
                "--upstream's base path has an encoded or look-alike slash, an encoded space, control, `?` or `#`, or escapes that do not settle: servers read it differently"
            );
        }
        let client = Client::new(&url, ca, UPSTREAM_READ_TIMEOUT, max_idle)?;
        let base_read = base_read.unwrap_or_default();
        Ok(Self {
            origin,
            floor: base_read.split('/').filter(|s| !s.is_empty()).count(),
            base_read,
            base,
            url,
            client,
        })
    }

    /// The request target to send upstream for a client's `target` (origin
    /// form, `uri` as parsed), or `None` when it would not be on the
    /// upstream's origin or would leave its base path (fail closed). A
    /// target that URL parsing leaves as it is ([`plain_target`]) goes as
    /// received; any other goes as [`Self::target`] reads it.
    fn request_target(&self, target: &str, uri: &Uri) -> Option<Uri> {
        if plain_target(target) {
            if self.base.is_empty() {
                return Some(uri.clone());
            }
            let path = target.split_once('?').map_or(target, |(path, _)| path);
            return self
                .within_base(&format!("{}{path}", self.base))
                .then(|| Uri::try_from(format!("{}{target}", self.base)).ok())
                .flatten();
        }
        let url = self.target(target)?;
        Uri::try_from(&url[Position::BeforePath..Position::AfterQuery]).ok()
    }

    /// The upstream URL of a request's path and query, or `None` when it
    /// would not be on the upstream's origin or would leave its base path
    /// (fail closed).
    fn target(&self, path_and_query: &str) -> Option<Url> {
        if !path_and_query.starts_with('/') {
            return None;
        }
        let url = Url::parse(&format!("{}{}{path_and_query}", self.origin, self.base)).ok()?;
        (url.origin() == self.url.origin() && self.within_base(url.path())).then_some(url)
    }

    /// Whether `path` stays under the base path as a strict server reads it
    /// (as written) and as the most lenient server may ([`normalised_path`]):
    /// a reading that merges or trims more must not let another reading out.
    fn within_base(&self, path: &str) -> bool {
        fn under(path: &str, base: &str) -> bool {
            path.strip_prefix(base)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        }
        if self.base.is_empty() {
            return true;
        }
        // Most paths hold nothing any reading could change: no escape,
        // backslash, parameter, empty or dot-only segment, or non-ASCII byte.
        let plain = path
            .bytes()
            .all(|b| b.is_ascii() && !matches!(b, b'%' | b'\\' | b';'))
            && !path.contains("//")
            && !path
                .split('/')
                .any(|segment| !segment.is_empty() && segment.bytes().all(|b| b == b'.'));
        if plain && self.base_read == self.base {
            return under(path, &self.base);
        }
        // No `..` may take the lenient reading into the base, let alone
        // out of it: the base's segments are its floor.
        under(path, &self.base)
            && normalised_path(path, self.floor).is_some_and(|path| under(&path, &self.base_read))
    }

    /// `location` rewritten to point at the proxy (`public`, `http://host:port`)
    /// when it points at the upstream under its base path; anything else —
    /// relative, another origin, outside the base, or doubtful — unchanged.
    /// The new value is built from the parsed URL's parts and must read as
    /// `public` to any parser, so it can never name another host.
    fn rewrite_location(&self, location: &str, public: &str) -> Option<String> {
        let url = Url::parse(location).ok()?;
        if url.origin() != self.url.origin()
            || !url.username().is_empty()
            || url.password().is_some()
            || !self.within_base(url.path())
        {
            return None;
        }
        let rest = url.path().strip_prefix(self.base.as_str())?;
        let rest = match rest {
            "" => "/",
            rest if rest.starts_with('/') && !rest.starts_with("//") => rest,
            _ => return None,
        };
        let mut rewritten = format!("{public}{rest}");
        if let Some(query) = url.query() {
            rewritten.push('?');
            rewritten.push_str(query);
        }
        if let Some(fragment) = url.fragment() {
            rewritten.push('#');
            rewritten.push_str(fragment);
        }
        (plain_origin(&rewritten) == Some(public)).then_some(rewritten)
    }
}

/// Whether URL parsing leaves `target` (a path and query) as it is, so the
/// target checked and the target sent are one text: only characters it
/// never escapes, no empty, `.` or `..` segment, no `%`, `\\` or `;` in the
/// path.
fn plain_target(target: &str) -> bool {
    // One pass: the path's bytes, then its segments, then the query's bytes.
    let is = |b: u8, class: u8| PLAIN_BYTES[usize::from(b)] & class != 0;
    let dot_segment = |length: usize, dots: usize| (1..=2).contains(&length) && dots == length;
    let Some((b'/', path)) = target.as_bytes().split_first() else {
        return false;
    };
    // The segment read so far: its length and how many of its bytes are `.`.
    let (mut length, mut dots) = (0, 0);
    for (at, &b) in path.iter().enumerate() {
        match b {
            b'/' if length == 0 || dot_segment(length, dots) => return false,
            b'/' => (length, dots) = (0, 0),
            b'?' => {
                return !dot_segment(length, dots)
                    && path[at + 1..].iter().all(|&b| is(b, IN_QUERY));
            }
            _ if is(b, IN_PATH) => {
                length += 1;
                dots += usize::from(b == b'.');
            }
            _ => return false,
        }
    }
    !dot_segment(length, dots)
}

/// The bytes a plain target holds as they are: [`IN_PATH`] in a path segment
/// (letters, digits and `-._~!$&'()*+,=:@`), [`IN_QUERY`] in the query (letters,
/// digits and `-._~!$&()*+,;=:@/?%`).
const PLAIN_BYTES: [u8; 256] = {
    let mut table = [0; 256];
    let mut b = 0;
    while b < 128 {
        if (b as u8).is_ascii_alphanumeric() {
            table[b] = IN_PATH | IN_QUERY;
        }
        b += 1;
    }
    table = mark(table, b"-._~!$&'()*+,=:@", IN_PATH);
    mark(table, b"-._~!$&()*+,;=:@/?%", IN_QUERY)
};

/// `table` with `class` added to each of `bytes`.
const fn mark(mut table: [u8; 256], bytes: &[u8], class: u8) -> [u8; 256] {
    let mut i = 0;
    while i < bytes.len() {
        table[bytes[i] as usize] |= class;
        i += 1;
    }
    table
}
const IN_PATH: u8 = 1;
const IN_QUERY: u8 = 2;

/// `path` as the most lenient server may read it: percent-escapes
/// (`%XX` and IIS's `%uXXXX`) decoded again and again until nothing changes
/// (`%252e`, `%%32%65` are `.` to a server that decodes twice); overlong
/// UTF-8 and look-alike spellings of `.`, `/` and `\\` read as those, and
/// the text put in Unicode NFKC form (`‥`, `︰` are `..`); `\\` read as `/`;
/// path parameters dropped (`..;x` is `..` to servlet containers); empty
/// segments merged (`//` is `/` to nginx); controls and invisible
/// characters dropped anywhere in a segment and whitespace trimmed at its
/// ends (`..%20`, `.%09.`, `.%e2%80%8b.` are `..`); then dot segments removed
/// (RFC 3986 5.2.4), also for a server that ends the path at any space,
/// control, `?` or `#`. `None` (fail closed) when the escapes do not settle
/// within a few rounds; when the decoded text is not UTF-8, has a NUL, CR or
/// LF, or a `%` before a digit only a Unicode-minded decoder reads; when a `..` would remove
/// one of the first `floor` segments (readings that disagree about which
/// segments are empty disagree about what a `..` removes, so a path may
/// leave the base and come back in for one reading only); and when
/// decoding makes a slash the text does not have and a `..` follows (a
/// segment boundary to some servers and not to others).
fn normalised_path(path: &str, floor: usize) -> Option<String> {
    let decoded = decoded_until_settled(path)?;
    let slashes = |text: &str| text.matches('/').count();
    let split_by_decoding = slashes(&decoded) != slashes(path);
    // NUL (the end of a C string), CR or LF (they split a request line a
    // later hop writes), or an escape whose digits only a Unicode-minded
    // decoder reads (`%٢e` is `.` to Java's and Python's): fail closed.
    let odd_digit = |c: char| !c.is_ascii() && c.is_numeric();
    if decoded.contains(['\0', '\r', '\n'])
        || decoded
            .match_indices('%')
            .any(|(at, _)| decoded[at + 1..].chars().take(2).any(odd_digit))
    {
        return None;
    }
    dot_segments_removed(&decoded, floor, split_by_decoding)
}

/// `path` decoded as the most lenient server may: escapes (`%XX`, `%uXXXX`)
/// decoded, overlong UTF-8 and look-alikes replaced and the text put in
/// NFKC form, again and again until nothing changes; `None` when that takes
/// more than a few rounds or the text is then not UTF-8.
fn decoded_until_settled(path: &str) -> Option<String> {
    let mut decoded = path.as_bytes().to_vec();
    // Bytes all along: a partial UTF-8 sequence left by one round may be
    // completed by the next.
    for _ in 0..8 {
        let mut next = spelled(&percent_decoded(&decoded));
        if let Ok(text) = std::str::from_utf8(&next)
            && !text.is_ascii()
        {
            use unicode_normalization::UnicodeNormalization as _;
            next = text.nfkc().collect::<String>().into_bytes();
        }
        if next == decoded {
            return String::from_utf8(decoded).ok();
        }
        decoded = next;
    }
    None
}

/// The decoded `path` with parameters dropped, controls and invisible
/// characters dropped, whitespace trimmed and dot segments removed; `None`
/// when a `..` would remove one of the first `floor` segments, or follows a
/// slash only decoding made (`split_by_decoding`) — also in the reading of
/// a server that ends the path at a space, control, `?` or `#`.
fn dot_segments_removed(path: &str, floor: usize, split_by_decoding: bool) -> Option<String> {
    let mut segments: Vec<&str> = Vec::new();
    let raw: Vec<&str> = path.split('/').collect();
    // Controls and invisible characters are dropped wherever they are;
    // whitespace at either end is trimmed (`strip()`).
    let parts: Vec<String> = raw
        .iter()
        .map(|segment| {
            let kept: String = segment
                .split(';')
                .next()
                .unwrap_or_default()
                .chars()
                .filter(|&c| !c.is_control() && !invisible(c))
                .collect();
            kept.trim_matches(char::is_whitespace).to_owned()
        })
        .collect();
    let last = parts.len().saturating_sub(1);
    for (i, segment) in parts.iter().map(String::as_str).enumerate() {
        // A server that ends the path inside this segment, at a `..`,
        // removes a segment there too.
        if ends_in_dots(raw[i]) && (split_by_decoding || segments.len() <= floor) {
            return None;
        }
        let dots = !segment.is_empty() && segment.bytes().all(|b| b == b'.');
        match segment {
            "" | "." => {}
            _ if dots && segment.len() >= 2 => {
                if split_by_decoding || segments.len() <= floor {
                    return None;
                }
                segments.pop();
            }
            other => segments.push(other),
        }
        // A path ending in a dot segment (or a slash) ends in a directory.
        if i == last && (segment.is_empty() || dots) {
            segments.push("");
        }
    }
    Some(format!("/{}", segments.join("/")))
}

/// Whether `segment` cut at one of its spaces, controls, `?` or `#` (where
/// some servers end the path) reads as `..`: dots, and nothing but
/// whitespace and invisible characters around them, before the cut. One
/// pass, whatever the number of cuts.
fn ends_in_dots(segment: &str) -> bool {
    let mut dots = 0;
    let mut after_dots = false;
    for c in segment.chars() {
        if matches!(c, '?' | '#') || c.is_whitespace() || c.is_control() {
            if dots >= 2 {
                return true;
            }
            // A control between dots may be dropped rather than end the
            // path (`.%09.` is `..` too).
            if dots > 0 && !c.is_control() {
                after_dots = true;
            }
            continue;
        }
        match c {
            _ if invisible(c) => {}
            '.' if !after_dots => dots += 1,
            // A parameter or any other character: no later cut reads as
            // dots alone (a cut after `;` reads as the parameter-free
            // segment, which the whole reading checks).
            _ => return false,
        }
    }
    false
}

/// `bytes` with the overlong UTF-8 and look-alike spellings of `.`, `..`,
/// `...`, `/` and `\\` that NFKC leaves alone replaced, and `\\` read as `/`.
fn spelled(bytes: &[u8]) -> Vec<u8> {
    const SPELLINGS: [(&[u8], &[u8]); 13] = [
        (b"\xc0\xae", b"."),
        (b"\xe0\x80\xae", b"."),
        (b"\xf0\x80\x80\xae", b"."),
        (b"\xc0\xaf", b"/"),
        (b"\xe0\x80\xaf", b"/"),
        (b"\xf0\x80\x80\xaf", b"/"),
        (b"\xe2\x88\x95", b"/"), // U+2215 division slash
        (b"\xe2\x81\x84", b"/"), // U+2044 fraction slash
        (b"\xc1\x9c", b"/"),
        (b"\xe0\x81\x9c", b"/"),
        (b"\xf0\x80\x81\x9c", b"/"),
        (b"\xe2\x88\x96", b"/"), // U+2216 set minus
        (b"\\", b"/"),
    ];
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        let found = (byte >= 0x80 || byte == b'\\')
            .then(|| {
                SPELLINGS
                    .iter()
                    .find(|(spelling, _)| bytes[i..].starts_with(spelling))
            })
            .flatten();
        match found {
            Some((spelling, meaning)) => {
                out.extend_from_slice(meaning);
                i += spelling.len();
            }
            None => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

/// A character some servers drop without a trace: a format character or
/// one Unicode says to ignore by default (soft hyphen, zero widths, joiners,
/// bidi controls, variation selectors, fillers, byte order mark, tags).
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{ad}' | '\u{34f}' | '\u{61c}' | '\u{115f}'..='\u{1160}' | '\u{17b4}'..='\u{17b5}'
        | '\u{180b}'..='\u{180f}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
        | '\u{2060}'..='\u{206f}' | '\u{3164}' | '\u{fe00}'..='\u{fe0f}' | '\u{feff}'
        | '\u{ffa0}' | '\u{fff0}'..='\u{fffb}' | '\u{600}'..='\u{605}' | '\u{6dd}' | '\u{70f}'
        | '\u{890}'..='\u{891}' | '\u{8e2}' | '\u{110bd}' | '\u{110cd}'
        | '\u{13430}'..='\u{1343f}' | '\u{1bca0}'..='\u{1bca3}' | '\u{1d173}'..='\u{1d17a}'
        | '\u{e0000}'..='\u{e0fff}')
}

/// `bytes` with every `%` and two hex digits replaced by that byte, and
/// every `%u` and four hex digits by that character in UTF-8 (a lone
/// surrogate by a byte no UTF-8 text has).
fn percent_decoded(bytes: &[u8]) -> Vec<u8> {
    let hex = |at: usize| bytes.get(at).and_then(|&b| char::from(b).to_digit(16));
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let (Some(high), Some(low)) = (hex(i + 1), hex(i + 2)) {
                out.push(u8::try_from(high * 16 + low).unwrap_or(b'%'));
                i += 3;
                continue;
            }
            if matches!(bytes.get(i + 1), Some(b'u' | b'U'))
                && let (Some(a), Some(b), Some(c), Some(d)) =
                    (hex(i + 2), hex(i + 3), hex(i + 4), hex(i + 5))
            {
                match char::from_u32(a << 12 | b << 8 | c << 4 | d) {
                    Some(wide) => {
                        out.extend_from_slice(wide.encode_utf8(&mut [0; 4]).as_bytes());
                    }
                    None => out.push(0xff),
                }
                i += 6;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// The proxy's state, shared by every connection.
pub(crate) struct ProxyState {
    auth: SecretsAuth,
    upstream: Upstream,
    metrics: ProxyMetrics,
    quit: tokio::sync::watch::Sender<bool>,
    /// The longest wait for the next bytes of a client's request body.
    body_timeout: Duration,
    /// The credential's header name, never taken from a client.
    configured: Option<HeaderName>,
    /// The last credential sent, and its header as sent.
    last_header: std::sync::Mutex<Option<(AuthHeader, HeaderName, HeaderValue)>>,
}

impl ProxyState {
    async fn handle(self: Arc<Self>, request: Request<Incoming>, peer: Peer) -> Response<Body> {
        // Never the query: presigned storage URLs carry signatures there.
        let logged = tracing::enabled!(tracing::Level::DEBUG).then(|| {
            let method = request.method().clone();
            (Instant::now(), method, request.uri().path().to_owned())
        });
        let response = if request.uri().path().starts_with(RESERVED) {
            self.reserved(request.method(), request.uri().path())
        } else {
            self.forward(request).await
        };
        self.metrics.request(response.status());
        if let Some((started, method, path)) = logged {
            tracing::debug!(
                %method,
                path = %path,
                status = response.status().as_u16(),
                ms = started.elapsed().as_secs_f64() * 1e3,
                peer = ?peer,
                "request"
            );
        }
        response
    }

    fn ready(&self) -> bool {
        self.auth
            .entry()
            .is_some_and(|e| e.state != EntryState::Expired)
    }

    fn reserved(&self, method: &Method, path: &str) -> Response<Body> {
        match (method, path) {
            (&Method::GET, "/-/healthz") => text(StatusCode::OK, "ok"),
            // Never a call upstream or to the backend: a probe that dials
            // upstream turns an upstream hiccup into a fleet-wide restart.
            (&Method::GET, "/-/readyz") if self.ready() => text(StatusCode::OK, "ready"),
            (&Method::GET, "/-/readyz") => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "no usable credential cached",
            ),
            (&Method::GET, "/-/metrics") => match self.metrics.encode() {
                Ok(body) => {
                    let mut response = Response::new(full(body));
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static(
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        ),
                    );
                    response
                }
                Err(_) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "cannot encode the metrics",
                ),
            },
            (&Method::POST, "/-/quitquitquit") => {
                tracing::info!("asked to quit");
                let _ = self.quit.send(true);
                text(StatusCode::OK, "stopping")
            }
            _ => text(StatusCode::NOT_FOUND, "no such proxy endpoint"),
        }
    }

    async fn forward(&self, request: Request<Incoming>) -> Response<Body> {
        // Only the methods an MLflow client uses: TRACE (and IIS's TRACK,
        // DEBUG, WebDAV's PROPFIND…) may echo the request, credential
        // included, back to a client that must never see it.
        if !FORWARDED_METHODS.contains(request.method()) {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "only GET, HEAD, POST, PUT, PATCH, DELETE and OPTIONS are forwarded",
            );
        }
        let (parts, body) = request.into_parts();
        // A client trickling its body cannot hold a connection (and an
        // upstream connection) forever.
        let body = IdleTimeout::new(body, self.body_timeout);
        // Only a path (origin-form): an absolute URL names a host of its own,
        // which this proxy, a server of one upstream, does not serve.
        let path_and_query = match (&parts.uri.scheme(), &parts.uri.authority()) {
            (None, None) => parts.uri.path_and_query().map_or("/", |p| p.as_str()),
            _ => "",
        };
        let Some(uri) = self.upstream.request_target(path_and_query, &parts.uri) else {
            return text(
                StatusCode::BAD_REQUEST,
                "the request target is not a path on the upstream",
            );
        };
        // The allowlist judges the upstream's origin, the same for every path.
        let header = match self.auth.header_for_url(&self.upstream.url).await {
            Ok(Some(header)) => header,
            Ok(None) => return text(StatusCode::FORBIDDEN, "the upstream is not an allowed host"),
            Err(error) => {
                tracing::warn!(error = %redact(&error.to_string()), "no credential for the upstream");
                return text(
                    StatusCode::BAD_GATEWAY,
                    "no credential available for the upstream",
                );
            }
        };
        let host = parts.headers.get(header::HOST).cloned();
        let Some(headers) = self.authorised(self.forwarded_headers(&parts.headers), &header) else {
            return text(
                StatusCode::BAD_GATEWAY,
                "the credential is not a valid header value",
            );
        };
        // Small bodies are kept for a resend; others stream through.
        let length = body.size_hint().exact();
        let kept = match length {
            Some(0) => Ok(bytes::Bytes::new()),
            Some(n) if n <= MAX_REPLAY_BYTES => {
                match Limited::new(body, MAX_REPLAY_BYTES as usize)
                    .collect()
                    .await
                {
                    Ok(collected) => Ok(collected.to_bytes()),
                    Err(_) => {
                        return text(
                            StatusCode::BAD_REQUEST,
                            "the request body could not be read",
                        );
                    }
                }
            }
            _ => Err(body),
        };
        let response = match kept {
            Ok(bytes) => {
                self.metrics.bytes_in(bytes.len());
                let first = self
                    .send(
                        &parts.method,
                        &uri,
                        headers,
                        Outgoing::Kept(Some(bytes.clone())),
                    )
                    .await;
                match first {
                    Ok(answer) if refused(answer.status()) => {
                        // Boxed: a refetch is a large future, and every
                        // request's future would carry its size (moved on each
                        // call) for a path only a refused request takes.
                        let refetched =
                            Box::pin(self.auth.refused(header.value().expose_secret())).await;
                        // The refetched value replaces the refused one.
                        let again = refetched.map(|fresh| {
                            fresh.and_then(|f| {
                                self.authorised(self.forwarded_headers(&parts.headers), &f)
                            })
                        });
                        match again {
                            Ok(Some(again)) => {
                                self.metrics.refetch();
                                tracing::info!(
                                    "upstream refused the credential: resending with the refetched one"
                                );
                                self.send(&parts.method, &uri, again, Outgoing::Kept(Some(bytes)))
                                    .await
                            }
                            _ => Ok(answer),
                        }
                    }
                    other => other,
                }
            }
            Err(body) => {
                let metrics = self.metrics.clone();
                let counted = counting(body, move |n| metrics.bytes_in(n));
                let streamed = Outgoing::Streamed(Box::pin(counted), length);
                self.send(&parts.method, &uri, headers, streamed).await
            }
        };
        match response {
            Ok(answer) => self.relay(answer, host.as_ref()),
            Err(error) if error.is::<ClientBody>() => {
                tracing::info!(error = %redact(&source_chain(&*error)), "request not forwarded");
                text(
                    StatusCode::BAD_REQUEST,
                    "the request body could not be read",
                )
            }
            Err(error) => {
                tracing::warn!(error = %redact(&source_chain(&*error)), "upstream unreachable");
                text(
                    StatusCode::BAD_GATEWAY,
                    "the upstream MLflow server is unreachable",
                )
            }
        }
    }

    /// `headers` with the credential set, replacing any value of that name
    /// (marked sensitive, so it is never shown by a `Debug` of the request);
    /// `None` when it is no header value. The last credential's header is
    /// kept ready for the next request.
    fn authorised(&self, mut headers: HeaderMap, credential: &AuthHeader) -> Option<HeaderMap> {
        let mut last = self
            .last_header
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let ready = match &*last {
            Some((kept, name, value))
                if kept.name() == credential.name()
                    && kept.value().expose_secret() == credential.value().expose_secret() =>
            {
                (name.clone(), value.clone())
            }
            _ => {
                let name = HeaderName::from_bytes(credential.name().as_str().as_bytes()).ok()?;
                let mut value = HeaderValue::from_str(credential.value().expose_secret()).ok()?;
                value.set_sensitive(true);
                *last = Some((credential.clone(), name.clone(), value.clone()));
                (name, value)
            }
        };
        drop(last);
        headers.insert(ready.0, ready.1);
        Some(headers)
    }

    /// The client's headers for the upstream: without hop-by-hop ones
    /// (those named in `Connection` too), the client's credentials and the
    /// configured header.
    fn forwarded_headers(&self, incoming: &HeaderMap) -> HeaderMap {
        let configured = &self.configured;
        let connection = incoming.get_all(header::CONNECTION);
        let mut headers = HeaderMap::with_capacity(incoming.len());
        for (name, value) in incoming {
            // Compared as CGI-style servers read names too (punctuation alike).
            let text = name.as_str();
            let dropped = DROPPED_REQUEST
                .iter()
                .any(|d| serve::same_header(text, d.as_str()))
                || carries_credential(text, configured.as_ref())
                || OVERRIDES
                    .iter()
                    .any(|wanted| serve::same_header(text, wanted))
                || connection_lists(&connection, text);
            if !dropped {
                headers.append(name.clone(), value.clone());
            }
        }
        headers
    }

    async fn send(
        &self,
        method: &Method,
        uri: &Uri,
        headers: HeaderMap,
        body: Outgoing,
    ) -> Result<Response<Answer>, BoxError> {
        let started = Instant::now();
        let mut request = Request::new(body);
        *request.method_mut() = method.clone();
        *request.uri_mut() = uri.clone();
        *request.headers_mut() = headers;
        let answer = self.upstream.client.send(request).await;
        self.metrics.upstream_latency(started.elapsed());
        answer
    }

    /// The upstream's answer for the client: hop-by-hop headers dropped, a
    /// `Location` on the upstream pointed at the proxy (as the client's
    /// `host` named it), the body streamed.
    fn relay(&self, answer: Response<Answer>, host: Option<&HeaderValue>) -> Response<Body> {
        let (mut parts, body) = answer.into_parts();
        drop_hop_by_hop(&mut parts.headers);
        drop_credential_headers(&mut parts.headers, self.configured.as_ref());
        if let Some(location) = parts
            .headers
            .get(header::LOCATION)
            .and_then(|l| l.to_str().ok())
            && let Some(rewritten) = self.upstream.rewrite_location(location, &public(host))
            && let Ok(value) = HeaderValue::from_str(&rewritten)
        {
            parts.headers.insert(header::LOCATION, value);
        }
        let metrics = self.metrics.clone();
        let body = counting(body, move |n| metrics.bytes_out(n))
            .map_err(|error| {
                // The client only sees its answer cut short.
                tracing::warn!(error = %redact(&error.to_string()), "the upstream's answer failed");
                Box::new(error) as BoxError
            })
            .boxed();
        Response::from_parts(parts, body)
    }
}

/// Drops an answer's hop-by-hop headers: those of [`DROPPED_RESPONSE`],
/// `Keep-Alive` and the names `Connection` lists; and, when it is framed by
/// `Transfer-Encoding`, its `Content-Length`, which is not its length (RFC
/// 9112, section 6.3).
fn drop_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names first: which of them the answer holds (most
    // hold `Connection` at most); only those are looked up again.
    // Bit `at` of `held`: the answer holds `DROPPED_RESPONSE[at]`.
    let bit = |name: &HeaderName| {
        DROPPED_RESPONSE
            .iter()
            .position(|dropped| dropped == name)
            .map_or(0u8, |at| 1 << at)
    };
    let (mut held, mut keep_alive) = (0, false);
    for name in headers.keys() {
        held |= bit(name);
        keep_alive |= name == "keep-alive";
    }
    if held == 0 && !keep_alive {
        return;
    }
    // Read before the names `Connection` lists go, which may include it.
    if held & bit(&header::TRANSFER_ENCODING) != 0 {
        headers.remove(header::CONTENT_LENGTH);
    }
    if held & bit(&header::CONNECTION) != 0 {
        let listed: Vec<HeaderValue> = headers
            .get_all(header::CONNECTION)
            .iter()
            .cloned()
            .collect();
        for name in connection_tokens(&listed) {
            headers.remove(name);
        }
    }
    for (at, name) in DROPPED_RESPONSE.iter().enumerate() {
        if held & 1 << at != 0 {
            headers.remove(name);
        }
    }
    if keep_alive {
        headers.remove("keep-alive");
    }
}

/// Whether `name` is one a credential travels in: `Authorization`,
/// `Proxy-Authorization` or the configured header, also written with other
/// punctuation (as CGI-style servers read names). The client's (its local
/// token) never go upstream, and the upstream's never come back.
fn carries_credential(name: &str, configured: Option<&HeaderName>) -> bool {
    [header::AUTHORIZATION, header::PROXY_AUTHORIZATION]
        .iter()
        .chain(configured)
        .any(|c| serve::same_header(name, c.as_str()))
}

/// Drops from an answer the headers a credential travels in: an upstream,
/// or a gateway before it, that echoes a request's headers into its
/// answer's would otherwise hand the credential to the client, which holds
/// only the local token.
fn drop_credential_headers(headers: &mut HeaderMap, configured: Option<&HeaderName>) {
    // Empty (no allocation) unless the answer holds one.
    let echoed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| carries_credential(name.as_str(), configured))
        .cloned()
        .collect();
    for name in echoed {
        headers.remove(name);
    }
}

/// The proxy's own origin as a client named it in `host`.
fn public(host: Option<&HeaderValue>) -> String {
    host.and_then(|h| h.to_str().ok())
        .map_or_else(|| "http://localhost".to_owned(), |h| format!("http://{h}"))
}

/// `body`, telling `count` the length of each data frame as it passes.
fn counting<B>(
    body: B,
    count: impl Fn(usize) + Send + Sync + 'static,
) -> impl hyper::body::Body<Data = bytes::Bytes, Error = B::Error>
where
    B: hyper::body::Body<Data = bytes::Bytes>,
{
    body.map_frame(move |frame| {
        if let Some(data) = frame.data_ref() {
            count(data.len());
        }
        frame
    })
}

/// A request body that fails when the client pauses longer than `idle`
/// between frames. Unlike tower-http's `TimeoutBody` it passes on the
/// body's length, so a sized body stays sized (and small enough to keep).
struct IdleTimeout<B> {
    body: B,
    /// Armed while the body is waiting for the client.
    stall: Stall,
}

impl<B> IdleTimeout<B> {
    fn new(body: B, idle: Duration) -> Self {
        Self {
            body,
            stall: Stall::new(idle),
        }
    }
}

impl<B> hyper::body::Body for IdleTimeout<B>
where
    B: hyper::body::Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<B::Data>, BoxError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            this.stall.progress();
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if this.stall.poll_expired(cx) {
            return Poll::Ready(Some(Err(
                "the client paused its request body longer than the read timeout".into(),
            )));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Whether the `Connection` values list `name` (a header name, lower case):
/// hop-by-hop for this connection only, never forwarded (RFC 9110, section
/// 7.6.1).
fn connection_lists(connection: &header::GetAll<'_, HeaderValue>, name: &str) -> bool {
    connection_tokens(connection).any(|token| token.eq_ignore_ascii_case(name))
}

/// The tokens of `Connection` values, each read on its own: a byte no
/// header name holds spoils its own token only, never the rest of the value
/// (the names listed are dropped: fail closed).
fn connection_tokens<'a>(
    values: impl IntoIterator<Item = &'a HeaderValue>,
) -> impl Iterator<Item = &'a str> {
    values
        .into_iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .filter_map(|token| std::str::from_utf8(token).ok())
        .map(str::trim)
}

fn refused(status: StatusCode) -> bool {
    status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN
}

/// A short plain-text answer (never a secret).
fn text(status: StatusCode, reason: &'static str) -> Response<Body> {
    let mut response = Response::new(full(format!("{reason}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A running proxy: its address, and how to stop it. Dropping it leaves
/// the proxy serving (in its task) until a client posts `/-/quitquitquit`
/// or the runtime ends; call [`RunningProxy::stop`] to stop it.
#[derive(Debug)]
pub struct RunningProxy {
    quit: tokio::sync::watch::Sender<bool>,
    done: tokio::task::JoinHandle<crate::Result<()>>,
    local_addr: Option<SocketAddr>,
}

impl RunningProxy {
    /// The TCP address served (the port chosen for port 0); `None` on a socket.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// Stops accepting; requests in flight drain.
    pub fn stop(&self) {
        let _ = self.quit.send(true);
    }

    /// Completes when the proxy has stopped.
    pub async fn stopped(self) -> crate::Result<()> {
        joined(self.done.await)
    }
}

/// A serving task's end as the proxy's result.
fn joined(result: Result<crate::Result<()>, tokio::task::JoinError>) -> crate::Result<()> {
    result.context("the proxy stopped unexpectedly")?
}

/// Builds the proxy for `upstream` (allowed by the allowlist, else an error
/// naming the variable) and starts serving `listener`.
async fn start(
    auth: SecretsAuth,
    upstream: Upstream,
    listener: Listener,
    limits: Limits,
) -> crate::Result<RunningProxy> {
    // Fetch now: the first request does not wait, and a broken chain shows at start.
    if let Err(error) = auth.warm().await {
        tracing::warn!(error = %redact(&error.to_string()), "no credential yet; requests will retry");
    }
    let (quit, mut quitting) = tokio::sync::watch::channel(false);
    let configured = HeaderName::from_bytes(auth.config().header_name.as_str().as_bytes()).ok();
    let proxy = Arc::new(ProxyState {
        configured,
        auth,
        upstream,
        metrics: ProxyMetrics::default(),
        quit: quit.clone(),
        body_timeout: limits.header_timeout,
        last_header: std::sync::Mutex::new(None),
    });
    let address = listener.address();
    let local_addr = listener.local_addr();
    tracing::info!(%address, upstream = %proxy.upstream.url, "proxy listening");
    let metrics = proxy.metrics.clone();
    let open = metrics.open_connections.clone();
    let refused: serve::Refusals = Arc::new(move |status| metrics.request(status));
    let handler = move |request, peer| Arc::clone(&proxy).handle(request, peer);
    let stop = async move {
        let _ = quitting.wait_for(|q| *q).await;
    };
    let done = tokio::spawn(listener.serve(limits, OPEN_PATHS, handler, refused, open, stop));
    Ok(RunningProxy {
        quit,
        done,
        local_addr,
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use hyper::body::{Body as _, Frame, SizeHint};
    use tokio::sync::mpsc;

    use super::*;

    fn file_auth() -> SecretsAuth {
        let vars = [
            ("MLFLOW_SECRETS_AUTH_ENABLE", "file"),
            ("MLFLOW_SECRETS_FILE_PATH", "/nonexistent/secret"),
            ("MLFLOW_SECRETS_ALLOWED_HOSTS", "127.0.0.1"),
        ];
        SecretsAuth::from_source(&mlflow_secrets_auth::Env::new(&vars)).unwrap()
    }

    #[tokio::test]
    async fn a_weak_local_token_a_zero_timeout_or_a_huge_cap_is_refused_before_binding() {
        let short = Proxy::builder(file_auth(), "http://127.0.0.1:9")
            .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
            .local_token(SecretString::from("short-token"))
            .start()
            .await
            .unwrap_err();
        assert!(
            matches!(&short, crate::Error::Refused(m) if m == "the local token is shorter than 16 characters"),
            "{short}"
        );
        let spaced = Proxy::builder(file_auth(), "http://127.0.0.1:9")
            .local_token(SecretString::from("a token with spaces in it"))
            .start()
            .await
            .unwrap_err();
        assert!(spaced.to_string().contains("visible ASCII"), "{spaced}");
        assert!(!spaced.to_string().contains("spaces in it"), "{spaced}");
        let zero = Proxy::builder(file_auth(), "http://127.0.0.1:9")
            .drain(Duration::ZERO)
            .start()
            .await
            .unwrap_err();
        assert_eq!(zero.to_string(), "the drain time must be longer than zero");
        let endless = Proxy::builder(file_auth(), "http://127.0.0.1:9")
            .read_timeout(Duration::from_secs_f64(1.7e19))
            .start()
            .await
            .unwrap_err();
        assert_eq!(
            endless.to_string(),
            "the read timeout must be at most 86400 s"
        );
        let huge = Proxy::builder(file_auth(), "http://127.0.0.1:9")
            .max_connections(usize::MAX)
            .start()
            .await
            .unwrap_err();
        assert_eq!(
            huge.to_string(),
            "the connection cap must be at most 1048576"
        );
        let debug = format!(
            "{:?}",
            Proxy::builder(file_auth(), "https://user:pw-in-url@127.0.0.1/")
        );
        assert!(!debug.contains("pw-in-url"), "{debug}");
    }

    const PUBLIC: &str = "http://127.0.0.1:5000";

    fn upstream(text: &str) -> Upstream {
        Upstream::new(text, None, 8).unwrap()
    }

    #[test]
    fn base_paths_servers_read_differently_are_refused_at_start() {
        for base in [
            "/ml%2fflow",
            "/ml%252fflow",
            "/ml%EF%BC%8Fflow",
            "/ml%20flow",
            "/ml%2520flow",
            "/ml%3fflow",
            "/ml%253fflow",
            "/ml%23flow",
            "/ml%09flow",
            "/%20/mlflow",
            "/ml%EF%BC%9Fflow",
            "/ml%EF%BC%83flow",
            "/ml%EF%BC%8520x",
        ] {
            let refused = Upstream::new(&format!("http://127.0.0.1:18081{base}"), None, 8);
            let Err(error) = refused else {
                panic!("{base} was taken as a base path");
            };
            assert!(error.to_string().contains("base path"), "{base}: {error}");
        }
        for base in ["/mlflow", "/a/b-c_d.e~f", "/caf%C3%A9", ""] {
            assert!(
                Upstream::new(&format!("http://127.0.0.1:18081{base}"), None, 8).is_ok(),
                "{base}"
            );
        }
    }

    #[test]
    fn locations_on_the_upstream_are_rebuilt_from_their_parts() {
        let plain = upstream("http://127.0.0.1:18081");
        let based = upstream("http://127.0.0.1:18081/mlflow/");
        for (upstream, location, expected) in [
            (
                &plain,
                "http://127.0.0.1:18081/a?b=1#c",
                Some("http://127.0.0.1:5000/a?b=1#c"),
            ),
            // Another spelling of the upstream: rewritten, no slicing by length.
            (
                &plain,
                "http://127.1:18081/",
                Some("http://127.0.0.1:5000/"),
            ),
            (
                &plain,
                "http://127.0.0.1:18081",
                Some("http://127.0.0.1:5000/"),
            ),
            (&plain, "http:127.0.0.1:18081//@evil.example/steal", None),
            (&plain, "http://127.0.0.1:18082/", None),
            (&plain, "http://u:p@127.0.0.1:18081/", None),
            (&plain, "/relative", None),
            (
                &based,
                "http://127.0.0.1:18081/mlflow/x",
                Some("http://127.0.0.1:5000/x"),
            ),
            (
                &based,
                "http://127.0.0.1:18081/mlflow",
                Some("http://127.0.0.1:5000/"),
            ),
            (&based, "http://127.0.0.1:18081/mlflow@evil.example/x", None),
            (&based, "http://127.0.0.1:18081/mlflowx/y", None),
            (&based, "http://127.0.0.1:18081/other", None),
            (&based, "http://127.0.0.1:18081/mlflow/%2e%2e/admin", None),
        ] {
            assert_eq!(
                upstream.rewrite_location(location, PUBLIC).as_deref(),
                expected,
                "{location}"
            );
        }
        // A Host no parser reads alike is never written into a Location.
        assert_eq!(
            plain.rewrite_location("http://127.0.0.1:18081/a", "http://a\\@b"),
            None
        );
    }

    #[test]
    fn request_targets_that_leave_the_base_path_are_refused() {
        let based = upstream("http://127.0.0.1:18081/mlflow");
        for target in [
            "/../admin/users",
            "/%2e%2e/admin/users",
            "/%2E%2E/admin",
            "/a/../../admin",
            "/..%2fadmin",
            "/..%2Fadmin",
            "/..\\admin",
            "/.%2e/admin",
            "/..",
            "/..;/admin",
            "/%2e%2e;x/admin",
            "/..%3b/admin",
            "/%252e%252e/admin",
            "/%25252e%25252e/admin",
            "/%c0%ae%c0%ae/admin",
            "/%u002e%u002e/admin",
            "/..%c0%afadmin",
            "/../MLFLOW/x",
            "/%%32%65%%32%65/admin",
            "/%2%65%2%65/admin",
            "/%25%32%65%25%32%65/admin",
            "/%252525252e%252525252e/admin",
            "/..%e0%80%afadmin",
            "/..%c1%9cadmin",
            "/..%u005cadmin",
            "/%25252525252525252525252e/admin",
            "/%2f..%2fadmin",
            "/%2f%2e%2e%2fadmin",
            "/x/..%2f%2f..%2fadmin",
            "/%5c..%5cadmin",
            "/%c0%25ae%c0%25ae/admin",
            "/%25c0%ae%25c0%ae/admin",
            "/%f0%80%80%ae%f0%80%80%ae/admin",
            "/%uff0e%uff0e/admin",
            "/..%u2215admin",
            "/%ef%bc%8e%ef%bc%8e/admin",
            "/..%20/admin",
            "/..%00/admin",
            "/..%0a/admin",
            "/..%0d/admin",
            "/..%0b/admin",
            "/..%0c/admin",
            "/..%7f/admin",
            "/.%09./admin",
            "/.%0a./admin",
            "/%0d../admin",
            "/..%c2%85/admin",
            "/..%c2%a0/admin",
            "/..%e3%80%80/admin",
            "/%20../admin",
            "/../mlflow%20/x",
            "/../mlflow%09/x",
            "/a%EF%BC%8Fb/..;/..;/x",
            "/a%2fb/..;/..;/x",
            "/a%5cb/..;/..;/x",
            "/a%252fb/..;/..;/x",
            "/%e2%80%a5/admin",
            "/%e2%80%a6/admin",
            "/%u2025/admin",
            "/%u2026/admin",
            "/%u2024%u2024/admin",
            "/%ufe52%ufe52/admin",
            "/..%uff3cadmin",
            "/.%00./admin",
            "/.%e2%80%8b./admin",
            "/.%ef%bb%bf./admin",
            "/.%c2%ad./admin",
            // Out of the base and back in, for a reading that keeps (or
            // drops) a segment another drops (or keeps).
            "/..;/admin/%20/..;/mlflow/x",
            "/..;/manager/html/%20/%20/..;/..;/mlflow/x",
            "/..%20/admin/%e2%80%8b/..%20/mlflow/x",
            "/%252e%252e/admin/;x/%252e%252e/mlflow/x",
            "/..;/mlflow%20/admin",
            // What NFKC makes dots or a backslash of.
            "/%ef%b8%b0/admin",
            "/%ufe30/admin",
            "/%ef%b8%99/admin",
            "/..%ef%b9%a8admin",
            // Any %u escape.
            "/..%u0020/admin",
            "/.%u0000./admin",
            "/.%u200b./admin",
            "/..%u00a0/admin",
            "/.%uD800./admin",
            // Invisible characters.
            "/.%e2%80%ae./admin",
            "/.%cd%8f./admin",
            "/.%ef%b8%8f./admin",
            "/.%f3%a0%80%81./admin",
            // Not UTF-8.
            "/..%a0/admin",
            "/..%85/admin",
            "/.%ad./admin",
            "/%c0%ee%c0%ee/admin",
            "/..%c1%1cadmin",
            // Where a server may end the path.
            "/..%00x",
            "/..%3fx",
            "/..%23x",
            "/..%253fx",
            "/..%20x",
            "/..%ef%bc%9fx",
            // Controls: a hop that writes the path into a request line.
            "/%2e%2e%0ax/admin",
            "/x%20HTTP/1.1%0d%0aHost:%20a%0d%0a%0d%0aGET%20/admin%20HTTP/1.1%0d%0aX:%20",
            "/%20..%3fx",
            "/%c2%a0..%3fx",
            "/%20..%23x",
            "/a%20b/..;x/..%3fx",
            "/a%20b/%252e%252e/..%3fx",
            "/x/..%20/..%3fy",
            "/%2e%2e%e2%80%a8x/admin",
            "/..%0bx",
            "/.%09.%3fx",
            "/.%01.%3fx",
            "/.%7f.%23x",
            "/%2e%09%2e%20..",
            // Digits only a Unicode-minded decoder reads.
            "/%25%D9%A2e%25%D9%A2e/admin",
            "/x/%25%D9%A2e%25%D9%A2e/%25%D9%A2e%25%D9%A2e/admin/users",
        ] {
            assert!(based.target(target).is_none(), "{target}");
        }
        for (target, path) in [
            (
                "/api/2.0/mlflow/runs/get?run_id=1",
                "/mlflow/api/2.0/mlflow/runs/get",
            ),
            ("/a/../b", "/mlflow/b"),
            ("/", "/mlflow/"),
            ("/artifacts/50%25.txt", "/mlflow/artifacts/50%25.txt"),
            ("/a%20b", "/mlflow/a%20b"),
            ("/a//b", "/mlflow/a//b"),
            ("/caf%C3%A9/x", "/mlflow/caf%C3%A9/x"),
            // Slashes only decoding makes, with no `..` after them.
            (
                "/artifacts/1%E2%81%842%20report.pdf",
                "/mlflow/artifacts/1%E2%81%842%20report.pdf",
            ),
            (
                "/artifacts/%E5%A3%B2%E4%B8%8A%EF%BC%8F%E5%88%A9.csv",
                "/mlflow/artifacts/%E5%A3%B2%E4%B8%8A%EF%BC%8F%E5%88%A9.csv",
            ),
            (
                "/artifacts/C:%5Ctmp%5Cx.txt",
                "/mlflow/artifacts/C:%5Ctmp%5Cx.txt",
            ),
            ("/artifacts/a%252F.txt", "/mlflow/artifacts/a%252F.txt"),
            (
                "/artifacts/%E2%80%A6.txt",
                "/mlflow/artifacts/%E2%80%A6.txt",
            ),
            ("/a/b/../../c", "/mlflow/c"),
            (
                "/artifacts/%E4%B8%BA%E4%BB%80%E4%B9%88%EF%BC%9F.txt",
                "/mlflow/artifacts/%E4%B8%BA%E4%BB%80%E4%B9%88%EF%BC%9F.txt",
            ),
            (
                "/artifacts/%EF%BC%831.png",
                "/mlflow/artifacts/%EF%BC%831.png",
            ),
            (
                "/artifacts/a%3Fb%23c.txt",
                "/mlflow/artifacts/a%3Fb%23c.txt",
            ),
            (
                "/artifacts/50%25%20off.txt",
                "/mlflow/artifacts/50%25%20off.txt",
            ),
            ("/artifacts/top%2510.csv", "/mlflow/artifacts/top%2510.csv"),
            ("/artifacts/a%09b.txt", "/mlflow/artifacts/a%09b.txt"),
            ("/artifacts/..a%3F%20b", "/mlflow/artifacts/..a%3F%20b"),
        ] {
            assert_eq!(
                based.target(target).map(|u| u.path().to_owned()).as_deref(),
                Some(path)
            );
        }
        let plain = upstream("http://127.0.0.1:18081");
        assert_eq!(plain.target("/../x").unwrap().path(), "/x");
        assert!(plain.target("http://127.0.0.2/").is_none());
    }

    /// The header names a `Connection` header lists, each token made a
    /// `HeaderName`: the reference for [`connection_lists`] and
    /// [`drop_hop_by_hop`].
    fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|value| value.as_bytes().split(|&b| b == b','))
            .filter_map(|token| std::str::from_utf8(token).ok())
            .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
            .collect()
    }

    #[test]
    fn a_byte_no_name_holds_spoils_only_its_own_token_of_connection() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::CONNECTION,
            HeaderValue::from_bytes(b"x-a\xff, X-B ,x-\xc3\xa9").unwrap(),
        );
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-b", HeaderValue::from_static("2"));
        headers.append("x-c", HeaderValue::from_static("3"));
        let connection = headers.get_all(header::CONNECTION);
        assert!(connection_lists(&connection, "x-b"));
        assert!(!connection_lists(&connection, "x-a"));
        drop_hop_by_hop(&mut headers);
        assert_eq!(headers.get("x-b"), None);
        assert!(headers.contains_key("x-a") && headers.contains_key("x-c"));
        assert!(!headers.contains_key(header::CONNECTION));
    }

    #[test]
    fn an_answer_never_carries_a_credential_header_back() {
        let configured = HeaderName::from_static("x-mlflow-auth");
        let mut headers = HeaderMap::new();
        for name in [
            "authorization",
            "proxy-authorization",
            "x-mlflow-auth",
            "x_mlflow.auth",
            "proxy_authorization",
        ] {
            headers.append(name, HeaderValue::from_static("echoed"));
        }
        headers.append("authorization", HeaderValue::from_static("twice"));
        // Names a credential does not travel in stay.
        for name in ["www-authenticate", "x-mlflow-auth-hint", "x-authorization"] {
            headers.append(name, HeaderValue::from_static("kept"));
        }
        let mut default = headers.clone();
        drop_credential_headers(&mut headers, Some(&configured));
        let mut kept: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        kept.sort_unstable();
        assert_eq!(
            kept,
            ["www-authenticate", "x-authorization", "x-mlflow-auth-hint"]
        );
        // Without a configured name only the two standard ones go.
        drop_credential_headers(&mut default, None);
        assert!(default.contains_key("x-mlflow-auth") && default.contains_key("x_mlflow.auth"));
        assert!(
            !default.contains_key("authorization") && !default.contains_key("proxy_authorization")
        );
    }

    /// [`drop_hop_by_hop`] as it was first written: the reference the
    /// one-pass reading is checked against.
    fn drop_hop_by_hop_by_rules(headers: &mut HeaderMap) {
        if headers.contains_key(header::TRANSFER_ENCODING) {
            headers.remove(header::CONTENT_LENGTH);
        }
        for name in connection_listed(headers) {
            headers.remove(name);
        }
        for name in DROPPED_RESPONSE {
            headers.remove(name);
        }
        headers.remove("keep-alive");
    }

    /// `plain_target` as it was first written, one rule per line: the
    /// reference the one-pass reading is checked against.
    fn plain_target_by_rules(target: &str) -> bool {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        path.starts_with('/')
            && path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@/".contains(&b))
            && !path.contains("//")
            && !path
                .split('/')
                .any(|segment| segment == "." || segment == "..")
            && query
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&()*+,;=:@/?%".contains(&b))
    }

    /// Header names an answer may hold, hop-by-hop or not, in any case.
    const NAMES: [&str; 12] = [
        "Connection",
        "keep-alive",
        "Keep-Alive",
        "transfer-encoding",
        "content-length",
        "TE",
        "trailer",
        "upgrade",
        "proxy-authenticate",
        "x-a",
        "X-B",
        "content-type",
    ];

    /// Tokens of a `Connection` value besides [`NAMES`]: blank, a list of
    /// their own, tabbed, spoiled by a byte no name holds, wrapped in
    /// Unicode spaces.
    const ODD_TOKENS: [&[u8]; 5] = [
        b" ",
        b"X-Other ,,",
        b"x-a\t",
        b"x-b\xff",
        "\u{a0}x-a\u{3000}".as_bytes(),
    ];

    /// A header value of the tokens `picked` indexes ([`NAMES`], then
    /// [`ODD_TOKENS`]) joined by `separator`.
    fn listing(picked: &[usize], separator: &[u8]) -> HeaderValue {
        let tokens: Vec<&[u8]> = picked
            .iter()
            .map(|&t| {
                NAMES
                    .get(t)
                    .map_or_else(|| ODD_TOKENS[t - NAMES.len()], |n| n.as_bytes())
            })
            .collect();
        HeaderValue::from_bytes(&tokens.join(separator)).unwrap()
    }

    proptest::proptest! {
        /// The oracle is the URL parser: a target taken as plain is the
        /// target it would send.
        #[test]
        fn a_plain_target_reads_the_same_to_url_parsing(
            target in "(/[a-zA-Z0-9._~!$&'()*+,=:@;%\\\\ \"<>{}|^`é-]{0,8}){1,5}(\\?[a-zA-Z0-9._~!$&()*+,;=:@/?%'#\"<> é-]{0,20})?",
        ) {
            if plain_target(&target) {
                let url = Url::parse(&format!("http://127.0.0.1{target}")).unwrap();
                proptest::prop_assert_eq!(&url[Position::BeforePath..Position::AfterQuery], target.as_str());
            }
        }

        #[test]
        fn plain_target_reads_as_its_rules(
            target in "(/[.a;%]{0,3}){1,4}/?(\\?[a.?/%]{0,3})?|[/.a?\\\\ ]{0,10}|(/[a-zA-Z0-9._~!$&'()*+,=:@;%\\\\ \"<>{}|^`é-]{0,8}){1,5}(\\?[a-zA-Z0-9._~!$&()*+,;=:@/?%'#\"<> é-]{0,20})?",
            byte in proptest::num::u8::ANY,
        ) {
            proptest::prop_assert_eq!(plain_target(&target), plain_target_by_rules(&target), "{:?}", target);
            let one = format!("/a{}b?{}", char::from(byte), char::from(byte));
            proptest::prop_assert_eq!(plain_target(&one), plain_target_by_rules(&one), "{:?}", one);
        }

        #[test]
        fn an_answer_loses_the_headers_its_rules_drop(
            fields in proptest::collection::vec((0..NAMES.len(), proptest::collection::vec(0..NAMES.len() + ODD_TOKENS.len(), 0..4)), 0..8),
        ) {
            let mut headers = HeaderMap::new();
            for (name, tokens) in &fields {
                // A value of listed names for any field: `Connection`'s are
                // read as names.
                headers.append(
                    HeaderName::from_bytes(NAMES[*name].as_bytes()).unwrap(),
                    listing(tokens, b", "),
                );
            }
            let mut expected = headers.clone();
            drop_hop_by_hop_by_rules(&mut expected);
            drop_hop_by_hop(&mut headers);
            proptest::prop_assert_eq!(headers, expected);
        }

        #[test]
        fn a_name_is_listed_in_connection_as_its_rules_read(
            tokens in proptest::collection::vec(0..NAMES.len() + ODD_TOKENS.len(), 0..5),
            name in 0..NAMES.len(),
        ) {
            let mut headers = HeaderMap::new();
            headers.append(header::CONNECTION, listing(&tokens, b","));
            headers.append(header::CONNECTION, HeaderValue::from_static("upgrade"));
            let name = HeaderName::from_bytes(NAMES[name].as_bytes()).unwrap();
            proptest::prop_assert_eq!(
                connection_lists(&headers.get_all(header::CONNECTION), name.as_str()),
                connection_listed(&headers).contains(&name),
                "{:?} {}", headers, name
            );
        }

        #[test]
        fn plain_targets_are_the_usual_ones(
            target in "(/[a-zA-Z0-9_~!$&'()*+,=:@-][a-zA-Z0-9._~!$&'()*+,=:@-]{0,8}){1,5}(\\?[a-zA-Z0-9._~!$&()*+,;=:@/?%-]{0,20})?",
        ) {
            proptest::prop_assert!(plain_target(&target), "{}", target);
            let url = Url::parse(&format!("http://127.0.0.1{target}")).unwrap();
            proptest::prop_assert_eq!(&url[Position::BeforePath..Position::AfterQuery], target.as_str());
        }
    }

    #[test]
    fn targets_go_as_received_when_plain_and_as_url_parsing_reads_them_otherwise() {
        let plain = upstream("http://127.0.0.1:18081");
        let based = upstream("http://127.0.0.1:18081/mlflow/");
        for (upstream, target, sent) in [
            (
                &plain,
                "/api/2.0/mlflow/runs/get?run_id=1",
                Some("/api/2.0/mlflow/runs/get?run_id=1"),
            ),
            (
                &based,
                "/api/2.0/mlflow/runs/get?run_id=1",
                Some("/mlflow/api/2.0/mlflow/runs/get?run_id=1"),
            ),
            (&plain, "/a/../b?c", Some("/b?c")),
            (&based, "/a/./b", Some("/mlflow/a/b")),
            (&plain, "/a b", Some("/a%20b")),
            (&based, "/../admin", None),
            (&based, "/%2e%2e/admin", None),
            (&plain, "/caf\u{e9}", Some("/caf%C3%A9")),
        ] {
            let uri: Uri = target.parse().unwrap_or_else(|_| Uri::from_static("/"));
            assert_eq!(
                upstream
                    .request_target(target, &uri)
                    .map(|u| u.to_string())
                    .as_deref(),
                sent,
                "{target}"
            );
        }
    }

    /// A body of 10 bytes whose frames come when the test sends them.
    struct Trickle(mpsc::UnboundedReceiver<Bytes>);

    impl hyper::body::Body for Trickle {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(10)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_fails_only_after_a_pause_longer_than_the_timeout() {
        let (send, receive) = mpsc::unbounded_channel();
        let idle = Duration::from_secs(30);
        let body = IdleTimeout::new(Trickle(receive), idle);
        assert_eq!(
            body.size_hint().exact(),
            Some(10),
            "the length is passed on"
        );
        let reader = tokio::spawn(async move {
            let mut body = std::pin::pin!(body);
            let mut got = 0;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => got += frame.into_data().map_or(0, |d| d.len()),
                    Err(error) => return (got, Some(error.to_string())),
                }
            }
            (got, None)
        });
        // Pauses just under the timeout, many times over: never cut off.
        for _ in 0..5 {
            tokio::time::sleep(idle - Duration::from_secs(1)).await;
            send.send(Bytes::from_static(b"xx")).unwrap();
        }
        // Then a pause past it.
        tokio::time::sleep(idle + Duration::from_secs(1)).await;
        let _ = send.send(Bytes::from_static(b"late"));
        let (got, error) = reader.await.unwrap();
        assert_eq!(got, 10);
        assert!(error.is_some_and(|e| e.contains("read timeout")));
    }
}
