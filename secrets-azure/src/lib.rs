//! The Azure Key Vault provider of mlflow-secrets-auth.
//!
//! [`AzureKeyVaultProvider`] reads one secret (its current version, or a
//! pinned one) with Microsoft's official SDK (`azure_security_keyvault_secrets`,
//! `azure_identity`). The SDK's retries are off — the retry layer above owns
//! attempts and timing — and every call has a per-attempt timeout. The Entra ID
//! credential is chosen from the environment ([`AzureCredential::from_env`]);
//! the secret's expiry (`exp`) bounds how long the credential may be cached.
//!
//! ```no_run
//! # async fn demo() -> mlflow_secrets_auth_azure::Result<()> {
//! use mlflow_secrets_auth_azure::{Env, SecretProvider, AzureKeyVaultProvider};
//! let provider = AzureKeyVaultProvider::from_env(&Env::process())?;
//! let credential = provider.fetch().await?.credential()?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod credential;
mod errors;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::http::{ClientOptions, RetryOptions, Transport};
use azure_security_keyvault_secrets::models::SecretClientGetSecretOptions;
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use mlflow_secrets_auth_core::{ProviderDescription, checked_endpoint};

/// What a provider is used with, so this crate alone is enough to use it.
pub use mlflow_secrets_auth_core::{
    Env, ErrorKind, FetchedSecret, Result, SecretError, SecretMeta, SecretProvider, secrecy,
};
use tokio::sync::OnceCell;

pub use credential::AzureCredential;

/// The provider's name.
pub const NAME: &str = "azure-key-vault";

const VAULT_URL_VARS: [&str; 2] = ["MLFLOW_AZURE_KEY_VAULT_URL", "AZURE_KEY_VAULT_URL"];
/// The shape of a Key Vault's URL, shown when one is not usable.
const VAULT_URL_EXAMPLE: &str = "https://NAME.vault.azure.net";
const SECRET_VAR: &str = "MLFLOW_AZURE_SECRET_NAME";
const VERSION_VAR: &str = "MLFLOW_AZURE_SECRET_VERSION";
const AUTHORITY_VAR: &str = "AZURE_AUTHORITY_HOST";
use mlflow_secrets_auth_core::REQUEST_TIMEOUT_VAR as TIMEOUT_VAR;

pub use mlflow_secrets_auth_core::DEFAULT_REQUEST_TIMEOUT;

/// Builds an [`AzureKeyVaultProvider`] from code.
#[derive(Default)]
pub struct AzureKeyVaultBuilder {
    vault_url: Option<String>,
    secret_name: Option<String>,
    version: Option<String>,
    credential: Option<AzureCredential>,
    authority_host: Option<String>,
    request_timeout: Option<Duration>,
    http_client: Option<reqwest::Client>,
}

impl fmt::Debug for AzureKeyVaultBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureKeyVaultBuilder")
            .field("vault_url", &self.vault_url)
            .field("secret_name", &self.secret_name)
            .field("version", &self.version)
            .field("credential", &self.credential)
            .field("authority_host", &self.authority_host)
            .finish_non_exhaustive()
    }
}

impl AzureKeyVaultBuilder {
    /// The vault, e.g. `https://my-vault.vault.azure.net` (required).
    pub fn vault_url(mut self, url: impl Into<String>) -> Self {
        self.vault_url = Some(url.into());
        self
    }

    /// The secret's name (required).
    pub fn secret_name(mut self, name: impl Into<String>) -> Self {
        self.secret_name = Some(name.into());
        self
    }

    /// A version id to pin; empty or `latest` means the current version.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        let version = version.into();
        let version = version.trim();
        self.version = (!version.is_empty() && !version.eq_ignore_ascii_case("latest"))
            .then(|| version.to_owned());
        self
    }

    /// The credential (default: [`AzureCredential::from_env`] on the process
    /// environment at `build`).
    pub fn credential(mut self, credential: AzureCredential) -> Self {
        self.credential = Some(credential);
        self
    }

    /// The Entra ID authority, e.g. `https://login.microsoftonline.us`
    /// (default: the public cloud's).
    pub fn authority_host(mut self, url: impl Into<String>) -> Self {
        self.authority_host = Some(url.into());
        self
    }

    /// The per-attempt timeout of one call, token request included (default 10 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// The HTTP client for the vault and the identity service (a proxy, extra
    /// root certificates). Default: a rustls client with the system's roots.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http_client = Some(client);
        self
    }

    /// Checks the settings; no network.
    pub fn build(self) -> Result<AzureKeyVaultProvider> {
        let vault_url = self.vault_url.ok_or_else(|| {
            SecretError::unset(
                VAULT_URL_VARS[0],
                "the Key Vault's URL, such as https://NAME.vault.azure.net",
            )
            .with_provider(NAME)
        })?;
        let vault_url = checked(VAULT_URL_VARS[0], &vault_url, VAULT_URL_EXAMPLE)?;
        let secret_name = self
            .secret_name
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| {
                SecretError::unset(SECRET_VAR, "the secret's name").with_provider(NAME)
            })?;
        if !secret_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(SecretError::config(
                SECRET_VAR,
                format!(
                    "`{secret_name}` is not a Key Vault secret name (letters, digits and `-` only)"
                ),
            )
            .with_provider(NAME));
        }
        let authority_host = self
            .authority_host
            .map(|host| checked(AUTHORITY_VAR, &host, "https://login.microsoftonline.com"))
            .transpose()?;
        let credential = match self.credential {
            Some(credential) => credential,
            None => AzureCredential::from_env(&Env::process())?,
        };
        Ok(AzureKeyVaultProvider {
            vault_url,
            secret_name,
            version: self.version,
            credential,
            authority_host,
            request_timeout: self.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT),
            http_client: self.http_client,
            client: OnceCell::new(),
        })
    }
}

/// `url` when it is an https URL the SDK can use, else a `config` error
/// naming `var` and showing `example`.
fn checked(var: &str, url: &str, example: &str) -> Result<String> {
    checked_endpoint(url, var, &["https"], example).map_err(|e| e.with_provider(NAME))
}

/// Reads one secret from Azure Key Vault.
pub struct AzureKeyVaultProvider {
    vault_url: String,
    secret_name: String,
    version: Option<String>,
    credential: AzureCredential,
    authority_host: Option<String>,
    request_timeout: Duration,
    http_client: Option<reqwest::Client>,
    /// Built at the first fetch and reused (one connection pool, one token cache).
    client: OnceCell<SecretClient>,
}

impl fmt::Debug for AzureKeyVaultProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureKeyVaultProvider")
            .field("vault_url", &self.vault_url)
            .field("secret_name", &self.secret_name)
            .field("version", &self.version)
            .field("credential", &self.credential)
            .field("authority_host", &self.authority_host)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl AzureKeyVaultProvider {
    /// Where the secret lives — provider, location, name, version — as one
    /// string for logs, status and tests (never the secret itself).
    pub fn secret_ref(&self) -> String {
        format!(
            "azure:{}:{}:{}",
            self.vault_url,
            self.secret_name,
            self.version.as_deref().unwrap_or("latest")
        )
    }

    /// A builder.
    pub fn builder() -> AzureKeyVaultBuilder {
        AzureKeyVaultBuilder::default()
    }

    /// Reads `MLFLOW_AZURE_KEY_VAULT_URL` (alias `AZURE_KEY_VAULT_URL`),
    /// `MLFLOW_AZURE_SECRET_NAME`, `MLFLOW_AZURE_SECRET_VERSION`,
    /// `AZURE_AUTHORITY_HOST`, `MLFLOW_SECRETS_REQUEST_TIMEOUT_SEC` and the
    /// credential's variables ([`AzureCredential::from_env`]).
    pub fn from_env(env: &Env<'_>) -> Result<Self> {
        let with_provider = |e: SecretError| e.with_provider(NAME);
        let mut builder = Self::builder()
            .request_timeout(
                env.seconds(TIMEOUT_VAR, DEFAULT_REQUEST_TIMEOUT)
                    .map_err(with_provider)?,
            )
            .credential(AzureCredential::from_env(env)?);
        if let Some((var, url)) = env.lookup(&VAULT_URL_VARS).map_err(with_provider)? {
            builder = builder.vault_url(checked(var, &url, VAULT_URL_EXAMPLE)?);
        }
        if let Some(name) = env.string(&[SECRET_VAR]).map_err(with_provider)? {
            builder = builder.secret_name(name);
        }
        if let Some(version) = env.string(&[VERSION_VAR]).map_err(with_provider)? {
            builder = builder.version(version);
        }
        if let Some(host) = env.string(&[AUTHORITY_VAR]).map_err(with_provider)? {
            builder = builder.authority_host(host);
        }
        builder.build()
    }

    /// The credential in use.
    pub fn credential(&self) -> &AzureCredential {
        &self.credential
    }

    fn client(&self) -> Result<&SecretClient> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        let http = match &self.http_client {
            Some(client) => client.clone(),
            None => {
                // Plain http (a managed identity endpoint, IMDS) never
                // through a proxy: it would read the tokens.
                mlflow_secrets_auth_core::proxy::https_only(reqwest::Client::builder())
                    // Neither Key Vault nor Entra ID redirects: a redirect
                    // is no place to send a token request to.
                    .redirect(reqwest::redirect::Policy::none())
                    .connect_timeout(self.request_timeout)
                    .build()
                    .map_err(|e| {
                        SecretError::new(
                            ErrorKind::Config,
                            format!("cannot build the HTTP client: {e}"),
                        )
                        .with_provider(NAME)
                    })?
            }
        };
        let options = ClientOptions {
            transport: Some(Transport::new(Arc::new(http.clone()))),
            retry: RetryOptions::none(),
            cloud: self.authority_host.as_ref().map(|host| {
                let mut custom = CustomConfiguration::default();
                custom.authority_host = host.trim_end_matches('/').to_owned();
                Arc::new(CloudConfiguration::from(custom))
            }),
            ..Default::default()
        };
        let credential = self.credential.build(&options, &http)?;
        let client = SecretClient::new(
            &self.vault_url,
            credential,
            Some(SecretClientOptions {
                client_options: options,
                ..Default::default()
            }),
        )
        .map_err(|e| {
            SecretError::config(VAULT_URL_VARS[0], format!("is not usable: {e}"))
                .with_provider(NAME)
        })?;
        // Another caller may have won the race; either client is fine.
        let _ = self.client.set(client);
        self.client.get().ok_or_else(|| {
            SecretError::new(ErrorKind::Config, "the Key Vault client was not kept")
                .with_provider(NAME)
        })
    }
}

#[async_trait]
impl SecretProvider for AzureKeyVaultProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn fetch(&self) -> Result<FetchedSecret> {
        let client = self.client()?;
        let options = SecretClientGetSecretOptions {
            secret_version: self.version.clone(),
            ..Default::default()
        };
        let context = errors::Context {
            secret: &self.secret_name,
            vault_url: &self.vault_url,
            credential: self.credential.type_name(),
        };
        let call = client.get_secret(&self.secret_name, Some(options));
        let response = tokio::time::timeout(self.request_timeout, call)
            .await
            .map_err(|_| {
                SecretError::new(
                    ErrorKind::Timeout,
                    format!(
                        "Azure Key Vault at {} did not answer within {:.1}s",
                        self.vault_url,
                        self.request_timeout.as_secs_f64()
                    ),
                )
                .with_provider(NAME)
            })?
            .map_err(|e| errors::map(&e, &context).with_provider(NAME))?;
        let secret = response
            .into_model()
            .map_err(|e| errors::map(&e, &context).with_provider(NAME))?;
        let value = secret.value.ok_or_else(|| {
            SecretError::invalid_secret(format!("secret `{}` has no value", self.secret_name))
                .with_provider(NAME)
        })?;
        let mut meta = SecretMeta::default();
        if let Some(version) = secret.id.as_deref().and_then(|id| id.rsplit('/').next()) {
            meta = meta.with_version(version);
        }
        if let Some(expires) = secret.attributes.and_then(|a| a.expires) {
            let expires = SystemTime::from(expires);
            match expires.duration_since(SystemTime::now()) {
                Ok(left) => meta = meta.with_valid_for(left),
                Err(_) => {
                    return Err(SecretError::new(
                        ErrorKind::Rejected,
                        format!(
                            "secret `{}` has expired (its `exp` attribute is in the past); store a new version",
                            self.secret_name
                        ),
                    )
                    .with_provider(NAME));
                }
            }
        }
        Ok(FetchedSecret::new(value.into()).with_meta(meta))
    }

    fn describe(&self) -> ProviderDescription {
        let mut description = ProviderDescription::new(NAME)
            .field("vault", &self.vault_url)
            .field("secret_name", &self.secret_name)
            .field("version", self.version.as_deref().unwrap_or("latest"))
            .field("credential", self.credential.describe());
        if let Some(host) = &self.authority_host {
            description = description.field("authority", host);
        }
        description
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Whatever the Key Vault URL and authority, building the provider
        /// and a first call never panic. Hosts are loopback or malformed,
        /// so nothing leaves the machine.
        #[test]
        fn no_address_makes_the_sdk_panic(
            vault in secrets_testkit::ENDPOINT_LIKE,
            authority in secrets_testkit::ENDPOINT_LIKE,
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let built = AzureKeyVaultProvider::builder()
                .vault_url(vault.clone())
                .secret_name("mlflow")
                .authority_host(authority.clone())
                .credential(AzureCredential::ClientSecret {
                    tenant_id: "tenant".into(),
                    client_id: "client".into(),
                    secret: "not-a-secret".into(),
                })
                .request_timeout(Duration::from_millis(500))
                .build();
            match built {
                Ok(provider) => {
                    let error = runtime.block_on(provider.fetch()).unwrap_err();
                    prop_assert!(
                        error.kind() != ErrorKind::Config,
                        "{vault:?} {authority:?}: {error}"
                    );
                }
                Err(error) => prop_assert!(
                    error.to_string().starts_with("MLFLOW_AZURE_KEY_VAULT_URL: ")
                        || error.to_string().starts_with("AZURE_AUTHORITY_HOST: "),
                    "{vault:?} {authority:?}: {error}"
                ),
            }
        }
    }

    const BASE: [(&str, &str); 5] = [
        ("AZURE_KEY_VAULT_URL", "https://team.vault.azure.net/"),
        ("MLFLOW_AZURE_SECRET_NAME", "mlflow-cred"),
        ("MLFLOW_AZURE_SECRET_VERSION", "latest"),
        ("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.us"),
        ("PATH", "/nonexistent"),
    ];

    fn from(vars: &[(&str, &str)]) -> Result<AzureKeyVaultProvider> {
        AzureKeyVaultProvider::from_env(&Env::new(&vars))
    }

    #[test]
    fn from_env_reads_aliases_and_describes_the_choice() {
        let provider = from(&BASE).unwrap();
        assert_eq!(
            provider.secret_ref(),
            "azure:https://team.vault.azure.net:mlflow-cred:latest"
        );
        assert_eq!(
            provider.describe().to_string(),
            "azure-key-vault: vault=https://team.vault.azure.net, secret_name=mlflow-cred, \
             version=latest, credential=managed identity (system-assigned), \
             authority=https://login.microsoftonline.us"
        );
    }

    #[test]
    fn from_env_names_each_bad_variable() {
        let missing_url: Vec<_> = BASE[1..].to_vec();
        let err = from(&missing_url).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(
            err.to_string().contains("MLFLOW_AZURE_KEY_VAULT_URL"),
            "{err}"
        );

        let mut plain = BASE.to_vec();
        plain[0] = ("MLFLOW_AZURE_KEY_VAULT_URL", "http://team.vault.azure.net");
        assert!(from(&plain).unwrap_err().to_string().contains("https"));

        let mut bad_name = BASE.to_vec();
        bad_name[1] = ("MLFLOW_AZURE_SECRET_NAME", "mlflow/cred");
        let err = from(&bad_name).unwrap_err();
        assert!(
            err.to_string().contains("MLFLOW_AZURE_SECRET_NAME"),
            "{err}"
        );

        let mut authority = BASE.to_vec();
        authority[3] = ("AZURE_AUTHORITY_HOST", "login.microsoftonline.com");
        let err = from(&authority).unwrap_err();
        assert!(err.to_string().contains("AZURE_AUTHORITY_HOST"), "{err}");
    }

    #[test]
    fn an_empty_or_latest_version_means_the_current_one() {
        for version in ["", "latest", "LATEST", "  "] {
            let provider = AzureKeyVaultProvider::builder()
                .vault_url("https://v.vault.azure.net")
                .secret_name("s")
                .version(version)
                .credential(AzureCredential::ManagedIdentity { client_id: None })
                .build()
                .unwrap();
            assert!(provider.secret_ref().ends_with(":s:latest"), "{version:?}");
        }
    }
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
