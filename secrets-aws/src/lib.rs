//! The AWS Secrets Manager provider of mlflow-secrets-auth.
//!
//! [`AwsSecretsManagerProvider`] reads one secret (by name or ARN, optionally a
//! version stage or version id) with the official AWS SDK and hands its text to
//! the rest of the chain. The SDK's own retries are off and its timeouts are
//! set: the retry layer above owns attempts and timing. SDK errors are mapped
//! onto [`mlflow_secrets_auth_core::ErrorKind`]s.
//!
//! ```no_run
//! # async fn demo() -> mlflow_secrets_auth_aws::Result<()> {
//! use mlflow_secrets_auth_aws::{Env, SecretProvider, AwsSecretsManagerProvider};
//! let provider = AwsSecretsManagerProvider::from_env(&Env::process())?;
//! let credential = provider.fetch().await?.credential()?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod errors;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::{Credentials, SharedCredentialsProvider};
use mlflow_secrets_auth_core::secrecy::ExposeSecret;
use mlflow_secrets_auth_core::{ProviderDescription, checked_endpoint};

/// What a provider is used with, so this crate alone is enough to use it.
pub use mlflow_secrets_auth_core::{
    Env, ErrorKind, FetchedSecret, Result, SecretError, SecretMeta, SecretProvider, secrecy,
};
use tokio::sync::OnceCell;

/// The provider's name.
pub const NAME: &str = "aws-secrets-manager";

const SECRET_VARS: [&str; 2] = ["MLFLOW_AWS_SECRET_NAME", "MLFLOW_AWS_SECRET_ID"];
const VERSION_VAR: &str = "MLFLOW_AWS_SECRET_VERSION";
const REGION_VARS: [&str; 2] = ["AWS_REGION", "AWS_DEFAULT_REGION"];
const ENDPOINT_VARS: [&str; 2] = ["AWS_ENDPOINT_URL_SECRETS_MANAGER", "AWS_ENDPOINT_URL"];
use mlflow_secrets_auth_core::REQUEST_TIMEOUT_VAR as TIMEOUT_VAR;
const KEY_ID_VAR: &str = "AWS_ACCESS_KEY_ID";
const SECRET_KEY_VAR: &str = "AWS_SECRET_ACCESS_KEY";
const SESSION_TOKEN_VAR: &str = "AWS_SESSION_TOKEN";
const WEB_IDENTITY_FILE_VAR: &str = "AWS_WEB_IDENTITY_TOKEN_FILE";

pub use mlflow_secrets_auth_core::DEFAULT_REQUEST_TIMEOUT;

/// Which version of the secret to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretVersion {
    /// The version carrying this staging label (`AWSCURRENT`, `AWSPENDING`, any label).
    Stage(String),
    /// The version with this id (a UUID).
    Id(String),
}

impl SecretVersion {
    /// Reads a version: a UUID-shaped value is a version id, anything else a stage.
    pub fn parse(value: &str) -> Self {
        let value = value.trim();
        if is_uuid(value) {
            Self::Id(value.to_owned())
        } else {
            Self::Stage(value.to_owned())
        }
    }

    fn as_str(&self) -> &str {
        match self {
            Self::Stage(s) | Self::Id(s) => s,
        }
    }
}

fn is_uuid(value: &str) -> bool {
    let groups: Vec<&str> = value.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Builds an [`AwsSecretsManagerProvider`] from code.
#[derive(Clone, Default)]
pub struct AwsSecretsManagerBuilder {
    secret_id: Option<String>,
    version: Option<SecretVersion>,
    region: Option<String>,
    endpoint_url: Option<String>,
    credentials: Option<Credentials>,
    request_timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
}

impl fmt::Debug for AwsSecretsManagerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsSecretsManagerBuilder")
            .field("secret_id", &self.secret_id)
            .field("version", &self.version)
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field("credentials", &self.credentials.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

impl AwsSecretsManagerBuilder {
    /// The secret's name or ARN (required).
    #[must_use]
    pub fn secret_id(mut self, id: impl Into<String>) -> Self {
        self.secret_id = Some(id.into());
        self
    }

    /// The version to read (default: the current one).
    #[must_use]
    pub fn version(mut self, version: SecretVersion) -> Self {
        self.version = Some(version);
        self
    }

    /// The region (default: the AWS SDK's region chain).
    #[must_use]
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// An endpoint to use instead of AWS's (a local server in tests, a VPC endpoint).
    #[must_use]
    pub fn endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.endpoint_url = Some(url.into());
        self
    }

    /// Static credentials instead of the standard AWS credential chain.
    #[must_use]
    pub fn static_credentials(
        self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        self.session_credentials(access_key_id, secret_access_key, None)
    }

    /// Static credentials with a session token (temporary credentials).
    #[must_use]
    pub fn session_credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<String>,
    ) -> Self {
        self.credentials = Some(Credentials::new(
            access_key_id,
            secret_access_key,
            session_token,
            None,
            "mlflow-secrets-auth",
        ));
        self
    }

    /// The timeout of one call, connection included (default 10 s).
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// The timeout of connecting (default: the request timeout, at most 5 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// The provider. Fails when no secret id was given.
    pub fn build(self) -> Result<AwsSecretsManagerProvider> {
        let secret_id = self
            .secret_id
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| {
                SecretError::unset(SECRET_VARS[0], "the secret's name or ARN").with_provider(NAME)
            })?;
        let endpoint_url = self
            .endpoint_url
            .map(|url| checked(ENDPOINT_VARS[1], &url))
            .transpose()?;
        let request_timeout = self.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT);
        let connect_timeout = self
            .connect_timeout
            .unwrap_or_else(|| request_timeout.min(Duration::from_secs(5)));
        Ok(AwsSecretsManagerProvider {
            secret_id,
            version: self.version,
            region: self.region,
            endpoint_url,
            credentials: self.credentials,
            request_timeout,
            connect_timeout,
            client: OnceCell::new(),
            source: Arc::default(),
            configured_identity: None,
            web_identity_file: None,
        })
    }
}

/// An endpoint URL the SDK can use (checked before it sees it), or a
/// `config` error naming `var`.
fn checked(var: &str, url: &str) -> Result<String> {
    checked_endpoint(
        url,
        var,
        &["http", "https"],
        "https://secretsmanager.us-east-1.amazonaws.com",
    )
    .map_err(|e| e.with_provider(NAME))
}

/// Reads one secret from AWS Secrets Manager.
pub struct AwsSecretsManagerProvider {
    secret_id: String,
    version: Option<SecretVersion>,
    region: Option<String>,
    endpoint_url: Option<String>,
    credentials: Option<Credentials>,
    request_timeout: Duration,
    connect_timeout: Duration,
    /// Built at the first fetch and reused (one connection pool).
    client: OnceCell<Client>,
    /// Which source of the AWS chain gave the last credentials, and until when.
    source: Arc<Mutex<Option<Source>>>,
    /// The workload identity the environment sets up for the chain, shown
    /// until a fetch says which source answered.
    configured_identity: Option<String>,
    /// `AWS_WEB_IDENTITY_TOKEN_FILE`, checked when the chain finds no
    /// credentials, so the error names the file.
    web_identity_file: Option<std::path::PathBuf>,
}

/// Where the SDK's credentials came from: the chain's provider name
/// (`WebIdentityToken`, `EcsContainer`, `Profile`, `Environment`, …) and
/// their expiry.
#[derive(Debug, Clone)]
struct Source {
    provider: String,
    expiry: Option<SystemTime>,
}

impl Source {
    fn describe(&self, now: SystemTime) -> String {
        match self.expiry.map(|at| at.duration_since(now)) {
            None => format!("{}, never expire", self.provider),
            Some(Ok(left)) => format!("{}, expire in {} s", self.provider, left.as_secs()),
            Some(Err(_)) => format!("{}, expired", self.provider),
        }
    }
}

/// The chain's provider name of `credentials`. The SDK shows it only in
/// `Debug` (`provider_name: "WebIdentityToken"`), which never holds the
/// secret key; a unit test holds that shape.
fn provider_name(credentials: &Credentials) -> String {
    let shown = format!("{credentials:?}");
    shown
        .split_once("provider_name: \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map_or_else(|| "unknown".to_owned(), |(name, _)| name.to_owned())
}

/// The workload identity `env` sets up for the AWS chain: web identity
/// (EKS IRSA, GitHub Actions: `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`)
/// or container credentials (EKS Pod Identity, ECS:
/// `AWS_CONTAINER_CREDENTIALS_FULL_URI` / `_RELATIVE_URI`). The chain reads
/// these from the process environment itself; this only describes them.
fn workload_identity(env: &Env<'_>) -> Result<Option<String>> {
    if let (Some(file), Some(role)) = (
        env.string(&[WEB_IDENTITY_FILE_VAR])?,
        env.string(&["AWS_ROLE_ARN"])?,
    ) {
        return Ok(Some(format!(
            "web identity: role {role}, token file {file}"
        )));
    }
    // Scheme, host and port only: a path or query may be a capability.
    if let Some(uri) = env.string(&["AWS_CONTAINER_CREDENTIALS_FULL_URI"])? {
        let shown = url::Url::parse(&uri).ok().and_then(|url| {
            let host = url.host_str()?.to_owned();
            let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
            Some(format!("{}://{host}{port}", url.scheme()))
        });
        return Ok(Some(format!(
            "container credentials from {}",
            shown
                .as_deref()
                .unwrap_or("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        )));
    }
    if env
        .string(&["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"])?
        .is_some()
    {
        return Ok(Some(
            "container credentials from the ECS agent (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI)"
                .to_owned(),
        ));
    }
    Ok(None)
}

/// The SDK's credentials provider, noting which source answered: `info`
/// and `doctor` say where the credentials come from and when they expire.
#[derive(Debug)]
struct Observed {
    inner: SharedCredentialsProvider,
    source: Arc<Mutex<Option<Source>>>,
}

impl aws_credential_types::provider::ProvideCredentials for Observed {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        aws_credential_types::provider::future::ProvideCredentials::new(async move {
            let credentials = self.inner.provide_credentials().await?;
            let seen = Source {
                provider: provider_name(&credentials),
                expiry: credentials.expiry(),
            };
            *self.source.lock().unwrap_or_else(|e| e.into_inner()) = Some(seen);
            Ok(credentials)
        })
    }

    fn fallback_on_interrupt(&self) -> Option<Credentials> {
        self.inner.fallback_on_interrupt()
    }
}

impl fmt::Debug for AwsSecretsManagerProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsSecretsManagerProvider")
            .field("secret_id", &self.secret_id)
            .field("version", &self.version)
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field("credentials", &self.credentials.as_ref().map(|_| "***"))
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl AwsSecretsManagerProvider {
    /// Where the secret lives — provider, location, name, version — as one
    /// string for logs, status and tests (never the secret itself).
    pub fn secret_ref(&self) -> String {
        format!(
            "aws:{}:{}:{}",
            self.region.as_deref().unwrap_or("default"),
            self.secret_id,
            self.version
                .as_ref()
                .map_or("AWSCURRENT", SecretVersion::as_str)
        )
    }

    /// A builder.
    pub fn builder() -> AwsSecretsManagerBuilder {
        AwsSecretsManagerBuilder::default()
    }

    /// Reads `MLFLOW_AWS_SECRET_NAME` (alias `MLFLOW_AWS_SECRET_ID`),
    /// `MLFLOW_AWS_SECRET_VERSION`, `AWS_REGION` / `AWS_DEFAULT_REGION`,
    /// `AWS_ENDPOINT_URL_SECRETS_MANAGER` / `AWS_ENDPOINT_URL` and
    /// `MLFLOW_SECRETS_REQUEST_TIMEOUT_SEC`, and `AWS_ACCESS_KEY_ID` +
    /// `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`) from `env` itself, so
    /// keys given in a map are the keys used. Without them, credentials come
    /// from the standard AWS chain (profiles, web identity, container and
    /// instance metadata) when the first fetch builds the client.
    pub fn from_env(env: &Env<'_>) -> Result<Self> {
        let with_provider = |e: SecretError| e.with_provider(NAME);
        let mut builder = Self::builder().request_timeout(
            env.seconds(TIMEOUT_VAR, DEFAULT_REQUEST_TIMEOUT)
                .map_err(with_provider)?,
        );
        if let Some(id) = env.string(&SECRET_VARS).map_err(with_provider)? {
            builder = builder.secret_id(id);
        }
        if let Some(version) = env.string(&[VERSION_VAR]).map_err(with_provider)? {
            builder = builder.version(SecretVersion::parse(&version));
        }
        if let Some(region) = env.string(&REGION_VARS).map_err(with_provider)? {
            builder = builder.region(region);
        }
        if let Some((var, url)) = env.lookup(&ENDPOINT_VARS).map_err(with_provider)? {
            builder = builder.endpoint_url(checked(var, &url)?);
        }
        let key_id = env.string(&[KEY_ID_VAR]).map_err(with_provider)?;
        let secret = env.secret(&[SECRET_KEY_VAR]).map_err(with_provider)?;
        match (key_id, secret) {
            (Some(id), Some(secret)) => {
                let token = env.secret(&[SESSION_TOKEN_VAR]).map_err(with_provider)?;
                builder = builder.session_credentials(
                    id,
                    secret.expose_secret(),
                    token.map(|t| t.expose_secret().to_owned()),
                );
            }
            (Some(_), None) => {
                return Err(with_provider(SecretError::unset(
                    SECRET_KEY_VAR,
                    format!("{KEY_ID_VAR} is, and static keys need both"),
                )));
            }
            (None, Some(_)) => {
                return Err(with_provider(SecretError::unset(
                    KEY_ID_VAR,
                    format!("{SECRET_KEY_VAR} is, and static keys need both"),
                )));
            }
            (None, None) => {}
        }
        let mut provider = builder.build()?;
        if provider.credentials.is_none() {
            provider.configured_identity = workload_identity(env).map_err(with_provider)?;
            provider.web_identity_file = env
                .string(&[WEB_IDENTITY_FILE_VAR])
                .map_err(with_provider)?
                .map(Into::into);
        }
        Ok(provider)
    }

    /// The secret's name or ARN.
    pub fn secret_id(&self) -> &str {
        &self.secret_id
    }

    async fn client(&self) -> Result<&Client> {
        self.client
            .get_or_try_init(|| async {
                let timeouts = TimeoutConfig::builder()
                    .connect_timeout(self.connect_timeout)
                    .operation_attempt_timeout(self.request_timeout)
                    .operation_timeout(self.request_timeout)
                    .build();
                let mut loader = aws_config::defaults(BehaviorVersion::latest())
                    .http_client(https_client())
                    .retry_config(RetryConfig::disabled())
                    .timeout_config(timeouts);
                if let Some(region) = &self.region {
                    loader = loader.region(Region::new(region.clone()));
                }
                if let Some(url) = &self.endpoint_url {
                    loader = loader.endpoint_url(url);
                }
                if let Some(credentials) = &self.credentials {
                    loader = loader.credentials_provider(SharedCredentialsProvider::new(
                        credentials.clone(),
                    ));
                }
                let config = loader.load().await;
                if config.region().is_none() {
                    return Err(SecretError::unset(
                        REGION_VARS[0],
                        "no region was found in the AWS profile either (set AWS_REGION or AWS_DEFAULT_REGION)",
                    )
                    .with_provider(NAME));
                }
                let mut conf = aws_sdk_secretsmanager::config::Builder::from(&config);
                if self.credentials.is_none()
                    && let Some(chain) = config.credentials_provider()
                {
                    conf = conf.credentials_provider(Observed {
                        inner: chain,
                        source: Arc::clone(&self.source),
                    });
                }
                Ok(Client::from_conf(conf.build()))
            })
            .await
    }
}

#[async_trait]
impl SecretProvider for AwsSecretsManagerProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn fetch(&self) -> Result<FetchedSecret> {
        let client = self.client().await?;
        let mut request = client.get_secret_value().secret_id(&self.secret_id);
        request = match &self.version {
            None => request,
            Some(SecretVersion::Stage(stage)) => request.version_stage(stage),
            Some(SecretVersion::Id(id)) => request.version_id(id),
        };
        let output = match request.send().await {
            Ok(output) => output,
            Err(e) => {
                let error = errors::map(e, &self.secret_id, self.endpoint_url.as_deref());
                // No credentials, and the web identity token cannot be read:
                // that is the cause to name.
                if error.kind() == ErrorKind::PermissionDenied
                    && let Some(file) = &self.web_identity_file
                    && let Err(unreadable) = mlflow_secrets_auth_core::read_token_file(
                        WEB_IDENTITY_FILE_VAR,
                        file,
                        "aws web identity token",
                    )
                {
                    return Err(unreadable.with_provider(NAME));
                }
                return Err(error.with_provider(NAME));
            }
        };
        let text = match (output.secret_string, output.secret_binary) {
            (Some(text), _) => text,
            (None, Some(binary)) => String::from_utf8(binary.into_inner()).map_err(|_| {
                SecretError::invalid_secret(format!(
                    "secret `{}` holds SecretBinary that is not UTF-8 text",
                    self.secret_id
                ))
                .with_provider(NAME)
            })?,
            (None, None) => {
                return Err(SecretError::invalid_secret(format!(
                    "secret `{}` has neither SecretString nor SecretBinary",
                    self.secret_id
                ))
                .with_provider(NAME));
            }
        };
        let mut meta = SecretMeta::default();
        if let Some(version) = output.version_id {
            meta = meta.with_version(version);
        }
        Ok(FetchedSecret::new(text.into()).with_meta(meta))
    }

    fn describe(&self) -> ProviderDescription {
        let mut description = ProviderDescription::new(NAME)
            .field(
                "region",
                self.region.as_deref().unwrap_or("(AWS default chain)"),
            )
            .field("secret_name", &self.secret_id)
            .field(
                "version",
                self.version
                    .as_ref()
                    .map_or("AWSCURRENT", SecretVersion::as_str),
            );
        if let Some(url) = &self.endpoint_url {
            description = description.field("endpoint", url);
        }
        let credentials = if self.credentials.is_some() {
            "static keys".to_owned()
        } else {
            match &*self.source.lock().unwrap_or_else(|e| e.into_inner()) {
                Some(source) => {
                    format!("AWS default chain: {}", source.describe(SystemTime::now()))
                }
                None => match &self.configured_identity {
                    Some(identity) => format!("AWS default chain ({identity})"),
                    None => "AWS default chain".to_owned(),
                },
            }
        };
        description.field("credentials", credentials)
    }
}

/// The SDK's default HTTPS client (rustls with aws-lc), but with a proxy
/// from the environment for https only: the SDK's own takes `HTTP_PROXY`
/// for plain http too, where the proxy reads what it carries — an endpoint
/// on loopback, container credentials (`AWS_CONTAINER_CREDENTIALS_FULL_URI`
/// and its token), instance metadata.
fn https_client() -> aws_sdk_secretsmanager::config::SharedHttpClient {
    use aws_smithy_http_client::proxy::ProxyConfig;
    use aws_smithy_http_client::{Builder, ConnectorBuilder, tls};
    let proxy = match mlflow_secrets_auth_core::proxy::https_from_env() {
        Some((url, no_proxy)) => match ProxyConfig::https(url.as_str()) {
            Ok(proxy) => match no_proxy {
                Some(rules) => proxy.no_proxy(rules),
                None => proxy,
            },
            Err(_) => ProxyConfig::disabled(),
        },
        None => ProxyConfig::disabled(),
    };
    Builder::new().build_with_connector_fn(move |settings, components| {
        let mut connector = ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ));
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(proxy.clone()));
        connector.build()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Whatever the endpoint, building the provider and a first call
        /// never panic: an endpoint accepted is one the SDK takes. Hosts are
        /// loopback or malformed, so nothing leaves the machine.
        #[test]
        fn no_endpoint_makes_the_sdk_panic(endpoint in secrets_testkit::ENDPOINT_LIKE) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let built = AwsSecretsManagerProvider::builder()
                .secret_id("x")
                .region("us-east-1")
                .static_credentials("AKIDEXAMPLE", "example-key")
                .endpoint_url(endpoint.clone())
                .request_timeout(Duration::from_millis(500))
                .build();
            match built {
                Ok(provider) => {
                    let error = runtime.block_on(provider.fetch()).unwrap_err();
                    prop_assert!(error.kind() != ErrorKind::Config, "{endpoint:?}: {error}");
                }
                Err(error) => prop_assert!(
                    error.to_string().starts_with("AWS_ENDPOINT_URL: "),
                    "{endpoint:?}: {error}"
                ),
            }
        }
    }

    #[test]
    fn uuid_shaped_versions_are_ids() {
        assert_eq!(
            SecretVersion::parse("EXAMPLE1-90ab-cdef-fedc-ba987EXAMPLE"),
            SecretVersion::Stage("EXAMPLE1-90ab-cdef-fedc-ba987EXAMPLE".into())
        );
        assert_eq!(
            SecretVersion::parse("a1b2c3d4-5678-90ab-cdef-1234567890ab"),
            SecretVersion::Id("a1b2c3d4-5678-90ab-cdef-1234567890ab".into())
        );
        assert_eq!(
            SecretVersion::parse("AWSPENDING"),
            SecretVersion::Stage("AWSPENDING".into())
        );
    }

    #[test]
    fn from_env_reads_aliases_and_names_missing_secret() {
        let vars = [
            ("MLFLOW_AWS_SECRET_ID", "prod/mlflow"),
            ("AWS_DEFAULT_REGION", "eu-west-1"),
            ("MLFLOW_AWS_SECRET_VERSION", "AWSPREVIOUS"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
        ];
        let provider = AwsSecretsManagerProvider::from_env(&Env::new(&vars)).unwrap();
        assert_eq!(
            provider.secret_ref(),
            "aws:eu-west-1:prod/mlflow:AWSPREVIOUS"
        );
        assert_eq!(
            provider.describe().to_string(),
            "aws-secrets-manager: region=eu-west-1, secret_name=prod/mlflow, version=AWSPREVIOUS, \
             endpoint=http://127.0.0.1:5000, credentials=AWS default chain"
        );

        let none: [(&str, &str); 0] = [];
        let err = AwsSecretsManagerProvider::from_env(&Env::new(&none)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("MLFLOW_AWS_SECRET_NAME"), "{err}");
    }

    #[test]
    fn keys_in_the_given_environment_are_the_keys_used() {
        let base = [
            ("MLFLOW_AWS_SECRET_ID", "prod/mlflow"),
            ("AWS_REGION", "eu-west-1"),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let vars: Vec<(&str, &str)> = base.iter().chain(extra).copied().collect();
            AwsSecretsManagerProvider::from_env(&Env::new(&vars.as_slice()))
        };
        let keyed = with(&[
            ("AWS_ACCESS_KEY_ID", "AKIAFROMTHEMAP"),
            ("AWS_SECRET_ACCESS_KEY", "map-secret-key-9f1c"),
            ("AWS_SESSION_TOKEN", "map-session-token-77"),
        ])
        .unwrap();
        let credentials = keyed.credentials.as_ref().unwrap();
        assert_eq!(credentials.access_key_id(), "AKIAFROMTHEMAP");
        assert_eq!(credentials.session_token(), Some("map-session-token-77"));
        let shown = format!("{keyed:?} {}", keyed.describe());
        assert!(!shown.contains("map-secret-key-9f1c"), "{shown}");
        assert!(!shown.contains("map-session-token-77"), "{shown}");

        for (set, missing) in [
            ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
            ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"),
        ] {
            let err = with(&[(set, "only-one-half")]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config);
            assert!(err.to_string().contains(missing), "{err}");
            assert!(!err.to_string().contains("only-one-half"), "{err}");
        }
        assert!(with(&[]).unwrap().credentials.is_none(), "the AWS chain");
    }

    #[test]
    fn bad_timeout_names_the_variable() {
        let vars = [
            ("MLFLOW_AWS_SECRET_NAME", "x"),
            (mlflow_secrets_auth_core::REQUEST_TIMEOUT_VAR, "soon"),
        ];
        let err = AwsSecretsManagerProvider::from_env(&Env::new(&vars)).unwrap_err();
        assert!(err.to_string().contains(TIMEOUT_VAR), "{err}");
    }

    #[test]
    fn debug_hides_credentials() {
        let provider = AwsSecretsManagerProvider::builder()
            .secret_id("s")
            .static_credentials("AKIDEXAMPLE", "wJalrXUtnFEMI-secret")
            .build()
            .unwrap();
        let shown = format!("{provider:?}");
        assert!(!shown.contains("wJalrXUtnFEMI-secret") && !shown.contains("AKIDEXAMPLE"));
    }

    #[test]
    fn the_chains_source_and_expiry_are_read_from_the_credentials() {
        let now = SystemTime::now();
        let credentials = Credentials::builder()
            .access_key_id("ASIAEXAMPLE")
            .secret_access_key("never-shown-secret")
            .session_token("never-shown-token")
            .expiry(now + Duration::from_secs(900))
            .provider_name("WebIdentityToken")
            .build();
        let source = Source {
            provider: provider_name(&credentials),
            expiry: credentials.expiry(),
        };
        assert_eq!(source.describe(now), "WebIdentityToken, expire in 900 s");
        let forever = Source {
            provider: "Environment".to_owned(),
            expiry: None,
        };
        assert_eq!(forever.describe(now), "Environment, never expire");
    }

    #[test]
    fn the_workload_identity_set_up_is_described_before_a_fetch() {
        let describe = |vars: &[(&str, &str)]| {
            let mut all = vec![("MLFLOW_AWS_SECRET_NAME", "mlflow")];
            all.extend_from_slice(vars);
            let provider = AwsSecretsManagerProvider::from_env(&Env::new(&all.as_slice())).unwrap();
            provider
                .describe()
                .fields
                .iter()
                .find(|(k, _)| *k == "credentials")
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(
            describe(&[
                (
                    "AWS_WEB_IDENTITY_TOKEN_FILE",
                    "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"
                ),
                ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/mlflow"),
            ]),
            "AWS default chain (web identity: role arn:aws:iam::123456789012:role/mlflow, \
             token file /var/run/secrets/eks.amazonaws.com/serviceaccount/token)"
        );
        assert_eq!(
            describe(&[(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "http://169.254.170.23/v1/credentials?sig=capability"
            )]),
            "AWS default chain (container credentials from http://169.254.170.23)"
        );
        assert_eq!(describe(&[]), "AWS default chain");
    }
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
