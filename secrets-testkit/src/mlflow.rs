//! [`MlflowServer`]: a real MLflow tracking server with its basic-auth app on
//! a free loopback port, its own sqlite stores in a temporary folder, and an
//! admin user. Start-up takes seconds and every authenticated request hashes
//! a password, so tests share one server per test binary ([`MlflowServer::shared`]).

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::binaries::ServerPolicy;
use crate::net::{Response, free_port, http};
use crate::process::{ServerProcess, ServerSpec};

/// The admin user of every test server.
pub const ADMIN_USER: &str = "admin";

/// A running MLflow server; killed with its workers when dropped (or when
/// the test process exits).
#[derive(Debug)]
pub struct MlflowServer {
    process: ServerProcess,
    dir: PathBuf,
    admin_password: String,
}

/// `Basic base64(user:password)`.
pub fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

impl MlflowServer {
    /// Starts a server, or `None` (with a loud SKIPPED line) when `mlflow` is
    /// missing and servers are not required.
    pub fn start(test: &str) -> Option<Self> {
        Self::start_with(test, false)
    }

    /// [`Self::start`] with artifacts served by the server itself
    /// (`--serve-artifacts`): clients upload and download them through the
    /// tracking server (`mlflow-artifacts:` URIs).
    pub fn start_serving_artifacts(test: &str) -> Option<Self> {
        Self::start_with(test, true)
    }

    fn start_with(test: &str, serve_artifacts: bool) -> Option<Self> {
        let binary = ServerPolicy::from_env().require("mlflow", test)?;
        sweep_leftovers();
        let dir = std::env::temp_dir().join(format!(
            "mlflow-secrets-auth-mlflow-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("create the MLflow folder");
        let admin_password = format!("adm-{:016x}-Pw", fastrand_u64());
        let ini = dir.join("basic_auth.ini");
        std::fs::write(
            &ini,
            format!(
                "[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{}\n\
                 admin_username = {ADMIN_USER}\nadmin_password = {admin_password}\n\
                 authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
                dir.join("auth.db").display()
            ),
        )
        .expect("write the auth config");
        let store = format!("sqlite:///{}", dir.join("mlflow.db").display());
        let artifacts = dir.join("artifacts").display().to_string();
        let ini_path = ini.display().to_string();
        let secret_key = format!("{:016x}{:016x}", fastrand_u64(), fastrand_u64());
        let mut args = vec![
            "server",
            "--app-name",
            "basic-auth",
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
            "--workers",
            "1",
            "--backend-store-uri",
            &store,
        ];
        if serve_artifacts {
            args.extend(["--serve-artifacts", "--artifacts-destination", &artifacts]);
        } else {
            args.extend(["--default-artifact-root", &artifacts]);
        }
        let process = ServerProcess::start(&ServerSpec {
            name: "mlflow",
            binary: &binary,
            args: &args,
            env: &[
                ("MLFLOW_AUTH_CONFIG_PATH", &ini_path),
                ("MLFLOW_FLASK_SERVER_SECRET_KEY", &secret_key),
            ],
            ready_path: "/health",
            startup_timeout: Duration::from_secs(120),
        });
        Some(Self {
            process,
            dir,
            admin_password,
        })
    }

    /// One server for the whole test binary, started on first use.
    pub fn shared(test: &str) -> Option<&'static Self> {
        static SERVER: OnceLock<Option<MlflowServer>> = OnceLock::new();
        SERVER.get_or_init(|| Self::start(test)).as_ref()
    }

    /// [`Self::shared`], serving artifacts ([`Self::start_serving_artifacts`]).
    pub fn shared_serving_artifacts(test: &str) -> Option<&'static Self> {
        static SERVER: OnceLock<Option<MlflowServer>> = OnceLock::new();
        SERVER
            .get_or_init(|| Self::start_serving_artifacts(test))
            .as_ref()
    }

    /// `http://127.0.0.1:PORT`, for `MLFLOW_TRACKING_URI`.
    pub fn url(&self) -> String {
        self.process.url()
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.process.addr()
    }

    /// The admin password.
    pub fn admin_password(&self) -> &str {
        &self.admin_password
    }

    /// A request as admin.
    pub fn admin(&self, method: &str, path: &str, body: &str) -> Response {
        let auth = basic(ADMIN_USER, &self.admin_password);
        http(
            self.process.addr(),
            method,
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        )
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Creates a user.
    pub fn create_user(&self, user: &str, password: &str) {
        let response = self.admin(
            "POST",
            "/api/2.0/mlflow/users/create",
            &format!(r#"{{"username": "{user}", "password": "{password}"}}"#),
        );
        assert_eq!(response.status, 200, "create user: {}", response.body);
    }

    /// Changes a user's password.
    pub fn set_password(&self, user: &str, password: &str) {
        let response = self.admin(
            "PATCH",
            "/api/2.0/mlflow/users/update-password",
            &format!(r#"{{"username": "{user}", "password": "{password}"}}"#),
        );
        assert_eq!(response.status, 200, "update password: {}", response.body);
    }
}

impl Drop for MlflowServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes the folders of servers whose test process is gone: a shared
/// server lives in a static, which is never dropped, so its folder (its
/// database and artifacts, ~200 MB) would stay behind.
fn sweep_leftovers() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name
            .to_str()
            .and_then(|n| n.strip_prefix("mlflow-secrets-auth-mlflow-"))
        else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Randomness for names and passwords, without a dependency: hash the clock.
fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}
