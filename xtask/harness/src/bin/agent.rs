//! The node agent's figures for BENCHMARKS.md: backend requests of 50 client
//! processes with and without the agent (counted by the fault proxy in front
//! of moto), `/v1/secret` latency over the socket, the agent's memory, and
//! the wall time of `cache status`. Prints a Markdown table.
//!
//! `MSA_CLI`: the release `mlflow-secrets-auth` binary.
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mlflow_secrets_auth_agent::protocol;
use secrets_testkit::fault::FaultProxy;
use secrets_testkit::moto::MotoServer;
use xtask_harness::{Agent, Result, aws_env, memory_mb, percentile};

const CLIENTS: usize = 50;
const REQUESTS: usize = 10_000;

fn main() -> Result<()> {
    let cli = PathBuf::from(std::env::var("MSA_CLI")?);
    let Some(moto) = MotoServer::start("agent figures") else {
        return Err("moto is not installed (cargo xtask test-env)".into());
    };
    moto.create_secret("agent-bench", "bench-user:bench-password-4d1c");
    let proxy = FaultProxy::start(moto.addr());
    let env = aws_env(&proxy.url(), "agent-bench");
    let dir = std::env::temp_dir().join(format!("msa-agent-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;

    // 50 processes, each with its own cache.
    let before = proxy.forwarded();
    wave(&cli, &env, &[])?;
    let without = proxy.forwarded() - before;

    // The same 50 through the agent.
    let before = proxy.forwarded();
    let agent = Agent::start(&cli, &env, &dir.join("run/agent.sock"))?;
    let socket = agent.socket.clone();
    let client = agent.client();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let idle_rss = memory_mb(agent.process.id(), "VmRSS")?;
    let agent_var = agent.var();
    wave(
        &cli,
        &HashMap::new(),
        &[("MLFLOW_SECRETS_AGENT", &agent_var)],
    )?;
    let with = proxy.forwarded() - before;
    let peak_rss = memory_mb(agent.process.id(), "VmHWM")?;

    // /v1/secret, one connection per request (as a client's provider asks).
    let mut latencies = Vec::with_capacity(REQUESTS);
    runtime.block_on(async {
        for _ in 0..REQUESTS {
            let start = Instant::now();
            let answer = client
                .get(protocol::SECRET_PATH)
                .await
                .map_err(|e| e.to_string())?;
            latencies.push(start.elapsed());
            if !answer.status.is_success() {
                return Err(format!("/v1/secret answered {}", answer.status));
            }
        }
        Ok(())
    })?;
    latencies.sort();
    let rss_after = memory_mb(agent.process.id(), "VmRSS")?;

    // `cache status`: the whole command, process start included.
    let mut walls = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        let status = Command::new(&cli)
            .args(["cache", "status", "--socket"])
            .arg(&socket)
            .stdout(Stdio::null())
            .status()?;
        walls.push(start.elapsed());
        if !status.success() {
            return Err("cache status failed".into());
        }
    }
    walls.sort();
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);

    let us = |d: Duration| format!("{:.0} µs", d.as_secs_f64() * 1e6);
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    println!("| figure | value |\n|---|---|");
    println!(
        "| backend requests for {CLIENTS} `header` processes at once, each with its own cache | **{without}** |"
    );
    println!(
        "| backend requests for the same {CLIENTS} through the agent (its start-up fetch included) | **{with}** |"
    );
    println!(
        "| `GET /v1/secret` over the socket, new connection each ({REQUESTS} in a row): p50 / p99 / max | {} / {} / {} |",
        us(percentile(&latencies, 0.50)),
        us(percentile(&latencies, 0.99)),
        us(*latencies.last().unwrap_or(&Duration::ZERO))
    );
    println!(
        "| agent RSS: idle (credential cached) / peak during the {CLIENTS} clients / after {REQUESTS} requests | {:.1} / {:.1} / {:.1} MB |",
        idle_rss, peak_rss, rss_after
    );
    println!(
        "| `mlflow-secrets-auth cache status` wall time, process start included (20 runs): median / max | {} / {} |",
        ms(percentile(&walls, 0.5)),
        ms(*walls.last().unwrap_or(&Duration::ZERO))
    );
    Ok(())
}

/// Runs 50 `header` processes at once with `env` (plus `extra`) and checks each printed the header.
fn wave(cli: &Path, env: &HashMap<String, String>, extra: &[(&str, &str)]) -> Result<()> {
    let children: Vec<Child> = (0..CLIENTS)
        .map(|_| {
            Command::new(cli)
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .envs(env)
                .envs(extra.iter().copied())
                .env("MLFLOW_SECRETS_ALLOWED_HOSTS", "127.0.0.1")
                .args(["header", "--url", "http://127.0.0.1:5000/"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
        })
        .collect::<std::io::Result<_>>()?;
    for child in children {
        let output = child.wait_with_output()?;
        if !output.status.success() || !output.stdout.starts_with(b"Authorization: Basic ") {
            return Err(format!(
                "a client failed: {}",
                String::from_utf8_lossy(&output.stderr)
            )
            .into());
        }
    }
    Ok(())
}
