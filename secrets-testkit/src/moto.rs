//! [`MotoServer`]: a real moto server (AWS APIs, Secrets Manager among them)
//! on a free loopback port.

use std::time::Duration;

use crate::binaries::ServerPolicy;
use crate::net::http;
use crate::process::{ServerProcess, ServerSpec};

/// A JSON object of string fields, escaped.
fn json_object(fields: &[(&str, &str)]) -> String {
    let escape = |s: &str| {
        s.chars()
            .map(|c| match c {
                '"' => "\\\"".to_owned(),
                '\\' => "\\\\".to_owned(),
                c if c.is_control() => format!("\\u{:04x}", c as u32),
                c => c.to_string(),
            })
            .collect::<String>()
    };
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("\"{}\": \"{}\"", escape(k), escape(v)))
        .collect();
    format!("{{{}}}", body.join(", "))
}

/// The region tests use.
pub const REGION: &str = "us-east-1";
/// The access key moto accepts while it does not enforce IAM.
pub const ACCESS_KEY: &str = "testing";
/// The secret key moto accepts while it does not enforce IAM.
pub const SECRET_KEY: &str = "testing";

/// A running moto server; killed on drop.
#[derive(Debug)]
pub struct MotoServer {
    process: ServerProcess,
}

impl MotoServer {
    /// Starts moto, or returns `None` (with a loud SKIPPED line) when
    /// `moto_server` is missing and servers are not required.
    pub fn start(test: &str) -> Option<Self> {
        Self::start_with_env(test, &[])
    }

    /// Starts moto with extra environment, e.g. `INITIAL_NO_AUTH_ACTION_COUNT=0`
    /// to make it check credentials.
    pub fn start_with_env(test: &str, env: &[(&str, &str)]) -> Option<Self> {
        let binary = ServerPolicy::from_env().require("moto_server", test)?;
        let process = ServerProcess::start(&ServerSpec {
            name: "moto_server",
            binary: &binary,
            args: &["-H", "127.0.0.1", "-p", "{port}"],
            env,
            ready_path: "/moto-api/",
            startup_timeout: Duration::from_secs(30),
        });
        Some(Self { process })
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.process.addr()
    }

    /// `http://127.0.0.1:PORT`, for `AWS_ENDPOINT_URL`.
    pub fn url(&self) -> String {
        self.process.url()
    }

    /// Calls a Secrets Manager action with the AWS JSON protocol (moto does
    /// not check signatures unless told to).
    fn secrets_manager(&self, action: &str, body: &str) -> crate::net::Response {
        let target = format!("secretsmanager.{action}");
        let response = http(
            self.process.addr(),
            "POST",
            "/",
            &[
                ("X-Amz-Target", &target),
                ("Content-Type", "application/x-amz-json-1.1"),
                (
                    "Authorization",
                    "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/secretsmanager/aws4_request, SignedHeaders=host, Signature=0",
                ),
            ],
            body.as_bytes(),
        )
        .unwrap_or_else(|e| panic!("{action}: {e}"));
        assert_eq!(response.status, 200, "{action}: {}", response.body);
        response
    }

    /// Creates secret `name` holding `text`.
    pub fn create_secret(&self, name: &str, text: &str) {
        self.secrets_manager(
            "CreateSecret",
            &json_object(&[("Name", name), ("SecretString", text)]),
        );
    }

    /// Stores `text` as the current version of `name`.
    pub fn put_secret_value(&self, name: &str, text: &str) {
        self.secrets_manager(
            "PutSecretValue",
            &json_object(&[("SecretId", name), ("SecretString", text)]),
        );
    }

    /// Forgets every resource (`POST /moto-api/reset`).
    pub fn reset(&self) {
        let response =
            http(self.process.addr(), "POST", "/moto-api/reset", &[], b"").expect("moto reset");
        assert_eq!(response.status, 200, "moto reset: {}", response.body);
    }
}

/// The access key id [`ContainerCredentials`] hands out.
pub const CONTAINER_ACCESS_KEY: &str = "ASIACONTAINERCREDS01";

#[derive(Debug, Default)]
struct ContainerShared {
    /// The `Authorization` value accepted (the token file's content).
    accepted: std::sync::Mutex<String>,
    /// Every `Authorization` value presented, in order.
    presented: std::sync::Mutex<Vec<String>>,
}

/// A container-credentials endpoint on loopback, as EKS Pod Identity's agent
/// and ECS serve it: a `GET` carrying `Authorization: <token>` (the content
/// of `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`) is answered with
/// `{"AccessKeyId", "SecretAccessKey", "Token", "AccountId", "Expiration"}`
/// (an hour), anything else with 401. Its client, and so its checker, is the
/// AWS SDK's own container provider. Stops on drop.
#[derive(Debug)]
pub struct ContainerCredentials {
    serving: crate::net::Serving,
    shared: std::sync::Arc<ContainerShared>,
}

impl ContainerCredentials {
    /// Starts the endpoint, accepting `token`.
    pub fn start(token: &str) -> Self {
        let shared = std::sync::Arc::new(ContainerShared::default());
        shared.accept(token);
        let state = shared.clone();
        let serving = crate::net::Serving::start(move |stream| {
            let _ = state.answer(&stream);
        });
        Self { serving, shared }
    }

    /// `http://127.0.0.1:PORT/v1/credentials`, for
    /// `AWS_CONTAINER_CREDENTIALS_FULL_URI`.
    pub fn url(&self) -> String {
        format!("http://{}/v1/credentials", self.serving.addr())
    }

    /// The listening address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.serving.addr()
    }

    /// Accepts `token` from now on (the platform rotated it), and no other.
    pub fn accept(&self, token: &str) {
        self.shared.accept(token);
    }

    /// Every `Authorization` value presented so far.
    pub fn presented(&self) -> Vec<String> {
        self.shared
            .presented
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ContainerShared {
    fn accept(&self, token: &str) {
        *self.accepted.lock().unwrap_or_else(|e| e.into_inner()) = token.to_owned();
    }

    fn answer(&self, stream: &std::net::TcpStream) -> std::io::Result<()> {
        let request = crate::net::read_request(stream)?;
        let presented = request
            .header("authorization")
            .unwrap_or_default()
            .to_owned();
        self.presented
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(presented.clone());
        let accepted = self
            .accepted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if !request.line.starts_with("GET /v1/credentials ") || presented != accepted {
            return crate::net::write_json(
                stream,
                401,
                r#"{"Code":"AccessDenied","Message":"the authorization token is not valid"}"#,
            );
        }
        let expires = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + 3600;
        let answer = serde_json::json!({
            "AccessKeyId": CONTAINER_ACCESS_KEY,
            "SecretAccessKey": "container-secret-access-key-test",
            "Token": "container-session-token-test",
            "AccountId": "123456789012",
            "Expiration": mlflow_secrets_auth_core::time::rfc3339(
                std::time::UNIX_EPOCH + Duration::from_secs(expires)
            ),
        });
        crate::net::write_json(stream, 200, &answer.to_string())
    }
}
