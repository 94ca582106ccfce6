//! [`AzureKeyVault`]: a stand-in for Azure Key Vault and its Entra ID token
//! endpoint, for there is no Key Vault outside Azure. It speaks HTTPS on
//! 127.0.0.1 with a certificate from a CA generated for the run, and the REST
//! shapes of the real services:
//!
//! - the challenge: a vault request without a valid bearer token gets 401 with
//!   `WWW-Authenticate: Bearer authorization="<authority>/<tenant>",
//!   resource="https://vault.azure.net"` (or the `scope=` form);
//! - `GET /secrets/{name}[/{version}]?api-version=…` → `{"value", "id",
//!   "attributes": {"enabled", "created", "updated", "exp"?, "recoveryLevel"}}`,
//!   404 `SecretNotFound`, 403 for a disabled secret (`SecretDisabled`) or a
//!   denied identity, 429 with `Retry-After`, 500, or no answer at all;
//! - Entra ID: `GET /{tenant}/v2.0/.well-known/openid-configuration` and
//!   `POST /{tenant}/oauth2/v2.0/token` (client credentials, with the client
//!   secret or a federated token as `client_assertion`), refusing a wrong
//!   secret or an unknown assertion with the AADSTS error shape;
//! - a managed identity's endpoint, as App Service, Functions and Container
//!   Apps serve it: `GET /msi/token?api-version=2019-08-01&resource=…
//!   [&client_id=…]` with `X-IDENTITY-HEADER` → `{"access_token",
//!   "expires_on": "<unix seconds>", …}`.
//!
//! The double is checked against Microsoft's own Python clients
//! (`azure-keyvault-secrets`, `azure-identity`) by the `secrets-azure` tests.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// The tenant of the double's Entra ID.
pub const TENANT_ID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
/// The application (client) id the token endpoint accepts.
pub const CLIENT_ID: &str = "3f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b";
/// Its client secret.
pub const CLIENT_SECRET: &str = "azure-client-secret-9Qx~test";
/// The `IDENTITY_HEADER` secret the managed-identity endpoint takes.
pub const IDENTITY_HEADER: &str = "identity-header-7Hc2-test";
/// The path of the managed-identity endpoint (`IDENTITY_ENDPOINT` is the
/// double's URL and this).
pub const IDENTITY_PATH: &str = "/msi/token";
/// The `client_assertion_type` of a federated token.
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// A Key Vault host name the certificate is also valid for: clients that
/// check the challenge's resource against the vault's domain use
/// `https://VAULT_HOST:PORT` and resolve it to 127.0.0.1 themselves.
pub const VAULT_HOST: &str = "mlflow-test.vault.azure.net";

/// The `expires_in` of issued tokens, unless set otherwise.
const TOKEN_LIFETIME_SECS: u64 = 3600;

/// How the vault answers secret reads (token requests are always served).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// As Key Vault does.
    Normal,
    /// 403 `Forbidden` (the identity lacks `secrets/get`).
    Denied,
    /// 429 with `Retry-After: <seconds>`.
    Throttled(u64),
    /// 500 `InternalServerError`.
    Failing,
    /// Accepts the request and never answers.
    Hanging,
}

/// The challenge's form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// `resource="https://vault.azure.net"`.
    Resource,
    /// `scope="https://vault.azure.net/.default"`.
    Scope,
}

#[derive(Debug, Clone)]
struct Version {
    id: String,
    value: String,
    enabled: bool,
    expires: Option<u64>,
    created: u64,
}

#[derive(Debug)]
struct State {
    secrets: HashMap<String, Vec<Version>>,
    tokens: HashSet<String>,
    mode: Mode,
    challenge: Challenge,
    /// Federated tokens the app registration trusts.
    federated: HashSet<String>,
    /// Every `client_assertion` presented, in order.
    assertions: Vec<String>,
    token_lifetime: u64,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    base: String,
    stop: AtomicBool,
    token_requests: AtomicUsize,
    secret_reads: AtomicUsize,
    counter: AtomicUsize,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running double; stops on drop.
#[derive(Debug)]
pub struct AzureKeyVault {
    addr: SocketAddr,
    shared: Arc<Shared>,
    ca_pem: String,
    ca_path: PathBuf,
    thread: Option<JoinHandle<()>>,
}

impl AzureKeyVault {
    /// Starts the double on a free port of 127.0.0.1.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the Key Vault double");
        let addr = listener.local_addr().expect("local address");
        let (config, ca_pem) = tls_config();
        let ca_path = std::env::temp_dir().join(format!(
            "azure-double-ca-{}-{}.pem",
            std::process::id(),
            addr.port()
        ));
        std::fs::write(&ca_path, &ca_pem).expect("write the test CA");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                secrets: HashMap::new(),
                tokens: HashSet::new(),
                mode: Mode::Normal,
                challenge: Challenge::Resource,
                federated: HashSet::new(),
                assertions: Vec::new(),
                token_lifetime: TOKEN_LIFETIME_SECS,
            }),
            base: format!("https://{addr}"),
            stop: AtomicBool::new(false),
            token_requests: AtomicUsize::new(0),
            secret_reads: AtomicUsize::new(0),
            counter: AtomicUsize::new(0),
        });
        let serving = Arc::clone(&shared);
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if serving.stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (shared, config) = (Arc::clone(&serving), Arc::clone(&config));
                std::thread::spawn(move || {
                    let _ = serve(stream, config, &shared);
                });
            }
        });
        Self {
            addr,
            shared,
            ca_pem,
            ca_path,
            thread: Some(thread),
        }
    }

    /// `https://127.0.0.1:PORT`: the vault URL for clients that do not check
    /// the challenge's resource, and the authority host.
    pub fn url(&self) -> String {
        self.shared.base.clone()
    }

    /// `https://VAULT_HOST:PORT`: the vault URL for clients that check the
    /// challenge's resource; resolve [`VAULT_HOST`] to [`Self::addr`].
    pub fn vault_url(&self) -> String {
        format!("https://{VAULT_HOST}:{}", self.addr.port())
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The test CA's certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A file holding [`Self::ca_pem`].
    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// Stores `value` as the new current version of `name`; returns the version id.
    pub fn set_secret(&self, name: &str, value: &str) -> String {
        self.set_secret_with(name, value, true, None)
    }

    /// Stores a new version with its `enabled` flag and expiry (Unix seconds).
    pub fn set_secret_with(
        &self,
        name: &str,
        value: &str,
        enabled: bool,
        expires: Option<u64>,
    ) -> String {
        let n = self.shared.counter.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:032x}", u128::from(now()) << 64 | n as u128);
        self.shared
            .state()
            .secrets
            .entry(name.to_owned())
            .or_default()
            .push(Version {
                id: id.clone(),
                value: value.to_owned(),
                enabled,
                expires,
                created: now(),
            });
        id
    }

    /// Sets how secret reads are answered.
    pub fn set_mode(&self, mode: Mode) {
        self.shared.state().mode = mode;
    }

    /// Sets the challenge's form.
    pub fn set_challenge(&self, challenge: Challenge) {
        self.shared.state().challenge = challenge;
    }

    /// Trusts `token` as a federated credential of the app (workload
    /// identity: the service account token Kubernetes projects).
    pub fn trust_federated_token(&self, token: &str) {
        self.shared.state().federated.insert(token.to_owned());
    }

    /// Every `client_assertion` presented to the token endpoint, in order.
    pub fn assertions(&self) -> Vec<String> {
        self.shared.state().assertions.clone()
    }

    /// How long issued tokens live (default an hour). Under five minutes,
    /// the SDK asks for a new one at every call.
    pub fn set_token_lifetime(&self, seconds: u64) {
        self.shared.state().token_lifetime = seconds;
    }

    /// `IDENTITY_ENDPOINT` for the managed-identity endpoint.
    pub fn identity_endpoint(&self) -> String {
        format!("{}{IDENTITY_PATH}", self.shared.base)
    }

    /// Token requests answered so far (successful or not), the
    /// managed-identity endpoint's included.
    pub fn token_requests(&self) -> usize {
        self.shared.token_requests.load(Ordering::Relaxed)
    }

    /// Authorized secret reads so far (whatever their answer).
    pub fn secret_reads(&self) -> usize {
        self.shared.secret_reads.load(Ordering::Relaxed)
    }
}

impl Drop for AzureKeyVault {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.ca_path);
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A CA made for this run and a server certificate it signs, valid for
/// 127.0.0.1, localhost and [`VAULT_HOST`].
fn tls_config() -> (Arc<rustls::ServerConfig>, String) {
    crate::tls::server_config(&["127.0.0.1", "localhost", VAULT_HOST])
}

struct Request {
    method: String,
    path: String,
    query: HashMap<String, String>,
    headers: HashMap<String, String>,
    body: String,
}

struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

impl Reply {
    fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.to_string(),
        }
    }

    fn header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }
}

fn serve(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
    shared: &Shared,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let connection = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(connection, stream);
    let request = read_request(&mut tls)?;
    let reply = match route(&request, shared) {
        Some(reply) => reply,
        None => {
            // Hanging: hold the connection until the client gives up or the
            // double stops.
            while !shared.stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            return Ok(());
        }
    };
    let reason = match reply.status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        _ => "Error",
    };
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nx-ms-request-id: {}\r\n",
        reply.status,
        reply.body.len(),
        shared.counter.fetch_add(1, Ordering::Relaxed)
    );
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    tls.write_all(head.as_bytes())?;
    tls.write_all(reply.body.as_bytes())?;
    tls.flush()?;
    tls.conn.send_close_notify();
    let _ = tls.flush();
    Ok(())
}

fn read_request(stream: &mut impl Read) -> std::io::Result<Request> {
    let read = crate::net::read_request_from(stream)?;
    let mut parts = read.line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Request {
        method,
        path: percent_decode(path),
        query: parse_form(query),
        headers: read.headers.into_iter().collect(),
        body: String::from_utf8_lossy(&read.body).into_owned(),
    })
}

fn parse_form(text: &str) -> HashMap<String, String> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (
                percent_decode(&k.replace('+', " ")),
                percent_decode(&v.replace('+', " ")),
            )
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The answer to `request`, or `None` to never answer.
fn route(request: &Request, shared: &Shared) -> Option<Reply> {
    let segments: Vec<&str> = request.path.trim_start_matches('/').split('/').collect();
    match (request.method.as_str(), segments.as_slice()) {
        ("GET", [tenant, "v2.0", ".well-known", "openid-configuration"]) => {
            Some(openid_configuration(tenant, shared))
        }
        ("POST", [tenant, "oauth2", "v2.0", "token"]) => Some(token(tenant, request, shared)),
        ("GET", ["msi", "token"]) => Some(managed_identity(request, shared)),
        ("GET", ["secrets", name]) | ("GET", ["secrets", name, ""]) => {
            secret(request, shared, name, None)
        }
        ("GET", ["secrets", name, version]) => secret(request, shared, name, Some(version)),
        _ => Some(error(404, "NotFound", "no such operation")),
    }
}

fn error(status: u16, code: &str, message: &str) -> Reply {
    Reply::json(
        status,
        json!({ "error": { "code": code, "message": message } }),
    )
}

fn openid_configuration(tenant: &str, shared: &Shared) -> Reply {
    let issuer = format!("{}/{tenant}/v2.0", shared.base);
    Reply::json(
        200,
        json!({
            "issuer": issuer,
            "token_endpoint": format!("{}/{tenant}/oauth2/v2.0/token", shared.base),
            "authorization_endpoint": format!("{}/{tenant}/oauth2/v2.0/authorize", shared.base),
            "device_authorization_endpoint": format!("{}/{tenant}/oauth2/v2.0/devicecode", shared.base),
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "tenant_region_scope": "EU",
        }),
    )
}

/// The AAD error shape.
fn aad_error(status: u16, error: &str, code: u32, description: &str) -> Reply {
    Reply::json(
        status,
        json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {description} Trace ID: 00000000-0000-0000-0000-000000000000"),
            "error_codes": [code],
            "timestamp": "2026-01-01 00:00:00Z",
            "trace_id": "00000000-0000-0000-0000-000000000000",
            "correlation_id": "00000000-0000-0000-0000-000000000000",
        }),
    )
}

fn token(tenant: &str, request: &Request, shared: &Shared) -> Reply {
    shared.token_requests.fetch_add(1, Ordering::Relaxed);
    let form = parse_form(&request.body);
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    if tenant != TENANT_ID {
        return aad_error(
            400,
            "invalid_request",
            90002,
            &format!("Tenant '{tenant}' not found."),
        );
    }
    if field("grant_type") != "client_credentials" {
        return aad_error(
            400,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    if field("client_id") != CLIENT_ID {
        return aad_error(
            400,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{}' was not found in the directory.",
                field("client_id")
            ),
        );
    }
    if field("client_assertion_type") == JWT_BEARER {
        let assertion = field("client_assertion").to_owned();
        let mut state = shared.state();
        state.assertions.push(assertion.clone());
        if !state.federated.contains(&assertion) {
            return aad_error(
                401,
                "invalid_client",
                700213,
                &format!(
                    "No matching federated identity record found for presented assertion subject. Check your federated identity credential configuration of app '{CLIENT_ID}'."
                ),
            );
        }
    } else if field("client_secret") != CLIENT_SECRET {
        return aad_error(
            401,
            "invalid_client",
            7000215,
            &format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{CLIENT_ID}'."
            ),
        );
    }
    if !field("scope").starts_with("https://vault.azure.net") {
        return aad_error(
            400,
            "invalid_scope",
            1002012,
            "The provided value for scope is not valid.",
        );
    }
    let (access_token, lifetime) = issue(shared);
    Reply::json(
        200,
        json!({
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": access_token,
        }),
    )
}

/// A new access token the vault accepts, and its lifetime.
fn issue(shared: &Shared) -> (String, u64) {
    let n = shared.counter.fetch_add(1, Ordering::Relaxed);
    let access_token = format!("eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.double-{n}-{}", now());
    let mut state = shared.state();
    state.tokens.insert(access_token.clone());
    (access_token, state.token_lifetime)
}

/// The managed-identity endpoint of App Service (api-version 2019-08-01):
/// the system-assigned identity, or the user-assigned [`CLIENT_ID`].
fn managed_identity(request: &Request, shared: &Shared) -> Reply {
    shared.token_requests.fetch_add(1, Ordering::Relaxed);
    let query = |name: &str| request.query.get(name).map(String::as_str);
    if request.headers.get("x-identity-header").map(String::as_str) != Some(IDENTITY_HEADER) {
        return Reply::json(
            401,
            json!({"statusCode": 401, "message": "Unauthorized: the X-IDENTITY-HEADER is missing or wrong."}),
        );
    }
    if query("api-version") != Some("2019-08-01") {
        return Reply::json(
            400,
            json!({"statusCode": 400, "message": "Unsupported api-version."}),
        );
    }
    if query("resource") != Some("https://vault.azure.net") {
        return Reply::json(
            400,
            json!({"statusCode": 400, "message": "Invalid resource."}),
        );
    }
    if query("client_id").is_some_and(|id| id != CLIENT_ID) {
        return Reply::json(
            400,
            json!({"statusCode": 400, "message": "No user-assigned identity with this client_id is assigned to the resource."}),
        );
    }
    let (access_token, lifetime) = issue(shared);
    Reply::json(
        200,
        json!({
            "access_token": access_token,
            "expires_on": (now() + lifetime).to_string(),
            "resource": "https://vault.azure.net",
            "token_type": "Bearer",
            "client_id": CLIENT_ID,
        }),
    )
}

fn secret(request: &Request, shared: &Shared, name: &str, version: Option<&str>) -> Option<Reply> {
    let state = shared.state();
    let presented = request
        .headers
        .get("authorization")
        .and_then(|v| v.strip_prefix("Bearer "));
    if !presented.is_some_and(|t| state.tokens.contains(t)) {
        let authorization = format!("{}/{TENANT_ID}", shared.base);
        let challenge = match state.challenge {
            Challenge::Resource => format!(
                r#"Bearer authorization="{authorization}", resource="https://vault.azure.net""#
            ),
            Challenge::Scope => format!(
                r#"Bearer authorization="{authorization}", scope="https://vault.azure.net/.default""#
            ),
        };
        return Some(
            error(
                401,
                "Unauthorized",
                "AKV10000: Request is missing a Bearer or PoP token.",
            )
            .header("WWW-Authenticate", challenge),
        );
    }
    shared.secret_reads.fetch_add(1, Ordering::Relaxed);
    if !request.query.contains_key("api-version") {
        return Some(error(
            400,
            "BadParameter",
            "The request URI contains an invalid or missing api-version.",
        ));
    }
    match &state.mode {
        Mode::Normal => {}
        Mode::Denied => {
            return Some(Reply::json(
                403,
                json!({"error": {
                    "code": "Forbidden",
                    "message": format!("The user, group or application 'appid={CLIENT_ID}' does not have secrets get permission on key vault. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287"),
                    "innererror": {"code": "AccessDenied"},
                }}),
            ));
        }
        Mode::Throttled(seconds) => {
            return Some(
                error(
                    429,
                    "Throttled",
                    "Request was not processed because too many requests were received.",
                )
                .header("Retry-After", seconds.to_string()),
            );
        }
        Mode::Failing => {
            return Some(error(
                500,
                "InternalServerError",
                "The service encountered an internal error.",
            ));
        }
        Mode::Hanging => return None,
    }
    let versions = state.secrets.get(name);
    let found = match version {
        None => versions.and_then(|v| v.last()),
        Some(id) => versions.and_then(|v| v.iter().find(|x| x.id == id)),
    };
    let Some(found) = found else {
        let which = version.map_or_else(|| name.to_owned(), |v| format!("{name}/{v}"));
        return Some(error(
            404,
            "SecretNotFound",
            &format!(
                "A secret with (name/id) {which} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
            ),
        ));
    };
    if !found.enabled {
        return Some(Reply::json(
            403,
            json!({"error": {
                "code": "Forbidden",
                "message": "Operation get is not allowed on a disabled secret.",
                "innererror": {"code": "SecretDisabled"},
            }}),
        ));
    }
    let mut attributes = json!({
        "enabled": true,
        "created": found.created,
        "updated": found.created,
        "recoverableDays": 90,
        "recoveryLevel": "Recoverable+Purgeable",
    });
    if let Some(exp) = found.expires {
        attributes["exp"] = json!(exp);
    }
    let base = request
        .headers
        .get("host")
        .map_or_else(|| shared.base.clone(), |host| format!("https://{host}"));
    Some(Reply::json(
        200,
        json!({
            "value": found.value,
            "id": format!("{base}/secrets/{name}/{}", found.id),
            "attributes": attributes,
            "tags": {},
        }),
    ))
}
