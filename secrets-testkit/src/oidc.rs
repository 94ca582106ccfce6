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
    /// `client_secret` (empty for a client with a key).
    pub secret: String,
    /// `client_secret_basic`, `client_secret_post` or `private_key_jwt`.
    pub auth_method: &'static str,
    /// For `private_key_jwt`: the private key (PKCS#8 PEM) and its public
    /// JWK, which the provider verifies assertions with.
    pub key: Option<(String, serde_json::Value)>,
}

impl OidcClient {
    /// A client authenticating with `auth_method` and a secret.
    pub fn new(id: &str, secret: &str, auth_method: &'static str) -> Self {
        Self {
            id: id.to_owned(),
            secret: secret.to_owned(),
            auth_method,
            key: None,
        }
    }

    /// A `private_key_jwt` client with a new EC P-256 key whose JWK has the
    /// key id `key_id`.
    pub fn with_key(id: &str, key_id: &str) -> Self {
        use base64::Engine as _;
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .expect("generate a P-256 key");
        // The public key is the uncompressed point: 0x04, x, y.
        let point = pair.public_key_raw();
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": key_id,
            "x": b64(&point[1..33]), "y": b64(&point[33..65]),
        });
        Self {
            id: id.to_owned(),
            secret: String::new(),
            auth_method: "private_key_jwt",
            key: Some((pair.serialize_pem(), jwk)),
        }
    }

    /// The client as a secret manager would hold it:
    /// `{"client_id": …, "client_secret": …}`, or with `private_key` and
    /// `key_id` for a client with a key.
    pub fn stored(&self) -> String {
        match &self.key {
            None => serde_json::json!({"client_id": self.id, "client_secret": self.secret}),
            Some((pem, jwk)) => serde_json::json!({
                "client_id": self.id, "private_key": pem, "key_id": jwk["kid"],
            }),
        }
        .to_string()
    }

    /// Writes [`Self::stored`] to `dir/client.json`; its path.
    pub fn store_in(&self, dir: &std::path::Path) -> String {
        let path = dir.join("client.json");
        std::fs::write(&path, self.stored()).expect("write the client file");
        path.display().to_string()
    }

    /// The client as the provider registers it.
    fn registered(&self) -> serde_json::Value {
        let mut client = serde_json::json!({
            "client_id": self.id,
            "token_endpoint_auth_method": self.auth_method,
            "scope": "mlflow",
        });
        match &self.key {
            None => client["client_secret"] = self.secret.clone().into(),
            Some((_, jwk)) => client["jwks"] = serde_json::json!({ "keys": [jwk] }),
        }
        client
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

/// Node, with the packages installed, or `None` (with a loud SKIPPED line)
/// when they are missing and servers are not required.
fn node(test: &str) -> Option<PathBuf> {
    let policy = ServerPolicy::from_env();
    let node = policy.require("node", test)?;
    for package in ["oidc-provider", "jose"] {
        if !folder()
            .join(format!("node_modules/{package}/package.json"))
            .is_file()
        {
            // The same rule as a missing binary: fail under CI, else skip loudly.
            policy.require(&format!("{package} (node_modules)"), test)?;
        }
    }
    Some(node)
}

impl OidcServer {
    /// Starts the provider with `clients` and access tokens living
    /// `token_ttl`, or `None` (with a loud SKIPPED line) when Node or the
    /// package is missing and servers are not required.
    pub fn start(test: &str, clients: &[OidcClient], token_ttl: Duration) -> Option<Self> {
        let node = node(test)?;
        let clients =
            serde_json::Value::Array(clients.iter().map(OidcClient::registered).collect())
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

    /// [`Self::start`] with the one client `client`.
    pub fn start_one(test: &str, client: &OidcClient, token_ttl: Duration) -> Option<Self> {
        Self::start(test, std::slice::from_ref(client), token_ttl)
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

/// What an [`OidcGateway`] let through and refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayStats {
    /// Requests with a token the IdP signed, relayed to MLflow.
    pub accepted: u64,
    /// Requests refused with 401.
    pub refused: u64,
    /// Why each was refused (`jose`'s error code and message).
    pub reasons: Vec<String>,
}

impl GatewayStats {
    /// Asserts the gateway refused nothing, showing why it did otherwise.
    pub fn assert_none_refused(&self) {
        assert_eq!(
            self.refused, 0,
            "refused at the gateway: {:?}",
            self.reasons
        );
    }
}

/// Asserts `token_requests` made in `runtime` with tokens of `lifetime`
/// are about one per 80 % of a lifetime: at most `runtime / (0.8 × life) +
/// 2`, and at least `runtime / lifetime` (the token rotated). `life` is
/// the shortest a token really lives: the provider counts `exp` from the
/// whole second it issued the token in, so a token lives between `lifetime
/// - 1 s` and `lifetime`, and is refreshed at 80 % of that.
pub fn assert_rotated(token_requests: usize, runtime: Duration, lifetime: Duration) {
    let requests = token_requests as f64;
    let life = lifetime.saturating_sub(Duration::from_secs(1));
    let bound = runtime.as_secs_f64() / (0.8 * life.as_secs_f64()) + 2.0;
    assert!(
        requests <= bound,
        "{requests} token requests in {runtime:?}, at most {bound:.1}"
    );
    assert!(
        requests >= runtime.as_secs_f64() / lifetime.as_secs_f64(),
        "{requests} token requests in {runtime:?}: the token did not rotate"
    );
}

/// The oracle in front of a real MLflow (`gateway.mjs`): a request passes
/// only with a bearer token the IdP signed for `audience`, checked by `jose`
/// against the IdP's JWKS (signature, issuer, audience, expiry); MLflow is
/// then asked with its admin's credentials. Killed when dropped.
#[derive(Debug)]
pub struct OidcGateway {
    process: ServerProcess,
}

impl OidcGateway {
    /// A gateway for tokens `idp` issues for `audience`, in front of `mlflow`.
    pub fn start(
        test: &str,
        idp: &OidcServer,
        audience: &str,
        mlflow: &crate::mlflow::MlflowServer,
    ) -> Option<Self> {
        let node = node(test)?;
        let script = folder().join("gateway.mjs").display().to_string();
        let upstream_auth = crate::mlflow::basic("admin", mlflow.admin_password());
        let process = ServerProcess::start(&ServerSpec {
            name: "oidc-gateway",
            binary: &node,
            args: &[&script, "{port}"],
            env: &[
                ("GATEWAY_ISSUER", &idp.issuer()),
                ("GATEWAY_AUDIENCE", audience),
                ("GATEWAY_UPSTREAM", &mlflow.url()),
                ("GATEWAY_UPSTREAM_AUTH", &upstream_auth),
            ],
            ready_path: "/gateway/stats",
            startup_timeout: Duration::from_secs(30),
        });
        Some(Self { process })
    }

    /// `http://127.0.0.1:PORT`: MLflow, behind the gateway.
    pub fn url(&self) -> String {
        self.process.url()
    }

    /// What it accepted and refused so far.
    pub fn stats(&self) -> GatewayStats {
        let response = crate::net::http(self.process.addr(), "GET", "/gateway/stats", &[], b"")
            .expect("the gateway answers");
        let stats: serde_json::Value =
            serde_json::from_str(&response.body).expect("the gateway's stats are JSON");
        GatewayStats {
            accepted: stats["accepted"].as_u64().unwrap_or_default(),
            refused: stats["refused"].as_u64().unwrap_or_default(),
            reasons: stats["reasons"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r.as_str().map(str::to_owned))
                .collect(),
        }
    }
}
