//! [`OpenBao`]: a real OpenBao dev server (Vault's API) on a free loopback port,
//! with the admin calls tests need to set it up.

use std::net::SocketAddr;
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
}

impl OpenBao {
    /// Starts `bao server -dev`, or returns `None` (with a loud SKIPPED line)
    /// when `bao` is missing and servers are not required.
    pub fn start(test: &str) -> Option<Self> {
        let binary = ServerPolicy::from_env().require("bao", test)?;
        let listen = "-dev-listen-address=127.0.0.1:{port}";
        let root = format!("-dev-root-token-id={ROOT_TOKEN}");
        let process = ServerProcess::start(&ServerSpec {
            name: "bao",
            binary: &binary,
            args: &["server", "-dev", listen, &root, "-dev-no-store-token"],
            env: &[],
            ready_path: "/v1/sys/health",
            startup_timeout: Duration::from_secs(30),
        });
        Some(Self { process })
    }

    /// `http://127.0.0.1:PORT`, for `VAULT_ADDR`.
    pub fn url(&self) -> String {
        self.process.url()
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.process.addr()
    }

    /// An API call as root: `method /v1/{path}` with a JSON body.
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
