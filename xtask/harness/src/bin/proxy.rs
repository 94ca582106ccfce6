//! The proxy's figures for BENCHMARKS.md, side by side in one run: a small
//! GET through the proxy and directly (a trivial local upstream, then MLflow
//! itself) under `wrk`, artifact upload and download through the proxy and
//! directly (MLflow's Python client), and the proxy's memory; nginx (Debian's, on the
//! PATH) as the same credential-injecting proxy beside ours on the trivial
//! upstream. Prints Markdown.
//!
//! `MSA_CLI`: the release `mlflow-secrets-auth`; `MSA_PYTHON`: a Python with
//! MLflow; `wrk` on the PATH. With `MSA_PROXY_TRIVIAL_ONLY` set, only the
//! trivial upstream's rows (for profiling the proxy's own cost).
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use secrets_testkit::mlflow::{MlflowServer, basic};
use xtask_harness::{Result, memory_mb};

const PATH: &str = "/api/2.0/mlflow/experiments/search?max_results=1";

fn main() -> Result<()> {
    let cli = PathBuf::from(std::env::var("MSA_CLI")?);
    let python = PathBuf::from(std::env::var("MSA_PYTHON")?);
    let dir = std::env::temp_dir().join(format!("msa-proxy-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut rows = Vec::new();

    // A trivial upstream: keep-alive, a fixed small JSON answer.
    let trivial = trivial_upstream()?;
    let secret = dir.join("secret");
    std::fs::write(&secret, "bench-user:bench-password-7f3a")?;
    let vars = [
        ("MLFLOW_SECRETS_AUTH_ENABLE", "file"),
        (
            "MLFLOW_SECRETS_FILE_PATH",
            secret.to_str().unwrap_or_default(),
        ),
        ("MLFLOW_FILE_AUTH_MODE", "basic"),
        ("MLFLOW_SECRETS_ALLOWED_HOSTS", "127.0.0.1"),
    ];
    let upstream = format!("http://{trivial}");
    let (mut proxy, proxy_addr, token) = start_proxy(&cli, &dir, &upstream, &vars)?;
    let idle = memory_mb(proxy.id(), "VmRSS")?;
    let bearer = format!("Authorization: Bearer {token}");
    let direct = Target::new("direct", format!("{upstream}{PATH}"), None);
    let relay = Target::new(
        "a plain TCP relay (bytes copied, no HTTP): the floor of one more hop",
        format!("http://{}{PATH}", tcp_relay(trivial)?),
        None,
    );
    let credential = basic("bench-user", "bench-password-7f3a");
    let (nginx, nginx_addr, nginx_version) = start_nginx(&dir, trivial, &credential, None)?;
    let nginx_target = Target::new(
        &format!(
            "nginx {nginx_version} (`proxy_set_header Authorization`, 1 worker, upstream keep-alive)"
        ),
        format!("http://{nginx_addr}{PATH}"),
        None,
    );
    // The same nginx asking for the proxy's local token as well: both sides
    // then read and check the same request.
    let (nginx_token, nginx_token_addr, _) = start_nginx(&dir, trivial, &credential, Some(&token))?;
    let nginx_token_target = Target::new(
        "the same nginx, also requiring the proxy's local token (`if ($http_authorization != …) { return 401; }`)",
        format!("http://{nginx_token_addr}{PATH}"),
        Some(bearer.clone()),
    );
    let ours = Target::new(
        "the proxy",
        format!("http://{proxy_addr}{PATH}"),
        Some(bearer),
    );
    let mut trivial_rows = Vec::new();
    // 1 connection twice: as the scheduler places the processes, then with
    // every process of the chain on one CPU. Free, each hop may wake an idle
    // CPU (tens of µs on a VM) or not, as the scheduler happens to place
    // the processes: a figure of the placement more than of the proxy.
    for (connections, one_cpu) in [(1, false), (1, true), (16, false)] {
        let mut targets = vec![&direct, &nginx_target, &nginx_token_target, &ours];
        if connections == 1 {
            targets.insert(1, &relay);
        }
        let cpu = if one_cpu { Some(OneCpu::pin()?) } else { None };
        let loads = alternating(&targets, connections, cpu.as_ref())?;
        let placed = if one_cpu {
            "1, one CPU"
        } else {
            &connections.to_string()
        };
        let floor = loads[0].p50;
        for (target, load) in targets.iter().zip(&loads) {
            trivial_rows.push(trivial_row(&target.name, placed, load, floor));
        }
    }
    drop((nginx, nginx_token));

    if std::env::var_os("MSA_PROXY_TRIVIAL_ONLY").is_some() {
        let _ = proxy.kill();
        let _ = proxy.wait();
        let _ = std::fs::remove_dir_all(&dir);
        println!("{TRIVIAL_HEADER}\n{}", trivial_rows.join("\n"));
        return Ok(());
    }

    // MLflow itself (basic auth, artifacts served by the server). Its job
    // runner and huey consumers want both cores for seconds after start-up:
    // wait them out before measuring.
    let Some(mlflow) = MlflowServer::start_serving_artifacts("proxy figures") else {
        return Err("mlflow is not installed (cargo xtask test-env)".into());
    };
    mlflow.create_user("bench-user", "bench-password-7f3a");
    std::thread::sleep(Duration::from_secs(20));
    let _ = proxy.kill();
    let _ = proxy.wait();
    let (mut proxy, proxy_addr, token) = start_proxy(&cli, &dir, &mlflow.url(), &vars)?;
    let direct_auth = format!(
        "Authorization: {}",
        basic("bench-user", "bench-password-7f3a")
    );
    let (direct, through) = side_by_side(
        &format!("{}{PATH}", mlflow.url()),
        Some(&direct_auth),
        &format!("http://{proxy_addr}{PATH}"),
        Some(&format!("Authorization: Bearer {token}")),
        2,
    )?;
    rows.push(row(
        "`experiments/search`, MLflow with basic auth (it hashes the password on every request), 1 worker (2 connections)",
        &direct,
        &through,
    ));

    let artifacts_direct = artifact_round_trip(
        &python,
        &mlflow.url(),
        &[
            ("MLFLOW_TRACKING_USERNAME", "bench-user"),
            ("MLFLOW_TRACKING_PASSWORD", "bench-password-7f3a"),
        ],
    )?;
    let proxy_url = format!("http://{proxy_addr}");
    let artifacts_proxy =
        artifact_round_trip(&python, &proxy_url, &[("MLFLOW_TRACKING_TOKEN", &token)])?;
    let peak = memory_mb(proxy.id(), "VmHWM")?;
    let _ = proxy.kill();
    let _ = proxy.wait();
    let _ = std::fs::remove_dir_all(&dir);

    println!("{TRIVIAL_HEADER}\n{}\n", trivial_rows.join("\n"));
    println!(
        "| request | direct: p50 / p99, requests/s | through the proxy: p50 / p99, requests/s | p50 added |\n|---|---|---|---|"
    );
    for r in rows {
        println!("{r}");
    }
    println!(
        "\n| 100 MB artifact with MLflow's client | direct | through the proxy |\n|---|---|---|"
    );
    println!(
        "| upload (`log_artifact`) | {:.0} MB/s | {:.0} MB/s |",
        artifacts_direct.0, artifacts_proxy.0
    );
    println!(
        "| download (`download_artifacts`) | {:.0} MB/s | {:.0} MB/s |",
        artifacts_direct.1, artifacts_proxy.1
    );
    println!(
        "\nProxy RSS: {idle:.1} MB idle (credential cached), {peak:.1} MB peak over the whole run (both `wrk` loads and the artifacts)."
    );
    Ok(())
}

/// Latency and throughput of one `wrk` run.
struct Load {
    p50: Duration,
    p99: Duration,
    per_second: f64,
}

fn row(what: &str, direct: &Load, through: &Load) -> String {
    let us = |d: Duration| format!("{:.0} µs", d.as_secs_f64() * 1e6);
    let added = through.p50.as_secs_f64() - direct.p50.as_secs_f64();
    let added = if added >= 0.0 {
        format!("{:.0} µs", added * 1e6)
    } else {
        "none (direct was slower)".to_owned()
    };
    format!(
        "| {what} | {} / {}, {:.0} | {} / {}, {:.0} | {added} |",
        us(direct.p50),
        us(direct.p99),
        direct.per_second,
        us(through.p50),
        us(through.p99),
        through.per_second,
    )
}

/// The same load directly and through the proxy, after an unmeasured
/// warm-up of both; measured twice in alternating order, the better of each.
fn side_by_side(
    direct_url: &str,
    direct_header: Option<&str>,
    proxy_url: &str,
    proxy_header: Option<&str>,
    connections: u32,
) -> Result<(Load, Load)> {
    let direct = Target::new(
        "direct",
        direct_url.to_owned(),
        direct_header.map(str::to_owned),
    );
    let through = Target::new(
        "proxy",
        proxy_url.to_owned(),
        proxy_header.map(str::to_owned),
    );
    let mut loads = alternating(&[&direct, &through], connections, None)?.into_iter();
    match (loads.next(), loads.next()) {
        (Some(direct), Some(through)) => Ok((direct, through)),
        _ => Err("wrk gave fewer loads than asked".into()),
    }
}

/// Where `wrk` sends its load.
struct Target {
    name: String,
    url: String,
    header: Option<String>,
}

impl Target {
    fn new(name: &str, url: String, header: Option<String>) -> Self {
        Self {
            name: name.to_owned(),
            url,
            header,
        }
    }

    fn wrk(&self, connections: u32, seconds: u32, cpu: Option<&OneCpu>) -> Result<Load> {
        wrk(&self.url, self.header.as_deref(), connections, seconds, cpu)
    }
}

/// This process and every process it started (the proxy, nginx and its
/// worker), all their threads, held on one CPU, the last one this process
/// may use, until dropped; `wrk` is started on it too.
struct OneCpu {
    cpu: String,
    all: String,
    pids: Vec<u32>,
}

impl OneCpu {
    fn pin() -> Result<Self> {
        let all = affinity(std::process::id())?;
        let cpu = all
            .rsplit([',', '-'])
            .next()
            .filter(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| format!("cannot read the CPU list {all:?}"))?
            .to_owned();
        let mut pinned = Self {
            cpu,
            all,
            pids: Vec::new(),
        };
        let mut pending = vec![std::process::id()];
        while let Some(pid) = pending.pop() {
            set_affinity(pid, &pinned.cpu)?;
            pinned.pids.push(pid);
            pending.extend(children(pid));
        }
        Ok(pinned)
    }
}

impl Drop for OneCpu {
    fn drop(&mut self) {
        for &pid in &self.pids {
            let _ = set_affinity(pid, &self.all);
        }
    }
}

/// The CPUs `pid` may run on, as `taskset` lists them (`0-1`, `0,2`).
fn affinity(pid: u32) -> Result<String> {
    let output = Command::new("taskset")
        .args(["-p", "-c", &pid.to_string()])
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    match text.rsplit_once(':') {
        Some((_, list)) if output.status.success() => Ok(list.trim().to_owned()),
        _ => Err(format!("taskset cannot read the CPUs of {pid}: {text}").into()),
    }
}

/// Holds every thread of `pid` on `cpus`.
fn set_affinity(pid: u32, cpus: &str) -> Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(Stdio::null())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("taskset cannot set the CPUs of {pid}").into())
    }
}

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            // The parent is the second field after the command's `)`.
            std::fs::read_to_string(format!("/proc/{child}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(pid)
            })
        })
        .collect()
}

/// The same load on each target after an unmeasured warm-up of each,
/// measured twice (in order, then in reverse order), the better of each.
fn alternating(targets: &[&Target], connections: u32, cpu: Option<&OneCpu>) -> Result<Vec<Load>> {
    for target in targets {
        target.wrk(connections, 3, cpu)?;
    }
    let mut first = Vec::new();
    for target in targets {
        first.push(target.wrk(connections, 10, cpu)?);
    }
    let mut second = Vec::new();
    for target in targets.iter().rev() {
        second.push(target.wrk(connections, 10, cpu)?);
    }
    second.reverse();
    Ok(first
        .into_iter()
        .zip(second)
        .map(|(a, b)| better(a, b))
        .collect())
}

const TRIVIAL_HEADER: &str = "| small GET, trivial local upstream | connections | p50 / p99 | requests/s | p50 added |\n|---|---|---|---|---|";

fn trivial_row(what: &str, connections: &str, load: &Load, direct: Duration) -> String {
    let us = |d: Duration| format!("{:.0} µs", d.as_secs_f64() * 1e6);
    let added = if what == "direct" {
        "—".to_owned()
    } else {
        load.p50
            .checked_sub(direct)
            .map_or_else(|| "none".to_owned(), us)
    };
    format!(
        "| {what} | {connections} | {} / {} | {:.0} | {added} |",
        us(load.p50),
        us(load.p99),
        load.per_second
    )
}

/// nginx (Debian's) as a credential-injecting reverse proxy for `upstream`:
/// one worker, kept upstream connections, the credential set by
/// `proxy_set_header`; with `token`, a request without
/// `Authorization: Bearer <token>` is refused (401). Its process, address
/// and version.
fn start_nginx(
    dir: &Path,
    upstream: SocketAddr,
    authorization: &str,
    token: Option<&str>,
) -> Result<(Nginx, SocketAddr, String)> {
    let version = Command::new("nginx").arg("-v").output()?;
    let version = String::from_utf8_lossy(&version.stderr)
        .trim()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let prefix = dir.join(format!("nginx-{}", addr.port()));
    let check = token.map_or_else(String::new, |token| {
        format!("if ($http_authorization != \"Bearer {token}\") {{ return 401; }}")
    });
    std::fs::create_dir_all(&prefix)?;
    let conf = prefix.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log error;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream mlflow {{
        server {upstream};
        keepalive 32;
    }}
    server {{
        listen {addr};
        location / {{
            {check}
            proxy_pass http://mlflow;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Authorization \"{authorization}\";
        }}
    }}
}}
",
            prefix = prefix.display()
        ),
    )?;
    let child = Nginx(
        Command::new("nginx")
            .arg("-p")
            .arg(&prefix)
            .arg("-e")
            .arg(prefix.join("error.log"))
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .spawn()?,
    );
    let started = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        if started.elapsed() > Duration::from_secs(30) {
            return Err("nginx did not start".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((child, addr, version))
}

/// A running nginx, stopped when dropped (on an early return too) through
/// its master (SIGTERM), which ends its worker: a SIGKILL to the master
/// would leave the worker behind, orphaned.
struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The run with the lower median.
fn better(a: Load, b: Load) -> Load {
    if a.p50 <= b.p50 { a } else { b }
}

/// `wrk -d<seconds>s --latency` with `connections` (over 1 or 2 threads),
/// on `cpu` if given, parsed.
fn wrk(
    url: &str,
    header: Option<&str>,
    connections: u32,
    seconds: u32,
    cpu: Option<&OneCpu>,
) -> Result<Load> {
    let mut command = match cpu {
        Some(one) => {
            let mut taskset = Command::new("taskset");
            taskset.args(["-c", &one.cpu, "wrk"]);
            taskset
        }
        None => Command::new("wrk"),
    };
    command
        .arg(format!("-t{}", connections.min(2)))
        .arg(format!("-d{seconds}s"))
        .args(["--timeout", "30s", "--latency", "-c"])
        .arg(connections.to_string());
    if let Some(header) = header {
        command.args(["-H", header]);
    }
    let output = command.arg(url).output()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() || text.contains("Non-2xx") {
        return Err(format!("wrk {url} failed:\n{text}").into());
    }
    let field = |prefix: &str| -> Option<&str> {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::trim)
    };
    let duration = |value: &str| -> Option<Duration> {
        let (number, unit) = value.split_at(value.find(|c: char| c.is_ascii_alphabetic())?);
        let number: f64 = number.parse().ok()?;
        let seconds = match unit {
            "us" => number / 1e6,
            "ms" => number / 1e3,
            "s" => number,
            _ => return None,
        };
        Some(Duration::from_secs_f64(seconds))
    };
    let parsed = (|| {
        Some(Load {
            p50: duration(field("50%")?)?,
            p99: duration(field("99%")?)?,
            per_second: field("Requests/sec:")?.parse().ok()?,
        })
    })();
    parsed.ok_or_else(|| format!("cannot read wrk's output:\n{text}").into())
}

/// Starts the proxy for `upstream`; its address and local token.
fn start_proxy(
    cli: &Path,
    dir: &Path,
    upstream: &str,
    vars: &[(&str, &str)],
) -> Result<(Child, SocketAddr, String)> {
    let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let token_file = dir.join(format!("token-{}", addr.port()));
    let child = Command::new(cli)
        .env_clear()
        .envs(vars.iter().copied())
        .args([
            "proxy",
            "--log-level",
            "error",
            "--upstream",
            upstream,
            "--listen",
        ])
        .arg(addr.to_string())
        .arg("--local-token-file")
        .arg(&token_file)
        .stdout(Stdio::null())
        .spawn()?;
    let started = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() || !token_file.exists() {
        if started.elapsed() > Duration::from_secs(30) {
            return Err("the proxy did not start".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let token = std::fs::read_to_string(&token_file)?.trim().to_owned();
    Ok((child, addr, token))
}

/// A keep-alive HTTP/1.1 server answering every request with a small JSON
/// body, on its own threads.
fn trivial_upstream() -> Result<SocketAddr> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.worker_threads(1);
    serve_on_thread(runtime, |stream| async move {
        let service = service_fn(|_request| async {
            Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                br#"{"experiments": []}"#,
            ))))
        });
        let _ = http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
    })
}

/// A plain TCP relay to `upstream` on its own thread: bytes copied both
/// ways, no HTTP — the cost of one more loopback hop, which any proxy pays.
fn tcp_relay(upstream: SocketAddr) -> Result<SocketAddr> {
    serve_on_thread(
        tokio::runtime::Builder::new_current_thread(),
        move |mut client| async move {
            let _ = client.set_nodelay(true);
            if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                let _ = server.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            }
        },
    )
}

/// A loopback listener whose connections are each given to `serve` on a
/// runtime of their own (built from `runtime`) on another thread.
fn serve_on_thread<F, Fut>(mut runtime: tokio::runtime::Builder, serve: F) -> Result<SocketAddr>
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        let Ok(runtime) = runtime.enable_all().build() else {
            return;
        };
        runtime.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream));
            }
        });
    });
    Ok(addr)
}

const ROUND_TRIP: &str = r#"
import os, sys, tempfile, time
import mlflow
size = 100 * 1024 * 1024
with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "big.bin")
    with open(path, "wb") as f:
        f.write(os.urandom(size))
    mlflow.set_experiment("bench-artifacts")
    with mlflow.start_run() as run:
        start = time.perf_counter()
        mlflow.log_artifact(path)
        up = time.perf_counter() - start
    start = time.perf_counter()
    mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="big.bin", dst_path=os.path.join(d, "back"))
    down = time.perf_counter() - start
print(f"{size / up / 1e6} {size / down / 1e6}")
"#;

/// MB/s of a 100 MB upload and download with MLflow's client.
fn artifact_round_trip(python: &Path, url: &str, env: &[(&str, &str)]) -> Result<(f64, f64)> {
    let output = Command::new(python)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .env("MLFLOW_TRACKING_URI", url)
        .envs(env.iter().copied())
        .args(["-c", ROUND_TRIP])
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut numbers = text
        .lines()
        .last()
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|n| n.parse::<f64>().ok());
    match (output.status.success(), numbers.next(), numbers.next()) {
        (true, Some(up), Some(down)) => Ok((up, down)),
        _ => Err(format!(
            "the artifact round trip through {url} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into()),
    }
}
