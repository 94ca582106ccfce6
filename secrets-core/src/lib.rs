//! The shared vocabulary of mlflow-secrets-auth: what a secret means
//! ([`Credential`]), the header it becomes ([`AuthHeader`]), which hosts may
//! receive it ([`HostAllowlist`]), how it is hidden from people and logs
//! ([`mask`], [`redact`]), the errors of every layer ([`SecretError`]), typed
//! configuration reading ([`Env`]), what a backend's HTTP answer means
//! ([`classify`]), and the [`SecretProvider`] trait with the built-in
//! [`FileProvider`].
//!
//! No network and no async runtime here: every other crate of the workspace
//! builds on this one.
//!
//! ```
//! use mlflow_secrets_auth_core::{AuthHeader, AuthMode, Credential, HeaderName, HostAllowlist};
//! let allow = HostAllowlist::parse("mlflow.example.com")?;
//! assert!(allow.permits("https://mlflow.example.com/api/2.0/mlflow/experiments/search"));
//! let credential = Credential::parse(r#"{"token": "abc123"}"#)?;
//! let header = AuthHeader::build(&credential, AuthMode::Bearer, &HeaderName::authorization())?;
//! assert_eq!(header.to_string(), "Authorization: Bearer *** (6 chars)");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod allowlist;
pub mod classify;
mod credential;
mod endpoint;
mod env;
mod error;
mod file;
mod header;
mod hop;
#[cfg(feature = "reqwest")]
pub mod http;
mod provider;
pub mod proxy;
mod redact;
pub mod time;

pub use allowlist::{HostAllowlist, InvalidHostPattern};
pub use credential::{Credential, MAX_SECRET_BYTES};
pub use endpoint::checked_endpoint;
pub use env::{Env, EnvSource, ProcessEnv, parse_bool};
pub use error::{ErrorKind, Result, SecretError, source_chain};
pub use file::{FileProvider, TOKEN_FILE_LIMIT, read_token_file};
pub use header::{AuthHeader, AuthMode, HeaderName, InvalidHeaderName, UnknownAuthMode};
pub use hop::{
    CREDENTIAL_HEADERS, Hop, HopPolicy, Withheld, is_loopback, parse_handed_on, parsers_agree,
    plain_origin, same_authority, text_agrees,
};
pub use provider::{
    FetchedSecret, ProviderDescription, ProviderKind, ProviderSettings, SecretMeta, SecretProvider,
    UnknownProvider,
};
pub use redact::{REDACTED, hide_everywhere, hide_while_current, mask, mask_password, redact};
/// The `secrecy` crate, re-exported so users match its version.
pub use secrecy;

/// The longest duration taken from configuration or from a server (TTLs,
/// lease lengths, `Retry-After`, validity): one year. Longer values are cut to
/// it, so adding one to a clock reading can never overflow.
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

/// The variable of the per-attempt timeout of one backend call, read by
/// every provider and by the facade's retry layer.
pub const REQUEST_TIMEOUT_VAR: &str = "MLFLOW_SECRETS_REQUEST_TIMEOUT_SEC";

/// The per-attempt timeout of one backend call when [`REQUEST_TIMEOUT_VAR`]
/// is not set: 10 s.
pub const DEFAULT_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `duration`, cut to [`MAX_DURATION`].
pub fn capped(duration: std::time::Duration) -> std::time::Duration {
    duration.min(MAX_DURATION)
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
