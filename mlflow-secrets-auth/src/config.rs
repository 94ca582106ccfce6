//! [`Config`]: every general setting (`docs/configuration.md`), read from the environment
//! (with the predecessor's names and aliases) or set by a builder, plus the
//! warnings a person should see (no allowlist, TLS checks off, clamped TTLs).
//! Provider-specific variables are read by each provider's own `from_env`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use mlflow_secrets_auth_core::{
    Env, HeaderName, HostAllowlist, ProviderKind, ProviderSettings, Result, SecretError,
};

/// How much the library logs (`MLFLOW_SECRETS_LOG_LEVEL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogLevel {
    /// Everything.
    Trace,
    /// Cache hits and misses, fetches, retries.
    Debug,
    /// Refreshes, failovers, breaker changes (default).
    #[default]
    Info,
    /// Stale credentials served, misconfigured providers.
    Warning,
    /// Failures only.
    Error,
}

impl LogLevel {
    /// The matching `tracing` level.
    pub fn as_tracing(self) -> tracing::Level {
        match self {
            Self::Trace => tracing::Level::TRACE,
            Self::Debug => tracing::Level::DEBUG,
            Self::Info => tracing::Level::INFO,
            Self::Warning => tracing::Level::WARN,
            Self::Error => tracing::Level::ERROR,
        }
    }
}

impl FromStr for LogLevel {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "trace" => Ok(Self::Trace),
            "debug" => Ok(Self::Debug),
            "info" => Ok(Self::Info),
            "warning" | "warn" => Ok(Self::Warning),
            "error" => Ok(Self::Error),
            _ => Err(format!(
                "{s:?} is not a log level (trace, debug, info, warning, error)"
            )),
        }
    }
}

/// The general configuration.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// Providers to use, in the order they are tried.
    pub enabled: Vec<ProviderKind>,
    /// Hosts that may receive the credential.
    pub allowlist: HostAllowlist,
    /// The header written.
    pub header_name: HeaderName,
    /// Log level for [`crate::init_logging`].
    pub log_level: LogLevel,
    /// Retries after the first attempt of a backend call.
    pub max_retries: u32,
    /// First backoff delay.
    pub base_delay: Duration,
    /// Cap on one backoff delay.
    pub max_delay: Duration,
    /// Fetch on every use.
    pub cache_disabled: bool,
    /// Lower bound of every TTL.
    pub ttl_min: Duration,
    /// Upper bound of every TTL.
    pub ttl_max: Duration,
    /// How long past expiry a credential may be served on transient failures
    /// (`None`: as long as its TTL).
    pub stale_if_error: Option<Duration>,
    /// Per-attempt timeout of one backend call.
    pub request_timeout: Duration,
    /// Total time budget of one fetch, retries and failover included.
    pub fetch_deadline: Duration,
    /// Consecutive transient failures that open a provider's circuit.
    pub breaker_threshold: u32,
    /// How long an open circuit stays open.
    pub breaker_open_for: Duration,
    /// Never attach the credential to plain-http URLs except on loopback.
    pub require_tls: bool,
    /// After a server refused a credential (401/403), how long before the
    /// same credential may cause another refetch.
    pub refetch_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            enabled: Vec::new(),
            allowlist: HostAllowlist::allow_all(),
            header_name: HeaderName::authorization(),
            log_level: LogLevel::Info,
            max_retries: 3,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            cache_disabled: false,
            ttl_min: Duration::from_secs(60),
            ttl_max: Duration::from_secs(3600),
            stale_if_error: None,
            request_timeout: mlflow_secrets_auth_core::DEFAULT_REQUEST_TIMEOUT,
            fetch_deadline: Duration::from_secs(60),
            breaker_threshold: 5,
            breaker_open_for: Duration::from_secs(60),
            require_tls: false,
            refetch_interval: Duration::from_secs(30),
        }
    }
}

/// Something a person should know about the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    kind: WarningKind,
    message: String,
}

/// What a [`Warning`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WarningKind {
    /// The allowlist admits every host, or more hosts than it seems to.
    Allowlist,
    /// A provider: skipped for its configuration, or its own warning
    /// (certificate checks off, a plain-http endpoint).
    Provider,
    /// A setting was corrected or is missing (a clamped TTL, no provider).
    Setting,
    /// A variable of this project's name families is set but read by
    /// nothing: usually a misspelt name (see [`crate::VARIABLES`]).
    Unread,
}

impl Warning {
    /// A warning of `kind` saying `message` (which names the setting and
    /// never holds a secret).
    pub fn new(kind: WarningKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// What it is about.
    pub fn kind(&self) -> WarningKind {
        self.kind
    }

    /// What it says.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// What a person must know about an allowlist: none at all, or patterns
/// that admit more than they seem to.
pub(crate) fn allowlist_warnings(allowlist: &HostAllowlist) -> Vec<Warning> {
    if !allowlist.is_restricted() {
        return vec![Warning::new(
            WarningKind::Allowlist,
            format!(
                "{HOSTS_VAR} is not set: the credential is sent to every host; set it to the MLflow server's host name"
            ),
        )];
    }
    allowlist
        .warnings()
        .into_iter()
        .map(|w| Warning::new(WarningKind::Allowlist, format!("{HOSTS_VAR}: {w}")))
        .collect()
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

const ENABLE_VAR: &str = "MLFLOW_SECRETS_AUTH_ENABLE";
const HOSTS_VAR: &str = "MLFLOW_SECRETS_ALLOWED_HOSTS";
const HEADER_VAR: &str = "MLFLOW_AUTH_HEADER_NAME";
const LOG_VAR: &str = "MLFLOW_SECRETS_LOG_LEVEL";

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<(Self, Vec<Warning>)> {
        Self::from_source(&Env::process())
    }

    /// Reads `env`. Errors name the variable; warnings say what is risky.
    pub fn from_source(env: &Env<'_>) -> Result<(Self, Vec<Warning>)> {
        let defaults = Self::default();
        let mut warnings = Vec::new();

        let mut enabled = Vec::new();
        for name in env.list(ENABLE_VAR)?.unwrap_or_default() {
            let kind: ProviderKind = name
                .parse()
                .map_err(|e| SecretError::config(ENABLE_VAR, e))?;
            enabled.push(kind);
        }
        for kind in ProviderKind::ALL {
            if env.flag(kind.enable_var(), false)? {
                enabled.push(kind);
            }
        }
        enabled.sort();
        enabled.dedup();

        // Set but blank (a template that rendered empty) is an error, not "every host".
        let allowlist = match env.present(HOSTS_VAR)? {
            Some(list) => {
                HostAllowlist::parse(&list).map_err(|e| SecretError::config(HOSTS_VAR, e))?
            }
            None => HostAllowlist::allow_all(),
        };
        warnings.extend(allowlist_warnings(&allowlist));
        let header_name = match env.string(&[HEADER_VAR])? {
            Some(name) => HeaderName::new(&name)
                .map_err(|e| SecretError::config(HEADER_VAR, format!("{name:?} {e}")))?,
            None => defaults.header_name.clone(),
        };
        let log_level = match env.string(&[LOG_VAR])? {
            Some(level) => level.parse().map_err(|e| SecretError::config(LOG_VAR, e))?,
            None => defaults.log_level,
        };
        let stale = env.seconds("MLFLOW_SECRETS_STALE_IF_ERROR_SEC", Duration::MAX)?;
        let config = Self {
            enabled,
            allowlist,
            header_name,
            log_level,
            max_retries: env.u32("MLFLOW_SECRETS_MAX_RETRIES", defaults.max_retries)?,
            base_delay: env.seconds("MLFLOW_SECRETS_BASE_DELAY", defaults.base_delay)?,
            max_delay: env.seconds("MLFLOW_SECRETS_MAX_DELAY", defaults.max_delay)?,
            cache_disabled: env.flag("MLFLOW_SECRETS_CACHE_DISABLED", false)?,
            ttl_min: env.seconds("MLFLOW_SECRETS_TTL_MIN_SEC", defaults.ttl_min)?,
            ttl_max: env.seconds("MLFLOW_SECRETS_TTL_MAX_SEC", defaults.ttl_max)?,
            stale_if_error: (stale != Duration::MAX).then_some(stale),
            request_timeout: env.seconds(
                mlflow_secrets_auth_core::REQUEST_TIMEOUT_VAR,
                defaults.request_timeout,
            )?,
            fetch_deadline: env
                .seconds("MLFLOW_SECRETS_FETCH_DEADLINE_SEC", defaults.fetch_deadline)?,
            breaker_threshold: env.u32(
                "MLFLOW_SECRETS_BREAKER_THRESHOLD",
                defaults.breaker_threshold,
            )?,
            breaker_open_for: env
                .seconds("MLFLOW_SECRETS_BREAKER_OPEN_SEC", defaults.breaker_open_for)?,
            require_tls: env.flag("MLFLOW_SECRETS_REQUIRE_TLS", false)?,
            refetch_interval: env.seconds(
                "MLFLOW_SECRETS_REFETCH_INTERVAL_SEC",
                defaults.refetch_interval,
            )?,
        };
        if config.ttl_min > config.ttl_max {
            return Err(SecretError::config(
                "MLFLOW_SECRETS_TTL_MIN_SEC",
                format!(
                    "{}s is above MLFLOW_SECRETS_TTL_MAX_SEC ({}s)",
                    config.ttl_min.as_secs_f64(),
                    config.ttl_max.as_secs_f64()
                ),
            ));
        }
        if config.request_timeout.is_zero() {
            return Err(SecretError::config(
                mlflow_secrets_auth_core::REQUEST_TIMEOUT_VAR,
                "must be more than 0",
            ));
        }
        if let Some(set) = env.names() {
            warnings.extend(crate::names::near_misses(&set));
        }
        // A worker of the node agent needs no provider of its own.
        if config.enabled.is_empty() && env.string(&["MLFLOW_SECRETS_AGENT"])?.is_none() {
            warnings.push(Warning::new(
                WarningKind::Setting,
                format!(
                    "no provider is enabled: set {ENABLE_VAR} (vault, aws-secrets-manager, azure-key-vault, file)"
                ),
            ));
        }
        Ok((config, warnings))
    }

    /// A TTL clamped to the bounds, with a warning when it had to be.
    pub fn clamp_ttl(&self, kind: ProviderKind, ttl: Duration) -> (Duration, Option<Warning>) {
        let clamped = ttl.clamp(self.ttl_min, self.ttl_max);
        let warning = (clamped != ttl).then(|| {
            Warning::new(
                WarningKind::Setting,
                format!(
                    "{} = {}s is outside [{}s, {}s]; using {}s",
                    kind.ttl_var(),
                    ttl.as_secs_f64(),
                    self.ttl_min.as_secs_f64(),
                    self.ttl_max.as_secs_f64(),
                    clamped.as_secs_f64()
                ),
            )
        });
        (clamped, warning)
    }

    /// A provider's auth mode and TTL (clamped), with any clamping warning.
    pub fn provider_settings(
        &self,
        kind: ProviderKind,
        env: &Env<'_>,
    ) -> Result<(ProviderSettings, Option<Warning>)> {
        let settings = ProviderSettings::from_env(kind, env)?;
        let (ttl, warning) = self.clamp_ttl(kind, settings.ttl);
        Ok((ProviderSettings { ttl, ..settings }, warning))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlflow_secrets_auth_core::ErrorKind;

    fn load(vars: &[(&str, &str)]) -> Result<(Config, Vec<Warning>)> {
        Config::from_source(&Env::new(&vars))
    }

    #[test]
    fn defaults_come_from_the_predecessor() {
        let (config, warnings) = load(&[]).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].message().contains(HOSTS_VAR));
        assert_eq!(warnings[0].kind(), WarningKind::Allowlist);
        assert_eq!(warnings[1].kind(), WarningKind::Setting, "no provider");
    }

    #[test]
    fn every_variable_is_read() {
        let (config, warnings) = load(&[
            (ENABLE_VAR, "file, vault"),
            ("MLFLOW_SECRETS_AUTH_ENABLE_AWS_SECRETS_MANAGER", "yes"),
            (HOSTS_VAR, "mlflow.example.com"),
            (HEADER_VAR, "x-mlflow-auth"),
            (LOG_VAR, "WARNING"),
            ("MLFLOW_SECRETS_MAX_RETRIES", "5"),
            ("MLFLOW_SECRETS_BASE_DELAY", "0.5"),
            ("MLFLOW_SECRETS_MAX_DELAY", "10"),
            ("MLFLOW_SECRETS_CACHE_DISABLED", "true"),
            ("MLFLOW_SECRETS_TTL_MIN_SEC", "30"),
            ("MLFLOW_SECRETS_TTL_MAX_SEC", "600"),
            ("MLFLOW_SECRETS_STALE_IF_ERROR_SEC", "0"),
            ("MLFLOW_SECRETS_REQUEST_TIMEOUT_SEC", "2"),
            ("MLFLOW_SECRETS_FETCH_DEADLINE_SEC", "20"),
            ("MLFLOW_SECRETS_BREAKER_THRESHOLD", "3"),
            ("MLFLOW_SECRETS_BREAKER_OPEN_SEC", "15"),
            ("MLFLOW_SECRETS_REQUIRE_TLS", "1"),
        ])
        .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            config.enabled,
            [
                ProviderKind::Vault,
                ProviderKind::AwsSecretsManager,
                ProviderKind::File
            ]
        );
        assert!(config.allowlist.is_restricted());
        assert_eq!(config.header_name.as_str(), "x-mlflow-auth");
        assert_eq!(config.log_level, LogLevel::Warning);
        assert_eq!(config.max_retries, 5);
        assert_eq!(config.base_delay, Duration::from_millis(500));
        assert_eq!(config.max_delay, Duration::from_secs(10));
        assert!(config.cache_disabled && config.require_tls);
        assert_eq!(
            (config.ttl_min, config.ttl_max),
            (Duration::from_secs(30), Duration::from_secs(600))
        );
        assert_eq!(config.stale_if_error, Some(Duration::ZERO));
        assert_eq!(config.request_timeout, Duration::from_secs(2));
        assert_eq!(config.fetch_deadline, Duration::from_secs(20));
        assert_eq!(
            (config.breaker_threshold, config.breaker_open_for),
            (3, Duration::from_secs(15))
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            (ENABLE_VAR, "vault,gcp"),
            (HOSTS_VAR, ","),
            (HEADER_VAR, "Bad Header"),
            (LOG_VAR, "loud"),
            ("MLFLOW_SECRETS_MAX_RETRIES", "-1"),
            ("MLFLOW_SECRETS_CACHE_DISABLED", "maybe"),
            ("MLFLOW_SECRETS_REQUEST_TIMEOUT_SEC", "0"),
        ] {
            let err = load(&[(var, value)]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config);
            assert!(err.to_string().starts_with(var), "{var}: {err}");
        }
    }

    #[test]
    fn ttls_are_clamped_with_a_warning() {
        let config = Config::default();
        let vars = [("MLFLOW_FILE_TTL_SEC", "5")];
        let (settings, warning) = config
            .provider_settings(ProviderKind::File, &Env::new(&vars))
            .unwrap();
        assert_eq!(settings.ttl, Duration::from_secs(60));
        assert!(
            warning
                .unwrap()
                .message()
                .contains("MLFLOW_FILE_TTL_SEC = 5s")
        );
    }
}
