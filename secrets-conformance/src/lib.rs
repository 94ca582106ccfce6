//! The conformance suite of mlflow-secrets-auth providers: the same cases,
//! run by every provider against its real backend through a [`SecretStore`]
//! (the test's own admin access to that backend).
//!
//! [`conformance_suite!`] emits one `#[tokio::test]` per case — all of them,
//! always. A case the backend cannot express (binary secrets, plain text,
//! names with `/`) is declared with the reason, and its test is emitted as
//! `#[ignore = "reason"]`: `cargo test` lists it as ignored with that reason,
//! never as passed.
//!
//! ```text
//! mlflow_secrets_auth_conformance::conformance_suite!(
//!     my_store;                       // async fn(&'static str) -> Option<impl SecretStore>
//!     binary: "My Vault stores text only",
//! );
//! ```
//!
//! The cases (each a public `async fn(&dyn SecretStore)` in [`cases`]):
//!
//! | case | capability it needs |
//! |---|---|
//! | `json_token`, `json_user_password`, `not_found`, `malformed`, `rotation` | — (every backend) |
//! | `plain_user_password`, `plain_token` | `plain_text`: a secret stored as plain text, not a JSON map |
//! | `binary_json`, `binary_not_utf8` | `binary`: a secret stored as bytes |
//! | `name_with_slashes` | `slashes`: a name with `/` in it |
//!
//! `docs/providers.md` in the repository walks through adding a provider.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use async_trait::async_trait;
use mlflow_secrets_auth_core::SecretProvider;

pub mod cases;

/// A test's admin access to a real secret backend.
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// Creates secret `name` holding `text`, or stores `text` as its new current version.
    async fn put_text(&self, name: &str, text: &str);

    /// Creates secret `name` holding `bytes` as binary content (only called
    /// by the cases of the `binary` capability).
    async fn put_binary(&self, name: &str, bytes: &[u8]);

    /// A provider reading the current version of `name`.
    fn provider(&self, name: &str) -> Box<dyn SecretProvider>;
}

/// Emits every conformance case as a `#[tokio::test]` run against the store
/// `$store(case_name).await` returns (`None`: the backend is not available
/// and the store said so loudly; the test returns).
///
/// After the store, optional declarations of what the backend cannot do,
/// each with the reason: `plain_text: "…"`, `binary: "…"`, `slashes: "…"`
/// (in this order). Their cases become `#[ignore = "…"]` tests.
#[macro_export]
macro_rules! conformance_suite {
    (
        $store:path
        $(; plain_text: $plain:literal)?
        $(; binary: $binary:literal)?
        $(; slashes: $slashes:literal)?
        $(;)?
    ) => {
        $crate::conformance_suite!(@case $store, json_token, []);
        $crate::conformance_suite!(@case $store, json_user_password, []);
        $crate::conformance_suite!(@case $store, not_found, []);
        $crate::conformance_suite!(@case $store, malformed, []);
        $crate::conformance_suite!(@case $store, rotation, []);
        $crate::conformance_suite!(@case $store, plain_user_password, [$($plain)?]);
        $crate::conformance_suite!(@case $store, plain_token, [$($plain)?]);
        $crate::conformance_suite!(@case $store, binary_json, [$($binary)?]);
        $crate::conformance_suite!(@case $store, binary_not_utf8, [$($binary)?]);
        $crate::conformance_suite!(@case $store, name_with_slashes, [$($slashes)?]);
    };
    (@case $store:path, $case:ident, []) => {
        #[tokio::test]
        async fn $case() {
            if let Some(store) = $store(stringify!($case)).await {
                $crate::cases::$case(&store).await;
            }
        }
    };
    (@case $store:path, $case:ident, [$reason:literal]) => {
        #[tokio::test]
        #[ignore = $reason]
        async fn $case() {
            if let Some(store) = $store(stringify!($case)).await {
                $crate::cases::$case(&store).await;
            }
        }
    };
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
