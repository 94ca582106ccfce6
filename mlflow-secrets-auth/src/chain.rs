//! The provider chain: each enabled provider, built from its variables, with
//! its settings and its own circuit breaker; and fetching through the chain
//! with retries and failover.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mlflow_secrets_auth_core::{
    AuthHeader, AuthMode, Credential, Env, ErrorKind, HeaderName, ProviderKind, ProviderSettings,
    Result, SecretError, SecretMeta, SecretProvider,
};
use mlflow_secrets_auth_retry::{Backoff, BreakerConfig, BreakerState, Jitter, RetryPolicy};

use crate::config::{Config, Warning, WarningKind};
use crate::layers::{ProviderExt, Retrying};

/// One configured provider in the chain: retried, behind its own breaker.
pub(crate) struct Link {
    pub(crate) provider: Retrying<Arc<dyn SecretProvider>>,
    pub(crate) settings: ProviderSettings,
    pub(crate) last_error: Mutex<Option<ErrorKind>>,
}

/// The name of the node agent's provider.
pub(crate) const AGENT: &str = "agent";

/// A provider that is enabled but cannot be used, and why.
#[derive(Debug, Clone)]
pub(crate) struct Unusable {
    pub(crate) name: &'static str,
    pub(crate) error: SecretError,
}

/// Builds the provider of `kind` from `env`.
fn build(kind: ProviderKind, env: &Env<'_>) -> Result<Arc<dyn SecretProvider>> {
    match kind {
        ProviderKind::File => Ok(Arc::new(mlflow_secrets_auth_core::FileProvider::from_env(
            env,
        )?)),
        #[cfg(feature = "vault")]
        ProviderKind::Vault => Ok(Arc::new(
            mlflow_secrets_auth_vault::VaultProvider::from_env(env)?,
        )),
        #[cfg(feature = "aws")]
        ProviderKind::AwsSecretsManager => Ok(Arc::new(
            mlflow_secrets_auth_aws::AwsSecretsManagerProvider::from_env(env)?,
        )),
        #[cfg(feature = "azure")]
        ProviderKind::AzureKeyVault => Ok(Arc::new(
            mlflow_secrets_auth_azure::AzureKeyVaultProvider::from_env(env)?,
        )),
        #[allow(unreachable_patterns)]
        other => Err(SecretError::config(
            "MLFLOW_SECRETS_AUTH_ENABLE",
            match feature_of(other) {
                Some(feature) => format!(
                    "provider `{other}` is not compiled into this build (enable the crate feature `{feature}`)"
                ),
                None => format!("provider `{other}` is not compiled into this build"),
            },
        )),
    }
}

/// The OAuth2 exchange each provider is wrapped in when
/// `MLFLOW_SECRETS_OAUTH_TOKEN_URL` or `MLFLOW_SECRETS_OAUTH_ISSUER` is set:
/// the provider then holds the client, and the credential is an access
/// token obtained with it.
pub(crate) struct Exchange(
    #[cfg(feature = "oauth")] Option<mlflow_secrets_auth_oauth::OAuthConfig>,
);

impl Exchange {
    #[cfg(feature = "oauth")]
    pub(crate) fn from_env(env: &Env<'_>) -> Result<Self> {
        Ok(Self(mlflow_secrets_auth_oauth::OAuthConfig::from_env(env)?))
    }

    /// Without the feature `oauth`, asking for the exchange is a configuration error.
    #[cfg(not(feature = "oauth"))]
    pub(crate) fn from_env(env: &Env<'_>) -> Result<Self> {
        for variable in [
            "MLFLOW_SECRETS_OAUTH_TOKEN_URL",
            "MLFLOW_SECRETS_OAUTH_ISSUER",
        ] {
            if env.string(&[variable])?.is_some() {
                return Err(SecretError::config(
                    variable,
                    "OAuth2 tokens are not compiled into this build (enable the crate feature `oauth`)",
                ));
            }
        }
        Ok(Self())
    }

    /// `provider`, wrapped in the exchange when it is configured.
    pub(crate) fn wrap(
        &self,
        provider: Arc<dyn SecretProvider>,
    ) -> Result<Arc<dyn SecretProvider>> {
        #[cfg(feature = "oauth")]
        if let Some(config) = &self.0 {
            return Ok(Arc::new(
                mlflow_secrets_auth_oauth::OAuthProvider::wrapping(provider, config.clone())?,
            ));
        }
        Ok(provider)
    }
}

/// The node agent named by `MLFLOW_SECRETS_AGENT`, first in the chain. Its
/// answers carry the auth mode and validity of the agent's own provider;
/// the TTL here is only the upper bound.
#[cfg(feature = "agent")]
fn agent(
    config: &Config,
    env: &Env<'_>,
) -> Result<Option<(Arc<dyn SecretProvider>, ProviderSettings)>> {
    let settings = ProviderSettings {
        auth_mode: AuthMode::default(),
        ttl: config.ttl_max,
    };
    Ok(mlflow_secrets_auth_agent::AgentProvider::from_env(env)?
        .map(|agent| (Arc::new(agent) as Arc<dyn SecretProvider>, settings)))
}

/// Without the feature `agent`, naming an agent is a configuration error.
#[cfg(not(feature = "agent"))]
fn agent(
    _config: &Config,
    env: &Env<'_>,
) -> Result<Option<(Arc<dyn SecretProvider>, ProviderSettings)>> {
    match env.string(&["MLFLOW_SECRETS_AGENT"])? {
        None => Ok(None),
        Some(_) => Err(SecretError::config(
            "MLFLOW_SECRETS_AGENT",
            "the agent client is not compiled into this build (enable the crate feature `agent`)",
        )),
    }
}

/// The crate feature that compiles a provider in; `None` for the file
/// provider, which is always there.
pub(crate) fn feature_of(kind: ProviderKind) -> Option<&'static str> {
    match kind {
        ProviderKind::Vault => Some("vault"),
        ProviderKind::AwsSecretsManager => Some("aws"),
        ProviderKind::AzureKeyVault => Some("azure"),
        ProviderKind::File => None,
    }
}

/// Whether a provider kind is compiled into this build.
pub(crate) fn compiled_in(kind: ProviderKind) -> bool {
    match kind {
        ProviderKind::File => true,
        ProviderKind::Vault => cfg!(feature = "vault"),
        ProviderKind::AwsSecretsManager => cfg!(feature = "aws"),
        ProviderKind::AzureKeyVault => cfg!(feature = "azure"),
    }
}

/// The retry policy of every link (the chain applies the fetch deadline).
pub(crate) fn retry_policy(config: &Config) -> RetryPolicy {
    let backoff = Backoff::default()
        .with_base(config.base_delay)
        .with_max(config.max_delay)
        .with_jitter(Jitter::Proportional(0.1));
    RetryPolicy::default()
        .with_max_retries(config.max_retries)
        .with_backoff(backoff)
        .with_attempt_timeout(config.request_timeout)
}

/// The chain of enabled providers, in order.
pub(crate) struct Chain {
    pub(crate) links: Vec<Link>,
    pub(crate) unusable: Vec<Unusable>,
    deadline: Duration,
    header_name: HeaderName,
}

impl Chain {
    /// Builds every enabled provider from `env`; misconfigured ones are kept
    /// aside (reported, never tried).
    pub(crate) fn from_env(config: &Config, env: &Env<'_>, warnings: &mut Vec<Warning>) -> Self {
        let mut entries = Vec::new();
        let mut unusable = Vec::new();
        match agent(config, env) {
            Ok(Some(pair)) => entries.push(pair),
            Ok(None) => {}
            Err(error) => {
                warnings.push(Warning::new(
                    WarningKind::Provider,
                    format!("the agent is skipped: {error}"),
                ));
                unusable.push(Unusable { name: AGENT, error });
            }
        }
        let exchange = Exchange::from_env(env);
        for &kind in &config.enabled {
            let built = build(kind, env)
                .and_then(|provider| match &exchange {
                    Ok(exchange) => exchange.wrap(provider),
                    Err(error) => Err(error.clone()),
                })
                .and_then(|provider| {
                    let (settings, warning) = config.provider_settings(kind, env)?;
                    warnings.extend(warning);
                    Ok((provider, settings))
                });
            match built {
                Ok(pair) => entries.push(pair),
                Err(error) => {
                    warnings.push(Warning::new(
                        WarningKind::Provider,
                        format!("provider `{kind}` skipped: {error}"),
                    ));
                    unusable.push(Unusable {
                        name: kind.name(),
                        error,
                    });
                }
            }
        }
        let mut chain = Self::new(config, entries);
        chain.unusable = unusable;
        chain
    }

    /// A chain of the given providers (tried in this order).
    pub(crate) fn new(
        config: &Config,
        providers: Vec<(Arc<dyn SecretProvider>, ProviderSettings)>,
    ) -> Self {
        let breaker = BreakerConfig::default()
            .with_threshold(config.breaker_threshold)
            .with_open_for(config.breaker_open_for);
        let policy = retry_policy(config);
        let links = providers
            .into_iter()
            .map(|(provider, settings)| {
                // An agent that does not answer is failed over at once:
                // retrying a local socket only delays the next provider.
                let policy = if provider.name() == AGENT {
                    policy.clone().with_max_retries(0)
                } else {
                    policy.clone()
                };
                (provider.with_retry(policy).with_breaker(breaker), settings)
            })
            .map(|(provider, settings)| Link {
                provider,
                settings,
                last_error: Mutex::new(None),
            })
            .collect();
        Self {
            links,
            unusable: Vec::new(),
            deadline: config.fetch_deadline,
            header_name: config.header_name.clone(),
        }
    }

    /// Fetches the credential: providers in order, each under retry and its
    /// breaker; a transient failure (or open circuit) moves on to the next
    /// provider, any other failure is returned as is. `again`: the value
    /// last fetched was refused, so each provider is asked to
    /// [refetch](SecretProvider::refetch).
    pub(crate) async fn fetch(
        &self,
        observer: Option<&FetchObserver>,
        again: bool,
    ) -> Result<(Resolved, SecretMeta)> {
        if self.links.is_empty() {
            let why = match self.unusable.as_slice() {
                // The one provider's own error leads: it names the variable
                // that is wrong, once.
                [only] => return Err(only.error.clone()),
                [] => "no provider is enabled (set MLFLOW_SECRETS_AUTH_ENABLE)".to_owned(),
                several => format!(
                    "no provider it names is usable: {}",
                    several
                        .iter()
                        .map(|u| u.error.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            };
            return Err(SecretError::config("MLFLOW_SECRETS_AUTH_ENABLE", why));
        }
        let start = Instant::now();
        let mut failures = Vec::new();
        for (index, link) in self.links.iter().enumerate() {
            let name = link.provider.name();
            let left = self.deadline.saturating_sub(start.elapsed());
            if left.is_zero() {
                failures.push(format!("{name}: not tried, the fetch deadline passed"));
                break;
            }
            let started = Instant::now();
            let result = self.fetch_one(link, left, again).await;
            if let Some(observe) = &observer {
                observe(&FetchEvent {
                    provider: name,
                    took: started.elapsed(),
                    error: result.as_ref().err().map(SecretError::kind),
                });
            }
            *link.last_error.lock().unwrap_or_else(|e| e.into_inner()) =
                result.as_ref().err().map(SecretError::kind);
            match result {
                Ok((header, credential, mode, meta)) => {
                    if index > 0 {
                        tracing::info!(provider = name, "credential served by a fallback provider");
                    }
                    return Ok((
                        Resolved {
                            header,
                            credential,
                            mode,
                            index,
                        },
                        meta,
                    ));
                }
                Err(error) if error.is_transient() => {
                    tracing::warn!(
                        provider = name,
                        error = %mlflow_secrets_auth_core::redact(&error.to_string()),
                        "provider failed transiently; trying the next one"
                    );
                    if self.links.len() == 1 {
                        return Err(error);
                    }
                    failures.push(format!("{name}: {}", error.message()));
                    if index + 1 == self.links.len() {
                        let kind = error.kind();
                        return Err(SecretError::new(
                            kind,
                            format!("every provider failed: {}", failures.join("; ")),
                        )
                        .with_retry_after(error.retry_after()));
                    }
                }
                Err(error) => return Err(error),
            }
        }
        Err(SecretError::new(
            ErrorKind::Timeout,
            format!("every provider failed: {}", failures.join("; ")),
        ))
    }

    async fn fetch_one(
        &self,
        link: &Link,
        budget: Duration,
        again: bool,
    ) -> Result<(AuthHeader, Credential, AuthMode, SecretMeta)> {
        let name = link.provider.name();
        let fetched = if again {
            link.provider.refetch_within(budget).await?
        } else {
            link.provider.fetch_within(budget).await?
        };
        let credential = fetched.credential().map_err(|e| e.with_provider(name))?;
        let mode = fetched.meta.auth_mode.unwrap_or(link.settings.auth_mode);
        let header = AuthHeader::build(&credential, mode, &self.header_name).map_err(|e| {
            // A mode set here (not the agent's) is set by a variable: name it.
            let var = fetched
                .meta
                .auth_mode
                .is_none()
                .then(|| name.parse::<ProviderKind>().ok())
                .flatten()
                .map(ProviderKind::auth_mode_var);
            match var {
                Some(var) if e.kind() == ErrorKind::InvalidSecret => SecretError::invalid_secret(
                    format!("{} (the auth mode is {var}={mode})", e.message()),
                )
                .with_provider(name),
                _ => e.with_provider(name),
            }
        })?;
        Ok((header, credential, mode, fetched.meta))
    }

    /// The breaker state of a link, for status output.
    pub(crate) fn breaker_state(&self, index: usize) -> Option<BreakerState> {
        self.links[index].provider.breaker().map(|b| b.state())
    }
}

/// What the chain resolved: the credential, its header, and which link served it.
#[derive(Debug)]
pub(crate) struct Resolved {
    pub(crate) header: AuthHeader,
    pub(crate) credential: Credential,
    pub(crate) mode: AuthMode,
    pub(crate) index: usize,
}

/// One fetch from one provider of the chain, as a [`FetchObserver`] sees it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct FetchEvent {
    /// The provider asked.
    pub provider: &'static str,
    /// How long it took, retries included.
    pub took: Duration,
    /// The kind of its failure, `None` on success.
    pub error: Option<ErrorKind>,
}

/// Told of every fetch (see [`crate::SecretsAuth::observe_fetches`]).
pub type FetchObserver = Box<dyn Fn(&FetchEvent) + Send + Sync>;
