//! The servers of mlflow-secrets-auth as a library, for a binary of your
//! own (a sidecar, a test harness, a notebook server):
//!
//! - [`Proxy`]: the authenticating proxy. MLflow clients in any language
//!   talk plain HTTP to it on loopback, with a local token, and it forwards
//!   to one MLflow server with the credential attached (only there, never
//!   through a redirect), rotating it underneath them.
//! - [`Agent`]: the node agent. One credential cache for every process of a
//!   machine, on a Unix socket whose peers' uids are checked.
//!
//! Both take a configured [`mlflow_secrets_auth::SecretsAuth`] and serve
//! until a future completes ([`stop_signal`] for SIGTERM/SIGINT). The
//! `mlflow-secrets-auth proxy` and `agent` commands are these builders.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod agent;
mod audit;
mod error;
mod metrics;
mod proxy;
mod serve;
mod tenants;
mod upstream;

pub use agent::{Agent, AgentBuilder};
pub use error::{Error, Result};
pub use proxy::{Proxy, ProxyBuilder, RunningProxy};
pub use serve::{default_socket, random_token, stop_signal};

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
