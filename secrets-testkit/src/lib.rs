//! Test support for the mlflow-secrets-auth workspace (not published).
//!
//! Backend tests talk to real server processes on loopback (moto, OpenBao,
//! MLflow) whose binaries `cargo xtask test-env` installs into `.venv/`:
//! - [`binaries`]: finding a server binary, and failing or skipping loudly
//!   when it is missing;
//! - [`process`]: a server process on a free loopback port, killed on drop;
//! - [`moto`]: the moto server (AWS);
//! - [`mlflow`]: an MLflow tracking server with basic auth;
//! - [`capture`]: a server that records every header it receives;
//! - [`openbao`]: the OpenBao dev server (Vault);
//! - [`fault`]: a proxy in front of a real server that answers chosen
//!   requests with errors;
//! - [`net`]: a minimal HTTP client, a listener that never answers, a closed port;
//! - [`azure`]: an HTTPS double of Azure Key Vault and Entra ID (no Key
//!   Vault runs outside Azure), checked by Microsoft's Python clients;
//! - [`hostile`]: scripted hostile servers (redirect tricks, refusals, a TLS
//!   listener, a thief that records every header), also run as the
//!   `hostile-server` binary for the Python tests;
//! - [`kubernetes`]: the Kubernetes TokenReview endpoint that Vault's
//!   Kubernetes auth calls (no cluster runs here), checked by OpenBao's own
//!   plugin, its client;
//! - [`oidc`]: a real OpenID provider (panva's `oidc-provider` on Node) and
//!   a gateway that checks its tokens;
//! - [`tls`]: a per-run CA and server certificate.
//!
//! The provider conformance suite is its own published crate,
//! `mlflow-secrets-auth-conformance`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod azure;
pub mod binaries;
pub mod capture;
pub mod fault;
pub mod hostile;
pub mod kubernetes;
pub mod leak;
pub mod mlflow;
pub mod moto;
pub mod net;
pub mod oidc;
pub mod openbao;
pub mod process;
pub mod rfc3986;
pub mod tls;

pub use binaries::{ServerPolicy, require_binary, skipped_log, venv_dir, workspace_root};

/// A regular expression (for `proptest`) of address-like strings a person
/// might put in an endpoint variable: schemes right, wrong or missing; hosts
/// that are loopback or malformed, never another machine (a test that calls
/// the address sends nothing off this one); ports in and out of range; paths
/// holding URL-special characters.
pub const ENDPOINT_LIKE: &str = "(https?:(//)?|HTTPS://|ftp://|//)?\
     (127\\.0\\.0\\.1|\\[::1\\]|\\[::1|localhost|\\[|@|)\
     (:[0-9]{0,6})?\
     (/[a-z0-9/%?#\\[\\]:@.-]{0,10})?";

/// How long [`or_hang`] waits: far above anything a loaded machine takes
/// for the work it guards, so it never decides a test but a hang.
pub const HANG_GUARD: std::time::Duration = std::time::Duration::from_secs(120);

/// `work`'s output, or a panic naming `what` when it has not finished
/// within [`HANG_GUARD`]. A guard against a test hanging forever (a timeout
/// that never fires), not a timing assertion: speed is measured by the
/// benches.
pub async fn or_hang<T>(what: &str, work: impl Future<Output = T>) -> T {
    match tokio::time::timeout(HANG_GUARD, work).await {
        Ok(output) => output,
        Err(_) => panic!("{what}: still running after {HANG_GUARD:?}: it hangs"),
    }
}
