//! What the harness's programs share: the backend both face (moto, AWS
//! Secrets Manager, behind the testkit's fault proxy) and how they are
//! configured for it.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::error::Error;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mlflow_secrets_auth_agent::{AgentAddr, AgentClient, protocol};

use secrets_testkit::moto;

/// The harness's result type.
pub type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// The AWS provider's variables for the secret `secret_id` (basic auth) in
/// a backend at `endpoint`, with moto's test keys and no instance metadata.
pub fn aws_env(endpoint: &str, secret_id: &str) -> HashMap<String, String> {
    [
        ("MLFLOW_SECRETS_AUTH_ENABLE", "aws-secrets-manager"),
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_REGION", moto::REGION),
        ("AWS_DEFAULT_REGION", moto::REGION),
        ("AWS_ACCESS_KEY_ID", moto::ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", moto::SECRET_KEY),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("MLFLOW_AWS_SECRET_ID", secret_id),
        ("MLFLOW_AWS_AUTH_MODE", "basic"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// A memory figure of process `pid` from `/proc/PID/status` (`VmRSS`,
/// `VmHWM`), in MB.
pub fn memory_mb(pid: u32, field: &str) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim_start_matches(':')
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .ok_or("no such field in /proc/PID/status")?;
    Ok(kb / 1024.0)
}

/// The value at fraction `p` of `sorted`.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// A node agent (`mlflow-secrets-auth agent`) on a socket, ready; killed
/// when dropped.
#[derive(Debug)]
pub struct Agent {
    /// The agent's process.
    pub process: Child,
    /// Its socket.
    pub socket: std::path::PathBuf,
}

impl Agent {
    /// Starts the agent of `cli` with `env` on `socket` and waits until it
    /// is ready.
    pub fn start(cli: &Path, env: &HashMap<String, String>, socket: &Path) -> Result<Self> {
        let process = Command::new(cli)
            .envs(env)
            .args(["agent", "--log-level", "error", "--socket"])
            .arg(socket)
            .stdout(Stdio::null())
            .spawn()?;
        let agent = Self {
            process,
            socket: socket.to_owned(),
        };
        let client = agent.client();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let started = Instant::now();
        while runtime
            .block_on(client.get(protocol::READY_PATH))
            .map_or(true, |a| !a.status.is_success())
        {
            if started.elapsed() > Duration::from_secs(30) {
                return Err("the agent did not become ready".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(agent)
    }

    /// A client of its socket.
    pub fn client(&self) -> AgentClient {
        AgentClient::new(AgentAddr::Unix(self.socket.clone()), None)
    }

    /// `MLFLOW_SECRETS_AGENT` for it.
    pub fn var(&self) -> String {
        format!("unix:{}", self.socket.display())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
