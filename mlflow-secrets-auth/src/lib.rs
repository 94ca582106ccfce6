//! mlflow-secrets-auth: fetch an MLflow credential from a secret manager —
//! Vault / OpenBao, AWS Secrets Manager, Azure Key Vault or a mounted file —
//! cache it, retry and circuit-break the backend calls, and attach it as an
//! HTTP auth header only to allowed hosts.
//!
//! - [`SecretsAuth`]: `header_for(url)` through allowlist → cache → provider
//!   chain (with retries, breakers and failover) → header.
//! - [`blocking::SecretsAuth`] for synchronous callers.
//! - [`middleware::SecretsAuthMiddleware`] for `reqwest-middleware` (feature
//!   `middleware`): every hop (request, redirect, resend) decided by the hop
//!   policy ([`HopPolicy`]); at most one resend after a 401/403, through
//!   [`SecretsAuth::refused`].
//! - [`Config`]: every environment variable of the Python package of the same name.
//! - [`layers`]: retry, circuit breaker and cache as wrappers around any
//!   provider (or async function), for building a chain of your own.
//! - [`providers`]: every provider crate, one import away.
//!
//! Provider crates are behind the features `vault`, `aws`, `azure`; the file
//! provider is always there. With the feature `agent`, `MLFLOW_SECRETS_AGENT`
//! puts the node agent (`mlflow-secrets-auth agent`) first in the chain.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod auth;
pub mod blocking;
mod chain;
mod config;
pub mod layers;
mod logging;
#[cfg(feature = "middleware")]
pub mod middleware;
mod names;

pub use auth::{Lease, ProviderStatus, SecretsAuth, SecretsAuthBuilder, worst_case_fetch_time};
pub use chain::{FetchEvent, FetchObserver};
pub use config::{Config, LogLevel, Warning, WarningKind};
pub use logging::{
    LogFormat, RedactingWriter, init_logging, init_logging_as, subscriber, subscriber_as,
};
pub use mlflow_secrets_auth_cache::{CacheStats, EntryInfo, EntryState};
pub use mlflow_secrets_auth_core::{
    AuthHeader, AuthMode, CREDENTIAL_HEADERS, Credential, Env, EnvSource, ErrorKind, FetchedSecret,
    FileProvider, HeaderName, Hop, HopPolicy, HostAllowlist, MAX_DURATION, ProviderDescription,
    ProviderKind, ProviderSettings, Result, SecretError, SecretMeta, SecretProvider, Withheld,
    checked_endpoint, classify, hide_everywhere, hide_while_current, is_loopback, mask,
    mask_password, parse_handed_on, plain_origin, redact, same_authority, secrecy, source_chain,
    text_agrees,
};
pub use mlflow_secrets_auth_retry::BreakerState;
pub use names::{FAMILIES, VARIABLES};
pub use url::Url;

/// Every provider, one import away: `providers::vault`, `providers::aws`,
/// `providers::azure`, `providers::agent` (each behind its crate feature)
/// and `providers::file`.
pub mod providers {
    #[cfg(feature = "agent")]
    pub use mlflow_secrets_auth_agent as agent;
    #[cfg(feature = "aws")]
    pub use mlflow_secrets_auth_aws as aws;
    #[cfg(feature = "azure")]
    pub use mlflow_secrets_auth_azure as azure;
    #[cfg(feature = "oauth")]
    pub use mlflow_secrets_auth_oauth as oauth;
    #[cfg(feature = "vault")]
    pub use mlflow_secrets_auth_vault as vault;

    /// The file provider (always compiled in).
    pub mod file {
        pub use mlflow_secrets_auth_core::FileProvider;
    }
}

/// Whether a provider is compiled into this build (its crate feature is on).
pub fn provider_compiled_in(kind: ProviderKind) -> bool {
    chain::compiled_in(kind)
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
