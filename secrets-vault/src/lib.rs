//! The HashiCorp Vault / OpenBao provider of mlflow-secrets-auth.
//!
//! [`VaultProvider`] reads one KV secret with `vaultrs` and hands its data map,
//! as JSON, to the rest of the chain (`secrets-core` picks the token or the
//! username and password out of it).
//!
//! - Auth: a token (`VAULT_TOKEN`), AppRole (`VAULT_ROLE_ID` +
//!   `VAULT_SECRET_ID`), or a JWT read from a file at every login
//!   (`kubernetes` or `jwt` auth, `MLFLOW_VAULT_AUTH_METHOD`): no static
//!   secret on the node. One lifecycle for every token: renewed (renew-self)
//!   at about two thirds of its TTL, with jitter; replaced by a new login
//!   when it cannot be renewed, when its `max_ttl` stops the renewals, when
//!   a renewal fails, or when Vault answers 403 on a token that worked (once
//!   per fetch); never used past its expiry; failed logins back off. A
//!   token the user gave is renewed when it can be, never replaced.
//! - KV version: detected per mount (`sys/internal/ui/mounts/<path>`) and
//!   remembered; where that lookup is denied, KV v2 is tried, then KV v1.
//!   `secret/x` and `secret/data/x` both name the same KV v2 secret.
//! - A KV v1 `lease_duration` becomes the secret's validity, so a cache never
//!   keeps it longer.
//!
//! ```no_run
//! # async fn demo() -> mlflow_secrets_auth_vault::Result<()> {
//! use mlflow_secrets_auth_vault::{Env, SecretProvider, VaultProvider};
//! let provider = VaultProvider::from_env(&Env::process())?;
//! let credential = provider.fetch().await?.credential()?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod errors;
mod kv;
mod lease;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mlflow_secrets_auth_core::secrecy::{ExposeSecret, SecretString};
use mlflow_secrets_auth_core::{ProviderDescription, checked_endpoint, mask};

/// What a provider is used with, so this crate alone is enough to use it.
pub use mlflow_secrets_auth_core::{
    Env, ErrorKind, FetchedSecret, Result, SecretError, SecretMeta, SecretProvider, secrecy,
};
use vaultrs::client::{Client as _, VaultClient, VaultClientSettingsBuilder};

use crate::errors::Action;
pub use crate::kv::KvMount;
use crate::lease::{Lease, Step};

/// The provider's name.
pub const NAME: &str = "vault";

/// `token`, `approle`, `kubernetes` or `jwt`; unset: a token if there is
/// one, else AppRole.
pub const AUTH_METHOD: &str = "MLFLOW_VAULT_AUTH_METHOD";
/// The role of Kubernetes or JWT auth.
pub const AUTH_ROLE: &str = "MLFLOW_VAULT_AUTH_ROLE";
/// The mount of Kubernetes or JWT auth (default `kubernetes`, `jwt`).
pub const AUTH_MOUNT: &str = "MLFLOW_VAULT_AUTH_MOUNT";
/// The file holding the JWT (default for Kubernetes: [`KUBERNETES_TOKEN_FILE`]).
pub const JWT_FILE: &str = "MLFLOW_VAULT_JWT_FILE";

pub use mlflow_secrets_auth_core::DEFAULT_REQUEST_TIMEOUT;

/// How the provider authenticates to Vault.
#[derive(Clone)]
pub enum VaultAuth {
    /// A token.
    Token(SecretString),
    /// AppRole login.
    AppRole {
        /// The role id.
        role_id: String,
        /// The secret id.
        secret_id: SecretString,
        /// The auth mount (default `approle`).
        mount: String,
    },
    /// A JWT read from `file` at every login (a projected token rotates).
    Jwt {
        /// Kubernetes or JWT auth.
        method: JwtMethod,
        /// The role (required by Kubernetes auth; JWT auth has a default role).
        role: Option<String>,
        /// The auth mount (default `kubernetes` or `jwt`).
        mount: String,
        /// The file holding the JWT.
        file: PathBuf,
    },
}

/// Which Vault auth method a JWT logs in with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtMethod {
    /// `kubernetes` auth: a service-account token, checked by the cluster.
    Kubernetes,
    /// `jwt` auth: any JWT whose issuer Vault trusts (GitHub Actions,
    /// GitLab CI, a workload identity provider).
    Jwt,
}

impl JwtMethod {
    /// The name as in `MLFLOW_VAULT_AUTH_METHOD`, and its default mount.
    pub fn name(self) -> &'static str {
        match self {
            Self::Kubernetes => "kubernetes",
            Self::Jwt => "jwt",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Kubernetes => "Kubernetes",
            Self::Jwt => "JWT",
        }
    }

    fn check(self) -> &'static str {
        match self {
            Self::Kubernetes => {
                "check MLFLOW_VAULT_AUTH_ROLE, and that the role is bound to this service account and namespace"
            }
            Self::Jwt => {
                "check MLFLOW_VAULT_AUTH_ROLE, and that the role's bound audience and claims match the token's"
            }
        }
    }
}

/// The service-account token a pod has, where Kubernetes projects it.
pub const KUBERNETES_TOKEN_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

impl fmt::Debug for VaultAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Token(_) => f.write_str("Token(***)"),
            Self::AppRole { role_id, mount, .. } => f
                .debug_struct("AppRole")
                .field("role_id", &mask(role_id))
                .field("secret_id", &"***")
                .field("mount", mount)
                .finish(),
            Self::Jwt {
                method,
                role,
                mount,
                file,
            } => f
                .debug_struct("Jwt")
                .field("method", method)
                .field("role", role)
                .field("mount", mount)
                .field("file", file)
                .finish(),
        }
    }
}

/// Builds a [`VaultProvider`] from code.
#[derive(Debug, Clone, Default)]
pub struct VaultProviderBuilder {
    address: Option<String>,
    path: Option<String>,
    auth: Option<VaultAuth>,
    namespace: Option<String>,
    ca_cert: Option<PathBuf>,
    skip_verify: bool,
    request_timeout: Option<Duration>,
}

impl VaultProviderBuilder {
    /// The server address, e.g. `https://vault.example.com:8200` (required).
    #[must_use]
    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.address = Some(address.into());
        self
    }

    /// The secret's path, e.g. `secret/mlflow/auth` (required).
    #[must_use]
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// Authenticate with a token.
    #[must_use]
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.auth = Some(VaultAuth::Token(SecretString::from(token.into())));
        self
    }

    /// Authenticate with AppRole on `mount`.
    #[must_use]
    pub fn approle(
        mut self,
        role_id: impl Into<String>,
        secret_id: impl Into<String>,
        mount: impl Into<String>,
    ) -> Self {
        self.auth = Some(VaultAuth::AppRole {
            role_id: role_id.into(),
            secret_id: SecretString::from(secret_id.into()),
            mount: mount.into(),
        });
        self
    }

    /// Authenticate with a JWT read from `file` at every login, on `mount`
    /// (`kubernetes` or `jwt` by default).
    #[must_use]
    pub fn jwt_login(
        mut self,
        method: JwtMethod,
        role: Option<String>,
        mount: Option<String>,
        file: impl Into<PathBuf>,
    ) -> Self {
        self.auth = Some(VaultAuth::Jwt {
            method,
            role,
            mount: mount.unwrap_or_else(|| method.name().to_owned()),
            file: file.into(),
        });
        self
    }

    /// A Vault Enterprise / OpenBao namespace.
    #[must_use]
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// A PEM file with the CA certificate(s) to trust.
    #[must_use]
    pub fn ca_cert(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_cert = Some(path.into());
        self
    }

    /// Turns TLS certificate checks off. Dangerous; reported as a warning.
    #[must_use]
    pub fn skip_verify(mut self, skip: bool) -> Self {
        self.skip_verify = skip;
        self
    }

    /// The timeout of one request (default 10 s).
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// The provider; fails naming what is missing.
    pub fn build(self) -> Result<VaultProvider> {
        let address = self.address.filter(|a| !a.trim().is_empty());
        let path = self
            .path
            .map(|p| p.trim().trim_matches('/').to_owned())
            .filter(|p| !p.is_empty());
        // Every missing variable at once, not one per attempt.
        let missing: Vec<String> = [
            (address.is_none(), "VAULT_ADDR", "the Vault server's address"),
            (path.is_none(), "MLFLOW_VAULT_SECRET_PATH", "the secret's path"),
            (
                self.auth.is_none(),
                "VAULT_TOKEN",
                "set VAULT_TOKEN, or VAULT_ROLE_ID and VAULT_SECRET_ID for AppRole, or log in with `vault login` or `bao login`",
            ),
        ]
        .into_iter()
        .filter(|(absent, _, _)| *absent)
        .map(|(_, var, what)| format!("{var} is not set: {what}"))
        .collect();
        let (Some(address), Some(path), Some(auth)) = (address, path, self.auth) else {
            return Err(SecretError::new(ErrorKind::Config, missing.join("; ")).with_provider(NAME));
        };
        let address = checked_address(address.trim())?;
        if let VaultAuth::Token(token) = &auth
            && token.expose_secret().chars().any(char::is_control)
        {
            return Err(SecretError::config(
                "VAULT_TOKEN",
                "has a control character (a line break pasted with it?)",
            )
            .with_provider(NAME));
        }
        if path.chars().any(char::is_control)
            || path
                .split('/')
                .any(|segment| segment == "." || segment == "..")
        {
            return Err(SecretError::config(
                "MLFLOW_VAULT_SECRET_PATH",
                "has a `.` or `..` segment or a control character; write the path itself",
            )
            .with_provider(NAME));
        }
        // Sent as headers: a control character would make them invalid.
        let namespace = self.namespace.filter(|n| !n.trim().is_empty());
        if namespace
            .as_deref()
            .is_some_and(|n| n.chars().any(char::is_control))
        {
            return Err(
                SecretError::config("VAULT_NAMESPACE", "has a control character")
                    .with_provider(NAME),
            );
        }
        Ok(VaultProvider {
            address,
            path,
            auth,
            namespace,
            ca_cert: self.ca_cert,
            skip_verify: self.skip_verify,
            request_timeout: self.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT),
            session: tokio::sync::Mutex::new(Sessions::default()),
            mount: Mutex::new(None),
        })
    }
}

/// The token in `home/.vault-token`, where the `vault` and `bao` CLIs keep
/// the token of their last login; `None` when there is none (or it cannot
/// be read: then the usual "VAULT_TOKEN is not set" explains what to do).
fn token_helper_file(home: &str) -> Option<SecretString> {
    use std::io::Read as _;
    let file = std::fs::File::open(Path::new(home).join(".vault-token")).ok()?;
    let mut text = zeroize::Zeroizing::new(String::new());
    file.take(TOKEN_FILE_LIMIT).read_to_string(&mut text).ok()?;
    let token = text.trim();
    if token.is_empty() {
        return None;
    }
    mlflow_secrets_auth_core::hide_everywhere(token);
    Some(token.into())
}

/// The largest token helper file read, in bytes.
const TOKEN_FILE_LIMIT: u64 = 4096;

/// `address` when the Vault client can use it (it panics on what it cannot
/// parse); else a `config` error naming `VAULT_ADDR` and the expected shape.
fn checked_address(address: &str) -> Result<String> {
    let checked = checked_endpoint(
        address,
        "VAULT_ADDR",
        &["http", "https"],
        "https://vault.example.com:8200",
    )
    .map_err(|e| e.with_provider(NAME))?;
    // vaultrs puts a base path after `/v1/`, where another application
    // behind the same reverse proxy would get the token: none is taken.
    if url::Url::parse(&checked).is_ok_and(|url| url.path() != "/") {
        return Err(SecretError::config(
            "VAULT_ADDR",
            "has a path; give the server's scheme, host and port only (a Vault behind a base path is not supported)",
        )
        .with_provider(NAME));
    }
    Ok(checked)
}

/// A logged-in client and its token's lease.
struct Session {
    client: Arc<VaultClient>,
    lease: Lease,
}

/// The session, and what failed logins left.
#[derive(Default)]
struct Sessions {
    current: Option<Arc<Session>>,
    /// Logins refused or failed by Vault in a row.
    failures: u32,
    /// No login before this (after a failed one).
    retry_at: Option<Instant>,
    /// The last failed login's error, answered until `retry_at`.
    last_error: Option<SecretError>,
}

impl Sessions {
    /// A login failed: the next waits, longer after each.
    fn failed(&mut self, error: SecretError) {
        self.failures = self.failures.saturating_add(1);
        self.wait(lease::backoff(self.failures), error);
    }

    /// No login for `wait`; `error` meanwhile, when there is no token.
    fn wait(&mut self, wait: Duration, error: SecretError) {
        self.retry_at = Instant::now().checked_add(wait);
        self.last_error = Some(error);
    }
}

/// `session` when it may still be used now: not expired, and not the token
/// Vault just refused (`replace`).
fn usable(session: Option<Arc<Session>>, replace: bool) -> Option<Arc<Session>> {
    session.filter(|s| !replace && s.lease.step(Instant::now()) != Step::Expired)
}

/// Why a login failed, and whether Vault answered it (a refusal, an
/// overload): then the next one backs off.
struct LoginError {
    error: SecretError,
    answered: bool,
}

impl From<SecretError> for LoginError {
    fn from(error: SecretError) -> Self {
        Self {
            error,
            answered: false,
        }
    }
}

/// A lease's TTL as reported (capped: it is server input).
fn reported(seconds: u64) -> Duration {
    mlflow_secrets_auth_core::capped(Duration::from_secs(seconds))
}

/// Reads one KV secret from Vault or OpenBao.
pub struct VaultProvider {
    address: String,
    path: String,
    auth: VaultAuth,
    namespace: Option<String>,
    ca_cert: Option<PathBuf>,
    skip_verify: bool,
    request_timeout: Duration,
    session: tokio::sync::Mutex<Sessions>,
    /// The KV mount and version, once known.
    mount: Mutex<Option<KvMount>>,
}

impl fmt::Debug for VaultProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultProvider")
            .field("address", &self.address)
            .field("namespace", &self.namespace)
            .field("path", &self.path)
            .field("auth", &self.auth)
            .field("skip_verify", &self.skip_verify)
            .finish_non_exhaustive()
    }
}

impl VaultProvider {
    /// Where the secret lives — provider, location, name, version — as one
    /// string for logs, status and tests (never the secret itself).
    pub fn secret_ref(&self) -> String {
        format!(
            "vault:{}:{}:{}",
            self.address,
            self.namespace.as_deref().unwrap_or(""),
            self.path
        )
    }

    /// A builder.
    pub fn builder() -> VaultProviderBuilder {
        VaultProviderBuilder::default()
    }

    /// Reads `VAULT_ADDR`, `VAULT_TOKEN` or `VAULT_ROLE_ID` + `VAULT_SECRET_ID`
    /// (`MLFLOW_VAULT_APPROLE_MOUNT`), `VAULT_NAMESPACE`, `VAULT_CACERT`,
    /// `VAULT_SKIP_VERIFY`, `MLFLOW_VAULT_SECRET_PATH` and
    /// `MLFLOW_SECRETS_REQUEST_TIMEOUT_SEC`.
    pub fn from_env(env: &Env<'_>) -> Result<Self> {
        Self::builder_from_env(env)
            .and_then(VaultProviderBuilder::build)
            .map_err(|e| e.with_provider(NAME))
    }

    fn builder_from_env(env: &Env<'_>) -> Result<VaultProviderBuilder> {
        // OpenBao's names are read too, after Vault's.
        let skip_verify = if env.string(&["VAULT_SKIP_VERIFY"])?.is_some() {
            env.flag("VAULT_SKIP_VERIFY", false)?
        } else {
            env.flag("BAO_SKIP_VERIFY", false)?
        };
        let mut builder = Self::builder()
            .skip_verify(skip_verify)
            .request_timeout(env.seconds(
                mlflow_secrets_auth_core::REQUEST_TIMEOUT_VAR,
                DEFAULT_REQUEST_TIMEOUT,
            )?);
        if let Some(address) = env.string(&["VAULT_ADDR", "BAO_ADDR"])? {
            builder = builder.address(address);
        }
        if let Some(path) = env.string(&["MLFLOW_VAULT_SECRET_PATH"])? {
            builder = builder.path(path);
        }
        if let Some(namespace) = env.string(&["VAULT_NAMESPACE", "BAO_NAMESPACE"])? {
            builder = builder.namespace(namespace);
        }
        if let Some(ca) = env.string(&["VAULT_CACERT", "BAO_CACERT"])? {
            builder = builder.ca_cert(ca);
        }
        let method = env
            .string(&[AUTH_METHOD])?
            .map(|m| m.trim().to_ascii_lowercase())
            .filter(|m| !m.is_empty());
        let role = env
            .string(&[AUTH_ROLE])?
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty());
        let mount = env
            .string(&[AUTH_MOUNT])?
            .map(|m| m.trim().trim_matches('/').to_owned())
            .filter(|m| !m.is_empty());
        let jwt_file = env.string(&[JWT_FILE])?.filter(|f| !f.trim().is_empty());
        let jwt = |method: JwtMethod, file: String| VaultAuth::Jwt {
            method,
            role: role.clone(),
            mount: mount.clone().unwrap_or_else(|| method.name().to_owned()),
            file: file.into(),
        };
        builder.auth = match method.as_deref() {
            None | Some("token" | "approle") => {
                let auth = Self::token_or_approle(env)?;
                match (method.as_deref(), &auth) {
                    (Some("token"), Some(VaultAuth::AppRole { .. }) | None) => {
                        return Err(SecretError::unset(
                            "VAULT_TOKEN",
                            "MLFLOW_VAULT_AUTH_METHOD=token needs a token (or `vault login`)",
                        ));
                    }
                    (Some("approle"), Some(VaultAuth::Token(_)) | None) => {
                        let given = Self::approle(env)?;
                        if given.is_none() {
                            return Err(SecretError::unset(
                                "VAULT_ROLE_ID",
                                "MLFLOW_VAULT_AUTH_METHOD=approle needs VAULT_ROLE_ID and VAULT_SECRET_ID",
                            ));
                        }
                        given
                    }
                    _ => auth,
                }
            }
            Some("kubernetes") => {
                if role.is_none() {
                    return Err(SecretError::unset(
                        AUTH_ROLE,
                        "Kubernetes auth needs the Vault role bound to this service account",
                    ));
                }
                Some(jwt(
                    JwtMethod::Kubernetes,
                    jwt_file.unwrap_or_else(|| KUBERNETES_TOKEN_FILE.to_owned()),
                ))
            }
            Some("jwt") => {
                let Some(file) = jwt_file else {
                    return Err(SecretError::unset(
                        JWT_FILE,
                        "JWT auth needs the file holding the token (read again at every login)",
                    ));
                };
                Some(jwt(JwtMethod::Jwt, file))
            }
            Some(_) => {
                return Err(SecretError::config(
                    AUTH_METHOD,
                    "is not an auth method (expected token, approle, kubernetes or jwt)",
                ));
            }
        };
        Ok(builder)
    }

    /// The token or AppRole the environment holds, as inferred when
    /// `MLFLOW_VAULT_AUTH_METHOD` is unset: a token wins.
    fn token_or_approle(env: &Env<'_>) -> Result<Option<VaultAuth>> {
        let role_id = env.string(&["VAULT_ROLE_ID"])?;
        let secret_id = env.secret(&["VAULT_SECRET_ID"])?;
        let token = match env.secret(&["VAULT_TOKEN", "BAO_TOKEN"])? {
            Some(token) => Some(token),
            // The token `vault login` / `bao login` left, as their CLIs read it.
            None if role_id.is_none() && secret_id.is_none() => env
                .string(&["HOME"])?
                .and_then(|home| token_helper_file(&home)),
            None => None,
        };
        match token {
            Some(token) => Ok(Some(VaultAuth::Token(token))),
            None => Self::approle(env),
        }
    }

    /// AppRole from `VAULT_ROLE_ID` and `VAULT_SECRET_ID`, when both are set.
    fn approle(env: &Env<'_>) -> Result<Option<VaultAuth>> {
        match (
            env.string(&["VAULT_ROLE_ID"])?,
            env.secret(&["VAULT_SECRET_ID"])?,
        ) {
            (Some(role_id), Some(secret_id)) => Ok(Some(VaultAuth::AppRole {
                role_id,
                secret_id,
                mount: env
                    .string(&["MLFLOW_VAULT_APPROLE_MOUNT"])?
                    .unwrap_or_else(|| "approle".to_owned()),
            })),
            (Some(_), None) => Err(SecretError::unset(
                "VAULT_SECRET_ID",
                "VAULT_ROLE_ID is, and AppRole needs both",
            )),
            (None, Some(_)) => Err(SecretError::unset(
                "VAULT_ROLE_ID",
                "VAULT_SECRET_ID is, and AppRole needs both",
            )),
            (None, None) => Ok(None),
        }
    }

    /// The KV mount, once detected.
    pub fn kv_mount(&self) -> Option<KvMount> {
        self.mount.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn new_client(&self, token: &str) -> Result<VaultClient> {
        let mut settings = VaultClientSettingsBuilder::default();
        settings
            .address(&self.address)
            .token(token)
            .verify(!self.skip_verify)
            .timeout(Some(self.request_timeout))
            .namespace(self.namespace.clone())
            .ca_certs(
                self.ca_cert
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect(),
            );
        let settings = settings.build().map_err(|e| {
            SecretError::config("VAULT_ADDR", format!("{} is not usable: {e}", self.address))
        })?;
        let mut client = VaultClient::new(settings)
            .map_err(|e| errors::map(&e, Action::Read(&self.path), &self.address))?;
        // vaultrs's own HTTP client follows redirects (resending the token,
        // https to http included) and takes a proxy from HTTP_PROXY for
        // plain http (which would read the token): ours does neither.
        let mut http = mlflow_secrets_auth_core::proxy::https_only(reqwest::Client::builder())
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.request_timeout)
            .tls_danger_accept_invalid_certs(self.skip_verify);
        if let Some(path) = &self.ca_cert {
            let pem = std::fs::read(path).map_err(|e| {
                SecretError::config(
                    "VAULT_CACERT",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|_| {
                SecretError::config(
                    "VAULT_CACERT",
                    format!("{} holds no PEM certificate", path.display()),
                )
            })?;
            http = http.tls_certs_merge(certs);
        }
        let http = http.build().map_err(|e| {
            SecretError::config("VAULT_ADDR", format!("cannot build the HTTP client: {e}"))
        })?;
        client.http = rustify::clients::reqwest::Client::new(&self.address, http);
        Ok(client)
    }

    /// The current session: renewed, replaced or logged in as its lease
    /// says (see [`lease`]); a new login when `replace` is set (Vault
    /// refused a token that worked).
    async fn session(&self, replace: bool) -> Result<Arc<Session>> {
        let mut state = self.session.lock().await;
        let current = state.current.clone();
        if let Some(session) = &current
            && !replace
        {
            let now = Instant::now();
            match session.lease.step(now) {
                Step::Use => return Ok(Arc::clone(session)),
                Step::Renew => match self.renew(session, now).await {
                    Ok(renewed) => {
                        state.current = Some(Arc::clone(&renewed));
                        return Ok(renewed);
                    }
                    Err(error) => {
                        tracing::warn!(error = %error, "the Vault token could not be renewed");
                        // Not tried again before a backoff, whatever follows.
                        let held = Arc::new(Session {
                            client: Arc::clone(&session.client),
                            lease: session.lease.held(Instant::now()),
                        });
                        state.current = Some(Arc::clone(&held));
                        if !held.lease.replaceable {
                            // The user's token: used until it expires, its
                            // renewal tried again after the backoff.
                            return usable(Some(held), false).ok_or(error);
                        }
                    }
                },
                Step::Expired if !session.lease.replaceable => {
                    return Err(SecretError::new(
                        ErrorKind::PermissionDenied,
                        "the Vault token given in VAULT_TOKEN has expired: set a new one (or `vault login` again)",
                    ));
                }
                Step::Replace | Step::Expired => {}
            }
        }
        let current = state.current.clone();
        if let Some(at) = state.retry_at
            && Instant::now() < at
        {
            if let Some(session) = usable(current.clone(), replace) {
                return Ok(session);
            }
            if let Some(error) = &state.last_error {
                return Err(error.clone());
            }
        }
        match self.login().await {
            Ok(session) => {
                let session = Arc::new(session);
                *state = Sessions {
                    current: Some(Arc::clone(&session)),
                    ..Sessions::default()
                };
                Ok(session)
            }
            Err(LoginError { error, answered }) => {
                if answered {
                    state.failed(error.clone());
                }
                // The current token, while it lasts (asked after the
                // login's wait: it may have expired meanwhile).
                match usable(current, replace) {
                    Some(session) => {
                        tracing::warn!(error = %error, "a new Vault login failed; the current token is used until it expires");
                        Ok(session)
                    }
                    None => Err(error),
                }
            }
        }
    }

    /// A read was refused (403) just after a new login: no login for about
    /// a minute ([`lease::after_refused_read`]), so a token without the
    /// policy does not bring a login (and a live Vault token) per request.
    async fn refused_after_login(&self, error: &SecretError) {
        self.session
            .lock()
            .await
            .wait(lease::after_refused_read(), error.clone());
    }

    /// `session` renewed (renew-self).
    async fn renew(&self, session: &Session, now: Instant) -> Result<Arc<Session>> {
        let auth = vaultrs::token::renew_self(&*session.client, None)
            .await
            .map_err(|e| errors::map(&e, Action::Renew, &self.address))?;
        Ok(Arc::new(Session {
            client: Arc::clone(&session.client),
            lease: session.lease.renewed(now, reported(auth.lease_duration)),
        }))
    }

    async fn login(&self) -> std::result::Result<Session, LoginError> {
        // The lease counts from before the request: the token's TTL runs
        // from when Vault made it, not from when its answer arrived.
        let sent = Instant::now();
        let (method, mount, check, request) = match &self.auth {
            VaultAuth::Token(token) => return self.given_token(token).await.map_err(Into::into),
            VaultAuth::AppRole {
                role_id,
                secret_id,
                mount,
            } => {
                let client = self.new_client("")?;
                let request = vaultrs::auth::approle::login(
                    &client,
                    mount,
                    role_id,
                    secret_id.expose_secret(),
                )
                .await;
                (
                    "AppRole",
                    mount,
                    "check VAULT_ROLE_ID and VAULT_SECRET_ID",
                    request.map(|auth| (client, auth)),
                )
            }
            VaultAuth::Jwt {
                method,
                role,
                mount,
                file,
            } => {
                // Read again at every login: a projected token rotates.
                let jwt = mlflow_secrets_auth_core::read_token_file(JWT_FILE, file, "vault jwt")
                    .map_err(|e| e.with_provider(NAME))?;
                let client = self.new_client("")?;
                let request = match method {
                    JwtMethod::Kubernetes => {
                        let role = role.as_deref().unwrap_or_default();
                        vaultrs::auth::kubernetes::login(&client, mount, role, &jwt).await
                    }
                    JwtMethod::Jwt => {
                        vaultrs::auth::oidc::login(&client, mount, &jwt, role.clone()).await
                    }
                };
                (
                    method.label(),
                    mount,
                    method.check(),
                    request.map(|auth| (client, auth)),
                )
            }
        };
        let (mut client, auth) = request.map_err(|e| LoginError {
            answered: errors::status(&e).is_some(),
            error: errors::map(
                &e,
                Action::Login {
                    method,
                    mount,
                    check,
                },
                &self.address,
            ),
        })?;
        client.set_token(&auth.client_token);
        mlflow_secrets_auth_core::hide_while_current("vault login", &auth.client_token);
        let lease = Lease::new(sent, reported(auth.lease_duration), auth.renewable, true);
        // Wipe our copy of the token (the client keeps its own).
        drop(SecretString::from(auth.client_token));
        Ok(Session {
            client: Arc::new(client),
            lease,
        })
    }

    /// A session with the token the user gave, its lease looked up
    /// (lookup-self): renewed if renewable, never replaced. A token that may
    /// not look itself up is used as it is.
    async fn given_token(&self, token: &SecretString) -> Result<Session> {
        let client = self.new_client(token.expose_secret())?;
        let now = Instant::now();
        let lease = match vaultrs::token::lookup_self(&client).await {
            Ok(info) => Lease::new(
                now,
                reported(info.ttl),
                info.renewable.unwrap_or(false),
                false,
            ),
            // Vault answered (403: no `default` policy): the read will say
            // what it says about the token.
            Err(e) if errors::status(&e).is_some() => Lease::new(now, Duration::ZERO, false, false),
            Err(e) => return Err(errors::map(&e, Action::Read(&self.path), &self.address)),
        };
        Ok(Session {
            client: Arc::new(client),
            lease,
        })
    }

    /// Whether this provider logs in (and may log in again).
    fn logs_in(&self) -> bool {
        !matches!(self.auth, VaultAuth::Token(_))
    }

    /// How the provider authenticates, and how long its token stays valid
    /// (when a session exists and is not in use): for `info` and `doctor`.
    fn identity(&self) -> (String, Option<String>) {
        let auth = match &self.auth {
            VaultAuth::Token(_) => "token".to_owned(),
            VaultAuth::AppRole { role_id, mount, .. } => {
                format!("approle (mount {mount}, role_id {})", mask(role_id))
            }
            VaultAuth::Jwt {
                method,
                role,
                mount,
                file,
            } => format!(
                "{} (mount {mount}, role {}, token file {})",
                method.name(),
                role.as_deref().unwrap_or("(the mount's default)"),
                file.display()
            ),
        };
        let session = self.session.try_lock().ok().and_then(|state| {
            let lease = state.current.as_ref()?.lease;
            Some(match lease.expires() {
                None => "token without expiry".to_owned(),
                Some(at) => format!(
                    "token valid for {} s more ({})",
                    at.saturating_duration_since(Instant::now()).as_secs(),
                    if lease.renewable {
                        "renewable"
                    } else if lease.replaceable {
                        "replaced by a new login before it ends"
                    } else {
                        "not renewable"
                    }
                ),
            })
        });
        (auth, session)
    }
}

#[async_trait]
impl SecretProvider for VaultProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn fetch(&self) -> Result<FetchedSecret> {
        let result = async {
            let session = self.session(false).await?;
            match kv::read(self, &session.client).await {
                // A token that worked may have been revoked or expired early:
                // log in again, once.
                Err(e) if self.logs_in() && e.kind() == ErrorKind::PermissionDenied => {
                    let session = self.session(true).await?;
                    let again = kv::read(self, &session.client).await;
                    if let Err(refused) = &again
                        && refused.kind() == ErrorKind::PermissionDenied
                    {
                        self.refused_after_login(refused).await;
                    }
                    again
                }
                other => other,
            }
        }
        .await;
        result.map_err(|e| e.with_provider(NAME))
    }

    fn describe(&self) -> ProviderDescription {
        let kv = match self.kv_mount() {
            Some(mount) => format!("v{} (mount {})", mount.version, mount.mount),
            None => "not detected yet".to_owned(),
        };
        let (auth, session) = self.identity();
        let description = ProviderDescription::new(NAME)
            .field("address", &self.address)
            .field("namespace", self.namespace.as_deref().unwrap_or("(none)"))
            .field("path", &self.path)
            .field("kv", kv)
            .field("auth", auth)
            .field("tls_verify", if self.skip_verify { "OFF" } else { "on" });
        match session {
            Some(session) => description.field("session", session),
            None => description,
        }
    }

    fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.skip_verify {
            warnings.push(format!(
                "VAULT_SKIP_VERIFY is set: TLS certificates of {} are NOT checked; anyone on the network path can read the credential",
                self.address
            ));
        }
        // Loopback traffic never leaves the machine (a dev server, an agent).
        let plain_remote = url::Url::parse(&self.address).is_ok_and(|url| {
            url.scheme() == "http" && !mlflow_secrets_auth_core::is_loopback(&url)
        });
        if plain_remote {
            warnings.push(format!(
                "VAULT_ADDR {} is plain http: tokens and secrets cross the network unencrypted",
                self.address
            ));
        }
        warnings
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlflow_secrets_auth_core::ErrorKind;
    use proptest::prelude::*;

    #[test]
    fn every_missing_variable_is_named_at_once() {
        let error = env_provider(&[]).unwrap_err().to_string();
        for var in ["VAULT_ADDR", "MLFLOW_VAULT_SECRET_PATH", "VAULT_TOKEN"] {
            assert_eq!(
                error.matches(&format!("{var} is not set")).count(),
                1,
                "{error}"
            );
        }
        let error = env_provider(&[("VAULT_ADDR", "http://v:8200")])
            .unwrap_err()
            .to_string();
        assert!(!error.contains("VAULT_ADDR"), "{error}");
        assert!(
            error.contains("MLFLOW_VAULT_SECRET_PATH") && error.contains("VAULT_TOKEN"),
            "{error}"
        );
    }

    fn token_of(provider: &VaultProvider) -> Option<&str> {
        match &provider.auth {
            VaultAuth::Token(token) => Some(token.expose_secret()),
            VaultAuth::AppRole { .. } | VaultAuth::Jwt { .. } => None,
        }
    }

    #[test]
    fn openbaos_names_and_the_cli_token_file_are_read_after_vaults() {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join(".vault-token"), "s.from-login-file\n").unwrap();
        let home = home.path().to_str().unwrap();
        let path = ("MLFLOW_VAULT_SECRET_PATH", "secret/x");
        // BAO_* alone.
        let provider = env_provider(&[
            ("BAO_ADDR", "http://bao:8200"),
            ("BAO_TOKEN", "s.bao"),
            path,
        ])
        .unwrap();
        assert!(provider.secret_ref().starts_with("vault:http://bao:8200:"));
        assert_eq!(token_of(&provider), Some("s.bao"));
        // VAULT_* wins over BAO_*, and over the token file.
        let provider = env_provider(&[
            ("VAULT_ADDR", "http://vault:8200"),
            ("BAO_ADDR", "http://bao:8200"),
            ("VAULT_TOKEN", "s.vault"),
            ("BAO_TOKEN", "s.bao"),
            ("HOME", home),
            path,
        ])
        .unwrap();
        assert!(
            provider
                .secret_ref()
                .starts_with("vault:http://vault:8200:")
        );
        assert_eq!(token_of(&provider), Some("s.vault"));
        // No token variable: the token `vault login` / `bao login` left.
        let provider =
            env_provider(&[("BAO_ADDR", "http://bao:8200"), ("HOME", home), path]).unwrap();
        assert_eq!(token_of(&provider), Some("s.from-login-file"));
        // AppRole variables set: the file is not used.
        let error = env_provider(&[
            ("BAO_ADDR", "http://bao:8200"),
            ("VAULT_ROLE_ID", "r"),
            ("HOME", home),
            path,
        ])
        .unwrap_err()
        .to_string();
        assert!(error.contains("VAULT_SECRET_ID"), "{error}");
    }

    #[test]
    fn addresses_the_client_cannot_use_are_config_errors_naming_vault_addr() {
        for (address, says) in [
            ("127.0.0.1:8200", "it has no scheme"),
            ("vault.example.com:8200", "it has no scheme"),
            ("vault.example.com", "it has no scheme"),
            ("http://", "it has no host"),
            ("https://[::1", "not a URL"),
            ("ftp://vault.example.com", "its scheme is not http or https"),
            ("https://vault.example.com/?x=1", "query"),
            ("https://user:pw@vault.example.com", "user name or password"),
        ] {
            let error = VaultProvider::builder()
                .address(address)
                .path("secret/x")
                .token("t")
                .build()
                .err()
                .unwrap_or_else(|| panic!("{address} was accepted"));
            let text = error.to_string();
            assert_eq!(error.kind(), ErrorKind::Config, "{text}");
            assert!(
                text.contains("VAULT_ADDR") && text.contains(says),
                "{address}: {text}"
            );
            assert!(!text.contains("pw"), "{text}");
        }
    }

    proptest! {
        /// Whatever the address, building the provider and its client never
        /// panics: an address accepted is one the client takes.
        #[test]
        fn no_address_makes_the_client_panic(
            address in "(https?:(//)?)?[a-z0-9.:/@%\\[\\]?#-]{0,24}"
        ) {
            if let Ok(provider) = VaultProvider::builder()
                .address(address.clone())
                .path("secret/x")
                .token("t")
                .build()
            {
                prop_assert!(provider.new_client("t").is_ok(), "{address:?}");
            }
        }
    }

    fn env_provider(vars: &[(&str, &str)]) -> Result<VaultProvider> {
        VaultProvider::from_env(&Env::new(&vars))
    }

    #[test]
    fn missing_variables_are_named() {
        let cases: [(&[(&str, &str)], &str); 5] = [
            (&[], "VAULT_ADDR"),
            (
                &[("VAULT_ADDR", "http://v:8200")],
                "MLFLOW_VAULT_SECRET_PATH",
            ),
            (
                &[
                    ("VAULT_ADDR", "http://v:8200"),
                    ("MLFLOW_VAULT_SECRET_PATH", "secret/x"),
                ],
                "VAULT_TOKEN",
            ),
            (
                &[
                    ("VAULT_ADDR", "http://v:8200"),
                    ("MLFLOW_VAULT_SECRET_PATH", "secret/x"),
                    ("VAULT_ROLE_ID", "role"),
                ],
                "VAULT_SECRET_ID",
            ),
            (
                &[
                    ("VAULT_ADDR", "http://v:8200"),
                    ("MLFLOW_VAULT_SECRET_PATH", "secret/x"),
                    ("VAULT_SECRET_ID", "sid-secret"),
                ],
                "VAULT_ROLE_ID",
            ),
        ];
        for (vars, named) in cases {
            let err = env_provider(vars).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config);
            assert!(err.to_string().contains(named), "{named}: {err}");
            assert!(!err.to_string().contains("sid-secret"));
        }
    }

    #[test]
    fn secret_ref_describe_and_debug_show_no_secret() {
        let provider = env_provider(&[
            ("VAULT_ADDR", "https://vault.example.com:8200/"),
            ("MLFLOW_VAULT_SECRET_PATH", "/secret/mlflow/auth/"),
            ("VAULT_NAMESPACE", "team-a"),
            ("VAULT_ROLE_ID", "0f3e-role-id-4c21"),
            ("VAULT_SECRET_ID", "s3cr3t-secret-id"),
            ("VAULT_SKIP_VERIFY", "true"),
        ])
        .unwrap();
        assert_eq!(
            provider.secret_ref(),
            "vault:https://vault.example.com:8200:team-a:secret/mlflow/auth"
        );
        let described = provider.describe().to_string();
        assert!(
            described.contains("approle (mount approle, role_id *** (17 chars))"),
            "{described}"
        );
        assert!(described.contains("tls_verify=OFF"), "{described}");
        for shown in [described, format!("{provider:?}")] {
            assert!(!shown.contains("s3cr3t-secret-id"), "{shown}");
        }
        assert!(provider.warnings()[0].contains("VAULT_SKIP_VERIFY"));
    }

    #[test]
    fn token_wins_over_approle() {
        let provider = env_provider(&[
            ("VAULT_ADDR", "http://127.0.0.1:8200"),
            ("MLFLOW_VAULT_SECRET_PATH", "secret/x"),
            ("VAULT_TOKEN", "root-token"),
            ("VAULT_ROLE_ID", "r"),
            ("VAULT_SECRET_ID", "s"),
        ])
        .unwrap();
        assert!(matches!(provider.auth, VaultAuth::Token(_)));
        assert!(
            provider.warnings().is_empty(),
            "loopback stays on the machine"
        );
    }

    #[test]
    fn plain_http_to_another_host_is_warned_about() {
        for (addr, warned) in [
            ("http://vault.example.com:8200", true),
            ("HTTP://10.0.0.8:8200", true),
            ("http://localhost:8200", false),
            ("http://[::1]:8200", false),
            ("https://vault.example.com", false),
        ] {
            let provider = env_provider(&[
                ("VAULT_ADDR", addr),
                ("MLFLOW_VAULT_SECRET_PATH", "secret/x"),
                ("VAULT_TOKEN", "root-token"),
            ])
            .unwrap();
            let warnings = provider.warnings();
            assert_eq!(
                warnings.iter().any(|w| w.contains("plain http")),
                warned,
                "{addr}: {warnings:?}"
            );
        }
    }
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
