//! The client of the mlflow-secrets-auth node agent.
//!
//! The agent (`mlflow-secrets-auth agent`) owns the one credential cache of a
//! node; processes read the credential from it instead of from the backend,
//! so 64 workers make one backend fetch per TTL and hold no backend
//! credentials. [`AgentProvider`] is that reader as a [`SecretProvider`]: put
//! first in a chain, an unreachable agent is a transient error and the chain
//! fails over to its other providers. [`AgentClient`] speaks the agent's
//! other endpoints ([`protocol`]).
//!
//! - `MLFLOW_SECRETS_AGENT=unix:/run/user/1000/mlflow-secrets-auth/agent.sock`
//!   — the agent's Unix socket (the agent checks the caller's uid, and the
//!   client the server's: `MLFLOW_SECRETS_AGENT_UID`, default its own, or
//!   root), or
//! - `MLFLOW_SECRETS_AGENT=http://127.0.0.1:PORT` (a loopback IP literal
//!   only) with `MLFLOW_SECRETS_AGENT_TOKEN_FILE` naming the file holding the
//!   agent's token. The token never travels: each request signs a fresh
//!   challenge of the agent with it ([`protocol::signature`]), so a listener
//!   that took the port while the agent was down learns nothing it can use.
//!
//! ```no_run
//! # async fn demo() -> mlflow_secrets_auth_agent::Result<()> {
//! use mlflow_secrets_auth_agent::{AgentProvider, Env, SecretProvider};
//! if let Some(agent) = AgentProvider::from_env(&Env::process())? {
//!     let credential = agent.fetch().await?.credential()?;
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod protocol;

use std::fmt;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use mlflow_secrets_auth_core::ProviderDescription;
use mlflow_secrets_auth_core::secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncRead, AsyncWrite};
use zeroize::Zeroizing;

/// What a provider is used with, so this crate alone is enough to use it.
pub use mlflow_secrets_auth_core::{
    Env, ErrorKind, FetchedSecret, Result, SecretError, SecretMeta, SecretProvider, secrecy,
};

use crate::protocol::{ErrorAnswer, SecretAnswer};

/// The provider's name.
pub const NAME: &str = "agent";
/// The variable naming the agent: `unix:/path` or `http://127.0.0.1:PORT`.
pub const AGENT_VAR: &str = "MLFLOW_SECRETS_AGENT";
/// The variable naming the file holding the agent's token (TCP only).
pub const TOKEN_FILE_VAR: &str = "MLFLOW_SECRETS_AGENT_TOKEN_FILE";
/// The variable naming the uid the agent runs as (Unix socket; default: the
/// client's own uid). A socket served by any other uid but root is refused.
pub const UID_VAR: &str = "MLFLOW_SECRETS_AGENT_UID";
/// The largest token file read, in bytes.
const MAX_TOKEN_BYTES: u64 = 4096;
/// The longest a call to the agent may take, connection included.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the agent listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentAddr {
    /// A Unix domain socket.
    Unix(PathBuf),
    /// A loopback TCP address.
    Tcp(SocketAddr),
}

impl AgentAddr {
    /// Parses `unix:/path` or `http://IP:PORT` (a loopback IP literal: the
    /// token goes there). Errors name [`AGENT_VAR`].
    pub fn parse(value: &str) -> Result<Self> {
        let given = value.trim();
        // A socket path is shown as given (a missing `unix:` is then seen at
        // once); of an http address only `http://` and what precedes the
        // first `/`, `?` or `#`, and only without `@`; nothing of other text
        // (a token pasted into the wrong variable).
        let authority = given
            .strip_prefix("http://")
            .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or_default());
        let shown = match authority {
            _ if given.starts_with('/') => given.to_owned(),
            Some(authority) if !authority.contains('@') && authority.is_ascii() => {
                format!("http://{authority}")
            }
            _ => "(the value, not shown)".to_owned(),
        };
        let value = shown.as_str();
        if let Some(path) = given.strip_prefix("unix:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(config(AGENT_VAR, "`unix:` needs a socket path"));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        let Some(rest) = given.strip_prefix("http://") else {
            let hint = if value.starts_with('/') {
                format!("; write unix:{value}")
            } else {
                String::new()
            };
            return Err(config(
                AGENT_VAR,
                format!(
                    "is not an agent address (expected unix:/path/agent.sock or http://127.0.0.1:PORT): {value}{hint}"
                ),
            ));
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        let addr: SocketAddr = authority.parse().map_err(|_| {
            config(
                AGENT_VAR,
                format!(
                    "must be a loopback IP and a port, as in http://127.0.0.1:8765, not {value}"
                ),
            )
        })?;
        if !addr.ip().is_loopback() {
            return Err(config(
                AGENT_VAR,
                format!(
                    "must name a loopback address (the agent listens on loopback only), not {value}"
                ),
            ));
        }
        Ok(Self::Tcp(addr))
    }
}

impl fmt::Display for AgentAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
            Self::Tcp(addr) => write!(f, "http://{addr}"),
        }
    }
}

fn config(var: &str, problem: impl fmt::Display) -> SecretError {
    SecretError::config(var, problem).with_provider(NAME)
}

/// Talks HTTP/1.1 to the agent: one connection per call (calls are rare: the
/// caller caches).
#[derive(Debug, Clone)]
pub struct AgentClient {
    addr: AgentAddr,
    token_file: Option<PathBuf>,
    /// The uid the agent must run as (Unix socket).
    agent_uid: u32,
}

/// An answer of the agent: status and body.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body (at most [`protocol::MAX_ANSWER_BYTES`]), wiped on drop.
    pub body: Zeroizing<Vec<u8>>,
}

impl Answer {
    /// The error message of a refusal, cut short and safe to show.
    fn message(&self) -> String {
        let text = serde_json::from_slice::<ErrorAnswer>(&self.body)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&self.body).into_owned());
        mlflow_secrets_auth_core::classify::server_said(&text)
    }

    fn kind(&self) -> Option<ErrorKind> {
        serde_json::from_slice::<ErrorAnswer>(&self.body)
            .ok()?
            .kind
            .as_deref()
            .and_then(protocol::error_kind)
    }
}

impl AgentClient {
    /// A client of the agent at `addr`; `token_file` (TCP) holds the token.
    /// On a Unix socket the agent must run as this process's uid (or root);
    /// see [`Self::agent_uid`].
    pub fn new(addr: AgentAddr, token_file: Option<PathBuf>) -> Self {
        Self {
            addr,
            token_file,
            agent_uid: rustix::process::getuid().as_raw(),
        }
    }

    /// Expects the agent behind a Unix socket to run as `uid` (root is
    /// always accepted): a socket served by anyone else is refused before
    /// anything is sent.
    #[must_use]
    pub fn agent_uid(mut self, uid: u32) -> Self {
        self.agent_uid = uid;
        self
    }

    /// Reads [`AGENT_VAR`] and [`TOKEN_FILE_VAR`]; `None` when no agent is named.
    pub fn from_env(env: &Env<'_>) -> Result<Option<Self>> {
        let Some(value) = env.string(&[AGENT_VAR])? else {
            return Ok(None);
        };
        let addr = AgentAddr::parse(&value)?;
        let token_file = env.string(&[TOKEN_FILE_VAR])?.map(PathBuf::from);
        if matches!(addr, AgentAddr::Tcp(_)) && token_file.is_none() {
            return Err(SecretError::unset(
                TOKEN_FILE_VAR,
                format!("an agent on TCP ({addr}) needs its token"),
            )
            .with_provider(NAME));
        }
        let mut client = Self::new(addr, token_file);
        if let Some(uid) = env.string(&[UID_VAR])? {
            let uid = uid.trim().parse().map_err(|_| {
                config(
                    UID_VAR,
                    format!("{uid:?} is not a uid (a number, as `id -u` prints)"),
                )
            })?;
            client = client.agent_uid(uid);
        }
        Ok(Some(client))
    }

    /// Where the agent is.
    pub fn addr(&self) -> &AgentAddr {
        &self.addr
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Answer> {
        self.call(Method::GET, path).await
    }

    /// `POST path` (no body).
    pub async fn post(&self, path: &str) -> Result<Answer> {
        self.call(Method::POST, path).await
    }

    async fn call(&self, method: Method, path: &str) -> Result<Answer> {
        let token = match &self.token_file {
            Some(file) => Some(read_token(file)?),
            None => None,
        };
        let host = match &self.addr {
            AgentAddr::Unix(_) => "localhost".to_owned(),
            AgentAddr::Tcp(addr) => addr.to_string(),
        };
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, host)
            .header(
                header::USER_AGENT,
                concat!("mlflow-secrets-auth/", env!("CARGO_PKG_VERSION")),
            );
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| SecretError::new(ErrorKind::Config, format!("agent request: {e}")))?;
        let call = async {
            match &self.addr {
                AgentAddr::Unix(path) => {
                    let stream = tokio::net::UnixStream::connect(path)
                        .await
                        .map_err(|e| self.unreachable(&e))?;
                    self.check_server_uid(&stream)?;
                    exchange(stream, request, None).await
                }
                AgentAddr::Tcp(addr) => {
                    let stream = tokio::net::TcpStream::connect(addr)
                        .await
                        .map_err(|e| self.unreachable(&e))?;
                    let signing = token.as_ref().map(|token| (token, addr.to_string()));
                    exchange(stream, request, signing).await
                }
            }
            .map_err(|e| self.unreachable(&e))
        };
        // A stuck agent (or whatever holds its place) cannot hold a caller
        // outside the chain's own timeouts (`cache status`, `doctor`).
        tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| self.unreachable(&format!("no answer within {CALL_TIMEOUT:?}")))?
    }

    /// Refuses a socket served by a uid other than the agent's (or root):
    /// whoever took the path while the agent was down.
    fn check_server_uid(&self, stream: &tokio::net::UnixStream) -> Result<()> {
        let uid = stream.peer_cred().map_err(|e| self.unreachable(&e))?.uid();
        if uid == self.agent_uid || uid == 0 {
            return Ok(());
        }
        Err(SecretError::new(
            ErrorKind::PermissionDenied,
            format!(
                "{} is served by uid {uid}, not by the agent's uid {} (set {UID_VAR} when the agent runs as another user); nothing was sent to it",
                self.addr, self.agent_uid
            ),
        )
        .with_provider(NAME))
    }

    fn unreachable(&self, error: &dyn fmt::Display) -> SecretError {
        SecretError::new(
            ErrorKind::Transient,
            format!("the agent at {} is unreachable: {error}", self.addr),
        )
        .with_provider(NAME)
    }

    /// The error for an answer that is not a success.
    fn refusal(&self, answer: &Answer) -> SecretError {
        let message = answer.message();
        let status = answer.status;
        let error = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                let hint = match self.addr {
                    AgentAddr::Unix(_) => "run as a user the agent allows (--allow-uid)",
                    AgentAddr::Tcp(_) => "check MLFLOW_SECRETS_AGENT_TOKEN_FILE",
                };
                SecretError::new(
                    ErrorKind::PermissionDenied,
                    format!(
                        "the agent at {} refused this client ({status}: {message}); {hint}",
                        self.addr
                    ),
                )
            }
            _ => SecretError::new(
                answer.kind().unwrap_or(ErrorKind::Transient),
                format!("the agent at {} answered {status}: {message}", self.addr),
            ),
        };
        error.with_provider(NAME)
    }
}

/// Reads the token file: a regular file (a FIFO or device cannot hold the
/// call forever), trimmed, bounded, never shown. A symlink is followed: a
/// mounted Kubernetes secret is one.
fn read_token(path: &Path) -> Result<SecretString> {
    use rustix::fs::{Mode, OFlags};
    let fail = |problem: String| config(TOKEN_FILE_VAR, format!("{}: {problem}", path.display()));
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let file = std::fs::File::from(
        rustix::fs::open(path, flags, Mode::empty())
            .map_err(|e| fail(std::io::Error::from(e).to_string()))?,
    );
    if !file.metadata().map_err(|e| fail(e.to_string()))?.is_file() {
        return Err(fail("is not a regular file".to_owned()));
    }
    let mut text = Zeroizing::new(String::new());
    file.take(MAX_TOKEN_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| fail(e.to_string()))?;
    if text.len() as u64 > MAX_TOKEN_BYTES {
        return Err(fail(format!("is longer than {MAX_TOKEN_BYTES} bytes")));
    }
    let token = text.trim();
    if token.is_empty() {
        return Err(fail("is empty".to_owned()));
    }
    Ok(token.into())
}

/// One request on a fresh connection; the body is read up to the limit.
/// With a token and the agent's address (TCP), the request is signed with
/// them in answer to a challenge asked first on the same connection: the
/// token never travels.
async fn exchange<S>(
    stream: S,
    mut request: Request<Empty<Bytes>>,
    signing: Option<(&SecretString, String)>,
) -> std::io::Result<Answer>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let io_error = std::io::Error::other;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(io_error)?;
    let driver = tokio::spawn(connection);
    let answer = async {
        if let Some((token, agent)) = signing {
            let mut challenge = Request::get(protocol::CHALLENGE_PATH)
                .body(Empty::<Bytes>::new())
                .map_err(std::io::Error::other)?;
            if let Some(host) = request.headers().get(header::HOST) {
                challenge.headers_mut().insert(header::HOST, host.clone());
            }
            let response = sender.send_request(challenge).await.map_err(io_error)?;
            let status = response.status();
            let nonce = read_body(response, protocol::MAX_CHALLENGE_BYTES).await?;
            let nonce = std::str::from_utf8(&nonce).unwrap_or_default().trim();
            if status != StatusCode::OK
                || nonce.is_empty()
                || !nonce.bytes().all(|b| b.is_ascii_alphanumeric())
            {
                return Err(std::io::Error::other(format!(
                    "it gave no challenge ({status}), so it may not be the agent (or an agent older than this client); the token was not sent"
                )));
            }
            let target = request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            let signature = protocol::signature(
                token.expose_secret().as_bytes(),
                &agent,
                nonce,
                request.method().as_str(),
                &target,
            );
            let value = http::HeaderValue::from_str(&format!(
                "{} {signature}",
                protocol::SIGNED_SCHEME
            ))
            .map_err(std::io::Error::other)?;
            request.headers_mut().insert(header::AUTHORIZATION, value);
            sender.ready().await.map_err(io_error)?;
        }
        let response = sender.send_request(request).await.map_err(io_error)?;
        let status = response.status();
        let body = read_body(response, protocol::MAX_ANSWER_BYTES).await?;
        Ok(Answer { status, body })
    }
    .await;
    drop(sender);
    driver.abort();
    answer
}

/// A response's body, up to `limit` bytes.
async fn read_body(
    response: http::Response<hyper::body::Incoming>,
    limit: usize,
) -> std::io::Result<Zeroizing<Vec<u8>>> {
    let body = Limited::new(response.into_body(), limit)
        .collect()
        .await
        .map_err(|e| std::io::Error::other(format!("reading the answer: {e}")))?
        .to_bytes();
    Ok(Zeroizing::new(body.to_vec()))
}

/// Reads the credential from the agent.
#[derive(Debug, Clone)]
pub struct AgentProvider {
    client: AgentClient,
    /// The fingerprint of the value last fetched (what a refetch reports
    /// as refused).
    last: Arc<Mutex<Option<String>>>,
}

impl AgentProvider {
    /// A provider reading from `client`'s agent.
    pub fn new(client: AgentClient) -> Self {
        Self {
            client,
            last: Arc::default(),
        }
    }

    /// Reads [`AGENT_VAR`] (and [`TOKEN_FILE_VAR`]); `None` when no agent is named.
    pub fn from_env(env: &Env<'_>) -> Result<Option<Self>> {
        Ok(AgentClient::from_env(env)?.map(Self::new))
    }

    /// The client underneath.
    pub fn client(&self) -> &AgentClient {
        &self.client
    }
}

#[async_trait]
impl SecretProvider for AgentProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn fetch(&self) -> Result<FetchedSecret> {
        let answer = self.client.get(protocol::SECRET_PATH).await?;
        if answer.status != StatusCode::OK {
            return Err(self.client.refusal(&answer));
        }
        let malformed = |what: String| {
            SecretError::new(
                ErrorKind::InvalidSecret,
                format!(
                    "the agent at {} sent a malformed answer: {what}",
                    self.client.addr
                ),
            )
            .with_provider(NAME)
        };
        // serde's messages may quote the input: only the position is shown.
        let parsed: SecretAnswer = serde_json::from_slice(&answer.body).map_err(|e| {
            malformed(format!(
                "{:?} error at line {} column {}",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        let mode = parsed
            .mode()
            .ok_or_else(|| malformed("`auth_mode` is neither `bearer` nor `basic`".to_owned()))?;
        if !parsed.valid_for_secs.is_finite() || parsed.valid_for_secs < 0.0 {
            return Err(malformed(
                "`valid_for_secs` is not a non-negative number".to_owned(),
            ));
        }
        let valid_for = Duration::from_secs_f64(
            parsed
                .valid_for_secs
                .min(mlflow_secrets_auth_core::MAX_DURATION.as_secs_f64()),
        );
        let text = Zeroizing::new(
            serde_json::to_string(&parsed.credential)
                .map_err(|e| malformed(format!("{:?}", e.classify())))?,
        );
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) =
            parsed.usable_fingerprint().map(str::to_owned);
        let meta = SecretMeta::default()
            .with_valid_for(valid_for)
            .with_auth_mode(mode);
        Ok(FetchedSecret::new(text.as_str().into()).with_meta(meta))
    }

    /// Asks the agent to fetch again (`POST /v1/invalidate`, under the
    /// agent's own bounded-refetch rule), then reads the value it holds: a
    /// value one client saw refused is refetched for every client. The
    /// refused value's fingerprint goes along, so clients refused one after
    /// another around a rotation make one backend fetch, not one each.
    async fn refetch(&self) -> Result<FetchedSecret> {
        let refused = self.last.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let path = match refused {
            Some(fingerprint) => format!(
                "{}?{}={fingerprint}",
                protocol::INVALIDATE_PATH,
                protocol::REFUSED_PARAM
            ),
            None => protocol::INVALIDATE_PATH.to_owned(),
        };
        let answer = self.client.post(&path).await?;
        if answer.status != StatusCode::OK {
            return Err(self.client.refusal(&answer));
        }
        self.fetch().await
    }

    fn describe(&self) -> ProviderDescription {
        let description =
            ProviderDescription::new(NAME).field("address", self.client.addr.to_string());
        match &self.client.token_file {
            Some(file) => description.field("token_file", file.display().to_string()),
            None => description,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlflow_secrets_auth_core::redact;

    #[test]
    fn addresses_parse_and_foreign_ones_are_refused() {
        assert_eq!(
            AgentAddr::parse("unix:/run/agent.sock").unwrap(),
            AgentAddr::Unix("/run/agent.sock".into())
        );
        assert_eq!(
            AgentAddr::parse("http://127.0.0.1:8765/").unwrap(),
            AgentAddr::Tcp("127.0.0.1:8765".parse().unwrap())
        );
        assert!(matches!(
            AgentAddr::parse("http://[::1]:9").unwrap(),
            AgentAddr::Tcp(_)
        ));
        for bad in [
            "unix:",
            "http://10.0.0.1:8765",
            "http://localhost:8765",
            "http://127.0.0.1",
            "https://127.0.0.1:8765",
            "tcp://127.0.0.1:1",
            "/run/user/1000/mlflow-secrets-auth/agent.sock",
        ] {
            let error = AgentAddr::parse(bad).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::Config, "{bad}");
            let said = error.to_string();
            assert!(
                said.starts_with("MLFLOW_SECRETS_AGENT: ") && said.ends_with("(provider agent)"),
                "{bad}: {said}"
            );
            // An address is no secret: a path or an http address is shown,
            // and survives redaction; other text is not shown.
            let shown = bad == "unix:" || bad.starts_with('/') || bad.starts_with("http://");
            assert_eq!(redact(&said).contains(bad), shown, "{bad}: {said}");
        }
        let error = AgentAddr::parse("/run/agent.sock").unwrap_err().to_string();
        assert!(error.contains("write unix:/run/agent.sock"), "{error}");
        for carrying in [
            "http://u:pw-x9@127.0.0.1:8765",
            "u:pw-x9@127.0.0.1:8765",
            "http://127.0.0.1:1/?token=pw-x9",
            "hvs.pw-x9",
        ] {
            let error = AgentAddr::parse(carrying).unwrap_err().to_string();
            assert!(!error.contains("pw-x9"), "{error}");
        }
    }

    #[test]
    fn tcp_needs_a_token_file() {
        let vars = [(AGENT_VAR, "http://127.0.0.1:8765")];
        let error = AgentClient::from_env(&Env::new(&vars)).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("MLFLOW_SECRETS_AGENT_TOKEN_FILE is not set"),
            "{error}"
        );
        let none: [(&str, &str); 0] = [];
        assert!(AgentClient::from_env(&Env::new(&none)).unwrap().is_none());
    }

    #[tokio::test]
    async fn an_absent_agent_is_transient_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let agent = AgentProvider::new(AgentClient::new(AgentAddr::Unix(path.clone()), None));
        let error = agent.fetch().await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Transient);
        assert!(
            error.to_string().contains(&path.display().to_string()),
            "{error}"
        );
    }

    #[test]
    fn a_token_file_that_is_no_regular_file_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("token");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let error = read_token(&fifo).unwrap_err().to_string();
        assert!(error.contains("not a regular file"), "{error}");
        assert!(error.contains(TOKEN_FILE_VAR), "{error}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_agent_that_never_answers_is_given_up_after_the_call_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        // Connections queue in the kernel; nothing ever accepts or answers.
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let client = AgentClient::new(AgentAddr::Unix(path), None);
        let started = tokio::time::Instant::now();
        let error = client.get(protocol::STATUS_PATH).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Transient);
        assert!(error.to_string().contains("no answer within"), "{error}");
        assert_eq!(started.elapsed(), CALL_TIMEOUT);
    }
}
