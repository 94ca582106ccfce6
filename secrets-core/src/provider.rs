//! The [`SecretProvider`] trait every backend implements, what a fetch returns,
//! and the settings every provider shares ([`ProviderKind`], [`ProviderSettings`]).
//!
//! A provider turns configuration into secret text plus metadata. It does no
//! caching and no retrying: those layers sit above it and see only this trait.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};

use crate::credential::Credential;
use crate::env::Env;
use crate::error::{Result, SecretError};
use crate::header::AuthMode;

/// A source of secret text: Vault, AWS Secrets Manager, Azure Key Vault, a file.
///
/// `Debug` of an implementation must not show secrets (tokens, client secrets).
#[async_trait]
pub trait SecretProvider: Send + Sync + fmt::Debug {
    /// The provider's stable name, as in `MLFLOW_SECRETS_AUTH_ENABLE` (`vault`, `file`, ...).
    fn name(&self) -> &'static str;

    /// Fetches the secret text once (no retries).
    async fn fetch(&self) -> Result<FetchedSecret>;

    /// Fetches the secret text again because the value last fetched was
    /// refused (a 401/403 from the server it was sent to). A provider that
    /// answers from a cache of its own (the node agent, a cached layer)
    /// passes that on, so its backend is asked; any other fetches as usual
    /// (the default).
    async fn refetch(&self) -> Result<FetchedSecret> {
        self.fetch().await
    }

    /// A summary of the configuration for `info`/`doctor`, with no secret in it.
    fn describe(&self) -> ProviderDescription;

    /// Configuration a person must be told about — certificate checks off, a
    /// plain-http endpoint — each naming the setting (never a secret). None
    /// by default. Every face shows them (`SecretsAuth::warnings`, `info`,
    /// `doctor`, the Python plugin's log) and they are logged at start.
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A shared provider is a provider (so layers can wrap `Arc<dyn SecretProvider>`).
#[async_trait]
impl<P: SecretProvider + ?Sized> SecretProvider for std::sync::Arc<P> {
    fn name(&self) -> &'static str {
        (**self).name()
    }

    async fn fetch(&self) -> Result<FetchedSecret> {
        (**self).fetch().await
    }

    async fn refetch(&self) -> Result<FetchedSecret> {
        (**self).refetch().await
    }

    fn describe(&self) -> ProviderDescription {
        (**self).describe()
    }

    fn warnings(&self) -> Vec<String> {
        (**self).warnings()
    }
}

/// Secret text as a backend returned it, with what the backend said about it.
#[derive(Debug)]
#[non_exhaustive]
pub struct FetchedSecret {
    /// The secret text, wiped from memory on drop.
    pub text: SecretString,
    /// What the backend reported besides the text.
    pub meta: SecretMeta,
}

impl FetchedSecret {
    /// Secret text with no metadata.
    pub fn new(text: SecretString) -> Self {
        Self {
            text,
            meta: SecretMeta::default(),
        }
    }

    /// Sets what the backend reported besides the text.
    #[must_use]
    pub fn with_meta(mut self, meta: SecretMeta) -> Self {
        self.meta = meta;
        self
    }

    /// Parses the text into a [`Credential`].
    pub fn credential(&self) -> Result<Credential> {
        Credential::parse(self.text.expose_secret())
    }
}

/// Metadata of a fetched secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SecretMeta {
    /// The backend's version id of the secret, when it has one.
    pub version: Option<String>,
    /// How long the backend says the secret stays valid from now (a Vault lease,
    /// an Azure `exp`). A cache never keeps the secret longer than this.
    pub valid_for: Option<Duration>,
    /// The whole of the secret's remaining life, when the usable part
    /// (`valid_for`) ends before it (an OAuth2 token is not sent in its last
    /// seconds): refresh ahead is reckoned from this, expiry from `valid_for`.
    pub lifetime: Option<Duration>,
    /// How the source wants the credential written, overriding the provider's
    /// configured auth mode: a source that serves credentials it did not
    /// choose the mode of (the node agent passes on its own provider's).
    pub auth_mode: Option<AuthMode>,
}

impl SecretMeta {
    /// Sets the version.
    #[must_use]
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Sets how long the secret stays valid from now (cut to [`crate::MAX_DURATION`]).
    #[must_use]
    pub fn with_valid_for(mut self, valid_for: Duration) -> Self {
        self.valid_for = Some(crate::capped(valid_for));
        self
    }

    /// Sets the whole remaining life (cut to [`crate::MAX_DURATION`]); see
    /// [`Self::lifetime`].
    #[must_use]
    pub fn with_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = Some(crate::capped(lifetime));
        self
    }

    /// Sets the auth mode the credential must be written with.
    #[must_use]
    pub fn with_auth_mode(mut self, auth_mode: AuthMode) -> Self {
        self.auth_mode = Some(auth_mode);
        self
    }
}

/// A redacted summary of a provider's configuration: name and `key = value` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderDescription {
    /// The provider's name.
    pub provider: &'static str,
    /// Settings worth showing, already redacted (`token = ***`).
    pub fields: Vec<(&'static str, String)>,
}

impl ProviderDescription {
    /// An empty description of `provider`.
    pub fn new(provider: &'static str) -> Self {
        Self {
            provider,
            fields: Vec::new(),
        }
    }

    /// Adds a field. The value must already be free of secrets.
    #[must_use]
    pub fn field(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.fields.push((key, value.into()));
        self
    }
}

impl fmt::Display for ProviderDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.provider)?;
        for (i, (key, value)) in self.fields.iter().enumerate() {
            let sep = if i == 0 { ": " } else { ", " };
            write!(f, "{sep}{key}={value}")?;
        }
        Ok(())
    }
}

/// The built-in providers, in the fixed order they are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProviderKind {
    /// HashiCorp Vault / OpenBao.
    Vault,
    /// AWS Secrets Manager.
    AwsSecretsManager,
    /// Azure Key Vault.
    AzureKeyVault,
    /// A mounted file.
    File,
}

impl ProviderKind {
    /// All built-in providers in the order they are tried.
    pub const ALL: [Self; 4] = [
        Self::Vault,
        Self::AwsSecretsManager,
        Self::AzureKeyVault,
        Self::File,
    ];

    /// The name used in `MLFLOW_SECRETS_AUTH_ENABLE`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Vault => "vault",
            Self::AwsSecretsManager => "aws-secrets-manager",
            Self::AzureKeyVault => "azure-key-vault",
            Self::File => "file",
        }
    }

    /// The per-provider toggle, e.g. `MLFLOW_SECRETS_AUTH_ENABLE_AWS_SECRETS_MANAGER`.
    pub fn enable_var(self) -> &'static str {
        match self {
            Self::Vault => "MLFLOW_SECRETS_AUTH_ENABLE_VAULT",
            Self::AwsSecretsManager => "MLFLOW_SECRETS_AUTH_ENABLE_AWS_SECRETS_MANAGER",
            Self::AzureKeyVault => "MLFLOW_SECRETS_AUTH_ENABLE_AZURE_KEY_VAULT",
            Self::File => "MLFLOW_SECRETS_AUTH_ENABLE_FILE",
        }
    }

    /// The variable holding the auth mode, e.g. `MLFLOW_VAULT_AUTH_MODE`.
    pub fn auth_mode_var(self) -> &'static str {
        match self {
            Self::Vault => "MLFLOW_VAULT_AUTH_MODE",
            Self::AwsSecretsManager => "MLFLOW_AWS_AUTH_MODE",
            Self::AzureKeyVault => "MLFLOW_AZURE_AUTH_MODE",
            Self::File => "MLFLOW_FILE_AUTH_MODE",
        }
    }

    /// The variable holding the cache TTL in seconds, e.g. `MLFLOW_VAULT_TTL_SEC`.
    pub fn ttl_var(self) -> &'static str {
        match self {
            Self::Vault => "MLFLOW_VAULT_TTL_SEC",
            Self::AwsSecretsManager => "MLFLOW_AWS_TTL_SEC",
            Self::AzureKeyVault => "MLFLOW_AZURE_TTL_SEC",
            Self::File => "MLFLOW_FILE_TTL_SEC",
        }
    }

    /// The TTL used when the variable is unset (before clamping).
    pub fn default_ttl(self) -> Duration {
        match self {
            Self::File => Duration::from_secs(60),
            Self::Vault | Self::AwsSecretsManager | Self::AzureKeyVault => Duration::from_secs(300),
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The problem with a string that names no provider.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a provider (expected vault, aws-secrets-manager, azure-key-vault or file)")]
pub struct UnknownProvider(pub String);

impl FromStr for ProviderKind {
    type Err = UnknownProvider;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase().replace('_', "-");
        Self::ALL
            .into_iter()
            .find(|kind| kind.name() == wanted)
            .ok_or_else(|| UnknownProvider(s.trim().to_owned()))
    }
}

/// What every provider is configured with besides its backend: auth mode and TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderSettings {
    /// How the credential becomes a header.
    pub auth_mode: AuthMode,
    /// How long a fetched secret is cached (before clamping and jitter).
    pub ttl: Duration,
}

impl ProviderSettings {
    /// Reads `MLFLOW_<P>_AUTH_MODE` and `MLFLOW_<P>_TTL_SEC` for `kind`.
    pub fn from_env(kind: ProviderKind, env: &Env<'_>) -> Result<Self> {
        let mode_var = kind.auth_mode_var();
        let auth_mode = match env.string(&[mode_var])? {
            None => AuthMode::default(),
            Some(value) => value
                .parse()
                .map_err(|e| SecretError::config(mode_var, format!("{value:?} {e}")))?,
        };
        let ttl = env.seconds(kind.ttl_var(), kind.default_ttl())?;
        Ok(Self { auth_mode, ttl })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_names_round_trip_in_order() {
        let names: Vec<_> = ProviderKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(
            names,
            ["vault", "aws-secrets-manager", "azure-key-vault", "file"]
        );
        for kind in ProviderKind::ALL {
            assert_eq!(kind.name().parse(), Ok(kind));
            assert_eq!(kind.name().to_uppercase().parse(), Ok(kind));
        }
        assert_eq!(
            "AWS_SECRETS_MANAGER".parse(),
            Ok(ProviderKind::AwsSecretsManager)
        );
        assert!("gcp".parse::<ProviderKind>().is_err());
    }

    #[test]
    fn settings_default_and_from_env() {
        let none: [(&str, &str); 0] = [];
        let s = ProviderSettings::from_env(ProviderKind::File, &Env::new(&none)).unwrap();
        assert_eq!(s.auth_mode, AuthMode::Bearer);
        assert_eq!(s.ttl, Duration::from_secs(60));

        let vars = [
            ("MLFLOW_VAULT_AUTH_MODE", "Basic"),
            ("MLFLOW_VAULT_TTL_SEC", "120"),
        ];
        let s = ProviderSettings::from_env(ProviderKind::Vault, &Env::new(&vars)).unwrap();
        assert_eq!(s.auth_mode, AuthMode::Basic);
        assert_eq!(s.ttl, Duration::from_secs(120));
    }

    #[test]
    fn bad_auth_mode_names_the_variable() {
        let vars = [("MLFLOW_AWS_AUTH_MODE", "digest")];
        let err = ProviderSettings::from_env(ProviderKind::AwsSecretsManager, &Env::new(&vars))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "MLFLOW_AWS_AUTH_MODE: \"digest\" is not an auth mode (expected `bearer` or `basic`) (config)"
        );
    }

    #[test]
    fn description_display() {
        let d = ProviderDescription::new("file").field("path", "/run/secrets/mlflow");
        assert_eq!(d.to_string(), "file: path=/run/secrets/mlflow");
    }
}
