//! [`OpenBao`]: a real OpenBao dev server (Vault's API) on a free loopback port,
//! with the admin calls tests need to set it up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::binaries::ServerPolicy;
use crate::net::{Response, http};
use crate::process::{ServerProcess, ServerSpec};

/// The root token of every test server.
pub const ROOT_TOKEN: &str = "mlflow-secrets-auth-test-root";

/// A running OpenBao dev server (in memory, unsealed, KV v2 at `secret/`); killed on drop.
#[derive(Debug)]
pub struct OpenBao {
    process: ServerProcess,
    /// With TLS: the folder holding the generated CA (`vault-ca.pem`).
    tls_dir: Option<PathBuf>,
}

impl OpenBao {
    /// Starts `bao server -dev`, or returns `None` (with a loud SKIPPED line)
    /// when `bao` is missing and servers are not required.
    pub fn start(test: &str) -> Option<Self> {
        Self::start_with(test, false)
    }

    /// Starts `bao server -dev -dev-tls`: HTTPS with a CA generated for the
    /// run ([`Self::ca_cert`]).
    pub fn start_tls(test: &str) -> Option<Self> {
        Self::start_with(test, true)
    }

    fn start_with(test: &str, tls: bool) -> Option<Self> {
        let binary = ServerPolicy::from_env().require("bao", test)?;
        let listen = "-dev-listen-address=127.0.0.1:{port}";
        let root = format!("-dev-root-token-id={ROOT_TOKEN}");
        let tls_dir = tls.then(|| {
            let dir = std::env::temp_dir().join(format!(
                "bao-tls-{}-{}",
                std::process::id(),
                crate::net::free_port()
            ));
            std::fs::create_dir_all(&dir).expect("create the TLS folder");
            dir
        });
        let cert_dir = tls_dir
            .as_ref()
            .map(|d| format!("-dev-tls-cert-dir={}", d.display()));
        let mut args = vec!["server", "-dev", listen, &root, "-dev-no-store-token"];
        if let Some(cert_dir) = &cert_dir {
            args.extend(["-dev-tls", cert_dir.as_str()]);
        }
        let process = ServerProcess::start(&ServerSpec {
            name: "bao",
            binary: &binary,
            args: &args,
            env: &[],
            // Plain HTTP to a TLS port is answered 400: it is listening.
            ready_path: "/v1/sys/health",
            startup_timeout: Duration::from_secs(30),
        });
        Some(Self { process, tls_dir })
    }

    /// `http://127.0.0.1:PORT` (`https://` with TLS), for `VAULT_ADDR`.
    pub fn url(&self) -> String {
        match self.tls_dir {
            Some(_) => format!("https://{}", self.addr()),
            None => self.process.url(),
        }
    }

    /// The CA certificate of a TLS server, for `VAULT_CACERT`.
    pub fn ca_cert(&self) -> Option<PathBuf> {
        self.tls_dir.as_ref().map(|d| d.join("vault-ca.pem"))
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.process.addr()
    }

    /// An API call as root: `method /v1/{path}` with a JSON body (plain-HTTP
    /// servers only).
    pub fn root(&self, method: &str, path: &str, body: &str) -> Response {
        self.call(ROOT_TOKEN, None, method, path, body)
    }

    /// An API call with `token`, in `namespace` if given. Panics on a 5xx or a
    /// transport error; other statuses are returned.
    pub fn call(
        &self,
        token: &str,
        namespace: Option<&str>,
        method: &str,
        path: &str,
        body: &str,
    ) -> Response {
        let mut headers = vec![("X-Vault-Token", token)];
        if let Some(namespace) = namespace {
            headers.push(("X-Vault-Namespace", namespace));
        }
        let response = http(
            self.addr(),
            method,
            &format!("/v1/{path}"),
            &headers,
            body.as_bytes(),
        )
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert!(
            response.status < 500,
            "{method} {path}: {} {}",
            response.status,
            response.body
        );
        response
    }

    /// Like [`Self::root`], and asserts a 2xx answer.
    pub fn admin(&self, method: &str, path: &str, body: &str) -> Response {
        let response = self.root(method, path, body);
        assert!(
            (200..300).contains(&response.status),
            "{method} {path}: {} {}",
            response.status,
            response.body
        );
        response
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        if let Some(dir) = &self.tls_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl OpenBao {
    /// Writes the policy `mlflow-read`: reading `path` only.
    pub fn read_policy(&self, path: &str) {
        let policy = read_policy_text(path);
        self.admin(
            "PUT",
            "sys/policies/acl/mlflow-read",
            &serde_json::json!({ "policy": policy }).to_string(),
        );
    }

    /// Enables the `kubernetes` auth method at mount `kubernetes`, asking
    /// `cluster` (the testkit's TokenReview endpoint) who a token belongs
    /// to, with the role `role` bound to the service account `account` and
    /// granting `mlflow-read` for an hour.
    pub fn kubernetes_auth(
        &self,
        cluster: &crate::kubernetes::TokenReviewApi,
        role: &str,
        account: &crate::kubernetes::ServiceAccount,
    ) {
        self.admin("POST", "sys/auth/kubernetes", r#"{"type": "kubernetes"}"#);
        self.admin(
            "POST",
            "auth/kubernetes/config",
            &serde_json::json!({
                "kubernetes_host": cluster.url(),
                "disable_local_ca_jwt": true,
                // Required with the line above; unused over plain http.
                "kubernetes_ca_cert": crate::tls::server_config(&["127.0.0.1"]).1,
            })
            .to_string(),
        );
        self.admin(
            "POST",
            &format!("auth/kubernetes/role/{role}"),
            &kubernetes_role(account).to_string(),
        );
    }
}

/// The policy `mlflow-read` as [`OpenBao::read_policy`] writes it.
pub fn read_policy_text(path: &str) -> String {
    format!(r#"path "{path}" {{ capabilities = ["read"] }}"#)
}

/// The Kubernetes auth role the tests write (and `docs/kubernetes.md`
/// shows): bound to `account`, granting `mlflow-read` for an hour.
pub fn kubernetes_role(account: &crate::kubernetes::ServiceAccount) -> serde_json::Value {
    serde_json::json!({
        "bound_service_account_names": [account.name],
        "bound_service_account_namespaces": [account.namespace],
        "token_policies": ["mlflow-read"],
        "token_ttl": "1h",
    })
}

/// The JWT auth role `mlflow` the tests write (and `docs/kubernetes.md`
/// shows): tokens with audience `vault` and subject `job`, whose Vault
/// tokens read with `mlflow-read` and live `ttl`, at most `max_ttl`.
pub fn jwt_role(ttl: &str, max_ttl: &str) -> serde_json::Value {
    serde_json::json!({
        "role_type": "jwt",
        "bound_audiences": ["vault"],
        "bound_subject": "job",
        "user_claim": "sub",
        "token_policies": ["mlflow-read"],
        "token_ttl": ttl,
        "token_max_ttl": max_ttl,
    })
}
