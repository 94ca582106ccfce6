//! [`ServerProcess`]: a real server started on a free loopback port, waited for
//! until it answers, and killed when dropped (also when the test panics).
//!
//! The server runs in its own process group under a small `sh` guard that
//! holds a pipe from the test process: when the handle is dropped — or the
//! test process exits in any way, even killed — the pipe closes and the guard
//! kills the whole group, child processes included (MLflow starts workers).
//! No server outlives its test binary.

use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use crate::net::{free_port, http};

/// Runs the server in the background, then waits for it; a watcher kills the
/// whole process group once standard input (the test's pipe) closes.
/// (Background jobs of a non-interactive shell read /dev/null, so the watcher
/// reads the pipe through a copy of it on fd 3.)
const GUARD: &str = r#"exec 3<&0; (read _ <&3; kill -TERM 0) & "$@" < /dev/null 3<&- & wait $!"#;

/// How to start one kind of server.
#[derive(Debug, Clone)]
pub struct ServerSpec<'a> {
    /// Name, for messages and the log file (`moto_server`).
    pub name: &'a str,
    /// The binary.
    pub binary: &'a Path,
    /// Arguments; `{port}` is replaced by the chosen port.
    pub args: &'a [&'a str],
    /// Extra environment variables.
    pub env: &'a [(&'a str, &'a str)],
    /// A path answered with a status below 500 once the server is ready.
    pub ready_path: &'a str,
    /// How long to wait for readiness.
    pub startup_timeout: Duration,
}

/// A running server; killed on drop.
#[derive(Debug)]
pub struct ServerProcess {
    name: String,
    child: Child,
    /// Closing this makes the guard kill the server's process group.
    lifeline: Option<ChildStdin>,
    addr: SocketAddr,
    log: PathBuf,
}

impl ServerProcess {
    /// Starts the server on a free port and waits until it answers. Panics with
    /// the server's log when it does not start.
    pub fn start(spec: &ServerSpec<'_>) -> Self {
        let mut last_error = String::new();
        // A port may be taken between choosing and binding it: try a few.
        for _ in 0..3 {
            let port = free_port();
            let log = std::env::temp_dir().join(format!("{}-{port}.log", spec.name));
            let log_file = File::create(&log).expect("create the server log");
            let mut child = Command::new("sh")
                .arg("-c")
                .arg(GUARD)
                .arg("sh")
                .arg(spec.binary)
                .args(
                    spec.args
                        .iter()
                        .map(|a| a.replace("{port}", &port.to_string())),
                )
                .envs(spec.env.iter().copied())
                .process_group(0)
                .stdin(Stdio::piped())
                .stdout(log_file.try_clone().expect("log handle"))
                .stderr(log_file)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", spec.binary.display()));
            let lifeline = child.stdin.take();
            let mut server = Self {
                name: spec.name.to_owned(),
                child,
                lifeline,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                log,
            };
            match server.wait_ready(spec) {
                Ok(()) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("{} did not start: {last_error}", spec.name);
    }

    fn wait_ready(&mut self, spec: &ServerSpec<'_>) -> Result<(), String> {
        let deadline = Instant::now() + spec.startup_timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}; log:\n{}", self.log_tail()));
            }
            if let Ok(response) = http(self.addr, "GET", spec.ready_path, &[], b"")
                && response.status < 500
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no answer on {} within {:?}; log:\n{}",
                    self.addr,
                    spec.startup_timeout,
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // The guard sees the pipe close and kills the group.
        drop(self.lifeline.take());
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        } else {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("{} log kept at {}", self.name, self.log.display());
            }
        }
    }
}
