//! [`OidcServer`]: a real OpenID provider — panva's `oidc-provider` on Node,
//! installed by `cargo xtask test-env` from a pinned lockfile into
//! `secrets-testkit/oidc/node_modules` — on a free loopback port, with the
//! client-credentials grant and the clients a test gives.

use std::path::PathBuf;
use std::time::Duration;

use crate::binaries::{ServerPolicy, workspace_root};
use crate::process::{ServerProcess, ServerSpec};

/// A client the provider knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcClient {
    /// `client_id`.
    pub id: String,
    /// `client_secret`.
    pub secret: String,
    /// `client_secret_basic` or `client_secret_post`.
    pub auth_method: &'static str,
}

impl OidcClient {
    /// A client authenticating with `auth_method`.
    pub fn new(id: &str, secret: &str, auth_method: &'static str) -> Self {
        Self {
            id: id.to_owned(),
            secret: secret.to_owned(),
            auth_method,
        }
    }

    /// Writes the client as a secret manager would hold it —
    /// `{"client_id": …, "client_secret": …}` — to `dir/client.json`; its path.
    pub fn store_in(&self, dir: &std::path::Path) -> String {
        let path = dir.join("client.json");
        let json = serde_json::json!({"client_id": self.id, "client_secret": self.secret});
        std::fs::write(&path, json.to_string()).expect("write the client file");
        path.display().to_string()
    }
}

/// A running provider; killed when dropped. Its scopes are `mlflow` (every
/// client may ask for it) and `admin` (no client may: `invalid_scope`).
#[derive(Debug)]
pub struct OidcServer {
    process: ServerProcess,
}

/// The folder holding `server.mjs` and its `node_modules`.
fn folder() -> PathBuf {
    workspace_root().join("secrets-testkit/oidc")
}

impl OidcServer {
    /// Starts the provider with `clients` and access tokens living
    /// `token_ttl`, or `None` (with a loud SKIPPED line) when Node or the
    /// package is missing and servers are not required.
    pub fn start(test: &str, clients: &[OidcClient], token_ttl: Duration) -> Option<Self> {
        let policy = ServerPolicy::from_env();
        let node = policy.require("node", test)?;
        let installed = folder().join("node_modules/oidc-provider/package.json");
        if !installed.is_file() {
            // The same rule as a missing binary: fail under CI, else skip loudly.
            policy.require("oidc-provider (node_modules)", test)?;
        }
        let clients = serde_json::Value::Array(
            clients
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "client_id": c.id,
                        "client_secret": c.secret,
                        "token_endpoint_auth_method": c.auth_method,
                        "scope": "mlflow",
                    })
                })
                .collect(),
        )
        .to_string();
        let ttl = token_ttl.as_secs().max(1).to_string();
        let script = folder().join("server.mjs").display().to_string();
        let process = ServerProcess::start(&ServerSpec {
            name: "oidc-provider",
            binary: &node,
            args: &[&script, "{port}"],
            env: &[("OIDC_CLIENTS", &clients), ("OIDC_TOKEN_TTL", &ttl)],
            ready_path: "/.well-known/openid-configuration",
            startup_timeout: Duration::from_secs(30),
        });
        Some(Self { process })
    }

    /// `http://127.0.0.1:PORT`, the issuer.
    pub fn issuer(&self) -> String {
        self.process.url()
    }

    /// The token endpoint.
    pub fn token_url(&self) -> String {
        format!("{}/token", self.process.url())
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.process.addr()
    }

    /// Whether the provider says `token` is an active access token issued
    /// to `client_id` (its introspection endpoint, asked as the client
    /// `inspector`): the oracle for a token, outside the code under test.
    pub fn issued_to(&self, token: &str, client_id: &str) -> bool {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("token", token)
            .finish();
        let response = crate::net::http(
            self.addr(),
            "POST",
            "/token/introspection",
            &[
                (
                    "Authorization",
                    &crate::mlflow::basic("inspector", "inspector-secret"),
                ),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            body.as_bytes(),
        )
        .expect("the introspection endpoint answers");
        let answer: serde_json::Value = serde_json::from_str(&response.body).unwrap_or_default();
        answer["active"] == true && answer["client_id"] == client_id
    }
}
