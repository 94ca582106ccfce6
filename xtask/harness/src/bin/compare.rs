//! The side-by-side comparison of `cargo xtask bench`: this crate and the
//! Python predecessor (mlflow-secrets-auth 0.2.0), one machine, one run, the
//! same secret in the same backend (moto, AWS Secrets Manager, behind a
//! counting proxy) and the same MLflow server. Prints a Markdown table.
//!
//! Run by `cargo xtask bench`, which builds the release CLI and the
//! predecessor's venv and passes them in:
//! `MSA_CLI` (our CLI), `MSA_PRED_PYTHON`, `MSA_PRED_CLI`, `MSA_PRED_SCRIPT`,
//! `MSA_OURS_PYTHON` (a venv with our release wheel and the same MLflow) and
//! `MSA_PLUGIN_SCRIPT` (the per-request measurement both plugins run).
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashMap;
use std::error::Error;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlflow_secrets_auth::{Env, SecretsAuth, blocking};
use secrets_testkit::fault::{Fault, FaultProxy};
use secrets_testkit::mlflow::{ADMIN_USER, MlflowServer};
use secrets_testkit::moto::MotoServer;
use secrets_testkit::net::Blackhole;
use serde_json::Value;
use xtask_harness::{Result, aws_env};

const SECRET: &str = "bench/mlflow";
/// The secret of the warm per-call measurement (made before MLflow runs).
const WARM_SECRET: &str = "bench/warm";
/// How long the predecessor may block on a hanging backend before it is stopped.
const HANG_CAP: Duration = Duration::from_secs(150);
/// How long the predecessor may take to answer with the backend down after the TTL.
const STALE_CAP: Duration = Duration::from_secs(90);
/// How long the predecessor's burst of callers may take before it is stopped.
const BURST_CAP: Duration = Duration::from_secs(120);

fn var(name: &str) -> Result<PathBuf> {
    std::env::var_os(name)
        .map(PathBuf::from)
        .ok_or_else(|| format!("{name} is not set: run `cargo xtask bench`").into())
}

/// The variables both implementations read, for a backend at `endpoint`.
fn env_for(endpoint: &str, tracking: &str) -> HashMap<String, String> {
    let mut env = aws_env(endpoint, SECRET);
    for (name, value) in [
        ("MLFLOW_SECRETS_ALLOWED_HOSTS", "127.0.0.1".to_owned()),
        ("MLFLOW_TRACKING_URI", tracking.to_owned()),
        (
            "BENCH_URL",
            format!("{tracking}/api/2.0/mlflow/experiments/search"),
        ),
    ] {
        env.insert(name.to_owned(), value);
    }
    env
}

fn ours(env: &HashMap<String, String>) -> Result<SecretsAuth> {
    Ok(SecretsAuth::from_source(&Env::new(env))?)
}

struct Predecessor {
    python: PathBuf,
    script: PathBuf,
}

impl Predecessor {
    fn command(&self, env: &HashMap<String, String>, args: &[&str]) -> Command {
        let mut command = Command::new(&self.python);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env)
            .arg(&self.script)
            .args(args);
        command
    }

    /// Runs one mode; `Ok(None)` when it did not finish within `cap`.
    fn run_capped(
        &self,
        env: &HashMap<String, String>,
        args: &[&str],
        cap: Duration,
    ) -> Result<Option<Value>> {
        let mut child = self
            .command(env, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let started = Instant::now();
        while child.try_wait()?.is_none() {
            if started.elapsed() > cap {
                child.kill()?;
                child.wait()?;
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let output = child.wait_with_output()?;
        let text = String::from_utf8_lossy(&output.stdout);
        Ok(serde_json::from_str(text.lines().last().unwrap_or("{}")).ok())
    }

    fn run(&self, env: &HashMap<String, String>, args: &[&str]) -> Result<Value> {
        let output = self.command(env, args).output()?;
        if !output.status.success() {
            return Err(format!(
                "predecessor {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            )
            .into());
        }
        let text = String::from_utf8_lossy(&output.stdout);
        Ok(serde_json::from_str(text.lines().last().unwrap_or("{}"))?)
    }
}

/// Median wall time of `runs` runs (after one warm-up) and the peak RSS of
/// one run (GNU time), of `program args` with `env`.
fn cli_figures(
    program: &PathBuf,
    args: &[&str],
    env: &HashMap<String, String>,
    runs: usize,
) -> Result<(Duration, Option<u64>)> {
    let run = || -> Result<Duration> {
        let started = Instant::now();
        let status = Command::new(program)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        let took = started.elapsed();
        if !status.success() {
            return Err(format!("{} {args:?} failed ({status})", program.display()).into());
        }
        Ok(took)
    };
    run()?;
    let mut times = (0..runs).map(|_| run()).collect::<Result<Vec<_>>>()?;
    times.sort();
    let rss = Command::new("/usr/bin/time")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env)
        .args(["-f", "%M"])
        .arg(program)
        .args(args)
        .stdout(Stdio::null())
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .and_then(|l| l.trim().parse().ok())
        });
    Ok((times[times.len() / 2], rss))
}

struct Row {
    what: String,
    ours: String,
    theirs: String,
    ratio: String,
}

fn ratio(ours: f64, theirs: f64) -> String {
    if ours > 0.0 && theirs > 0.0 {
        format!("×{:.1}", theirs / ours)
    } else {
        "—".to_owned()
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() -> Result<()> {
    let cli = var("MSA_CLI")?;
    let predecessor = Predecessor {
        python: var("MSA_PRED_PYTHON")?,
        script: var("MSA_PRED_SCRIPT")?,
    };
    let pred_cli = var("MSA_PRED_CLI")?;
    let ours_python = var("MSA_OURS_PYTHON")?;
    let plugin_script = var("MSA_PLUGIN_SCRIPT")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    eprintln!("compare: starting moto");
    let moto = MotoServer::start("bench").ok_or("moto missing: cargo xtask test-env")?;
    let proxy = FaultProxy::start(moto.addr());
    let mut rows = Vec::new();

    // 1. Warm per-call cost, measured before MLflow starts: for seconds after
    // start-up its job runner and huey consumers want more than both cores,
    // and a per-call figure taken then measures them, not the library.
    eprintln!("compare: warm per-call cost");
    moto.create_secret(
        WARM_SECRET,
        r#"{"username": "warm-user", "password": "warm-password"}"#,
    );
    let mut warm_env = env_for(&proxy.url(), "http://127.0.0.1:5000");
    warm_env.insert("MLFLOW_AWS_SECRET_ID".into(), WARM_SECRET.into());
    let url = warm_env["BENCH_URL"].clone();
    // Best of five runs of 40 000 calls, as the predecessor's figure is taken.
    let (runs, n) = (5, 40_000u32);
    let blocking_auth = blocking::SecretsAuth::new(ours(&warm_env)?)?;
    blocking_auth.header_for(&url)?.ok_or("no header")?;
    let mut ours_blocking = f64::INFINITY;
    for _ in 0..runs {
        let started = Instant::now();
        for _ in 0..n {
            std::hint::black_box(blocking_auth.header_for(&url)?);
        }
        ours_blocking = ours_blocking.min(started.elapsed().as_secs_f64() * 1e9 / f64::from(n));
    }
    let async_auth = ours(&warm_env)?;
    let ours_async = runtime.block_on(async {
        async_auth.header_for(&url).await?.ok_or("no header")?;
        let mut best = f64::INFINITY;
        for _ in 0..runs {
            let started = Instant::now();
            for _ in 0..n {
                std::hint::black_box(async_auth.header_for(&url).await?);
            }
            best = best.min(started.elapsed().as_secs_f64() * 1e9 / f64::from(n));
        }
        Ok::<_, Box<dyn Error>>(best)
    })?;
    let theirs = predecessor.run(&warm_env, &["warm"])?["ns"]
        .as_f64()
        .unwrap_or(0.0);
    rows.push(Row {
        what: "1. warm per-call cost of the header (blocking `header_for(url)` / `get_request_auth(url)`)".into(),
        ours: format!("{:.2} µs", ours_blocking / 1000.0),
        theirs: format!("{:.2} µs", theirs / 1000.0),
        ratio: ratio(ours_blocking, theirs),
    });
    rows.push(Row {
        what: "1. warm per-call cost, async `header_for(url)`".into(),
        ours: format!("{:.2} µs", ours_async / 1000.0),
        theirs: "no async API".into(),
        ratio: "—".into(),
    });
    let per_request = |python: &PathBuf| -> Result<f64> {
        let output = Command::new(python)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(&warm_env)
            .env("MLFLOW_TRACKING_AUTH", "mlflow_secrets_auth")
            .arg(&plugin_script)
            .output()?;
        if !output.status.success() {
            return Err(format!(
                "{}: {}",
                plugin_script.display(),
                String::from_utf8_lossy(&output.stderr)
            )
            .into());
        }
        let figures: Value = serde_json::from_slice(&output.stdout)?;
        figures["ns"].as_f64().ok_or_else(|| "no figure".into())
    };
    let (ours_plugin, their_plugin) = (
        per_request(&ours_python)?,
        per_request(&predecessor.python)?,
    );
    rows.push(Row {
        what: "1. Python plugin per request in MLflow's path (`fetch_auth(\"mlflow_secrets_auth\")` and the auth on a prepared request)".into(),
        ours: format!("{:.2} µs", ours_plugin / 1000.0),
        theirs: format!("{:.2} µs", their_plugin / 1000.0),
        ratio: ratio(ours_plugin, their_plugin),
    });

    eprintln!("compare: starting MLflow");
    let mlflow = MlflowServer::start("bench").ok_or("MLflow missing: cargo xtask test-env")?;
    moto.create_secret(
        SECRET,
        &format!(
            r#"{{"username": "{ADMIN_USER}", "password": "{}"}}"#,
            mlflow.admin_password()
        ),
    );
    let env = env_for(&proxy.url(), &mlflow.url());
    let url = env["BENCH_URL"].clone();

    // 2. Backend fetches caused by a cold burst.
    for callers in [50usize, 1000] {
        eprintln!("compare: {callers} callers on a cold cache");
        let before = proxy.forwarded();
        let auth = Arc::new(ours(&env)?);
        let served = runtime.block_on(async {
            let barrier = Arc::new(tokio::sync::Barrier::new(callers));
            let tasks: Vec<_> = (0..callers)
                .map(|_| {
                    let (auth, barrier, url) =
                        (Arc::clone(&auth), Arc::clone(&barrier), url.clone());
                    tokio::spawn(async move {
                        barrier.wait().await;
                        matches!(auth.header_for(&url).await, Ok(Some(_)))
                    })
                })
                .collect();
            let mut served = 0;
            for task in tasks {
                served += usize::from(task.await.unwrap_or(false));
            }
            served
        });
        let ours_fetches = proxy.forwarded() - before;
        let before = proxy.forwarded();
        let theirs = predecessor.run_capped(&env, &["burst", &callers.to_string()], BURST_CAP)?;
        let their_fetches = proxy.forwarded() - before;
        rows.push(Row {
            what: format!(
                "2. backend fetches by {callers} concurrent callers, cold cache (callers served)"
            ),
            ours: format!("{ours_fetches} ({served}/{callers})"),
            theirs: match theirs {
                Some(theirs) => format!(
                    "{their_fetches} ({}/{callers})",
                    theirs["served"].as_u64().unwrap_or(0)
                ),
                None => format!(
                    "{their_fetches} so far; stopped after {} s, not done",
                    BURST_CAP.as_secs()
                ),
            },
            ratio: ratio(ours_fetches as f64, their_fetches as f64),
        });
    }

    // 3. Time to give up on a backend that accepts and never answers
    // (both with their default timeouts and retries).
    eprintln!("compare: a backend that never answers (takes minutes)");
    let hole = Blackhole::start();
    let hang_env = env_for(&hole.url(), &mlflow.url());
    let mut theirs_process = predecessor
        .command(&hang_env, &["timed"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let their_started = Instant::now();
    let hang_auth = blocking::SecretsAuth::new(ours(&hang_env)?)?;
    let started = Instant::now();
    let ours_result = hang_auth.header_for(&url);
    let ours_took = started.elapsed();
    let theirs_took = loop {
        if let Some(_status) = theirs_process.try_wait()? {
            break Some(their_started.elapsed());
        }
        if their_started.elapsed() > HANG_CAP {
            theirs_process.kill()?;
            let _ = theirs_process.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    rows.push(Row {
        what: "3. time to give up on a backend that accepts and never answers (defaults)".into(),
        ours: format!(
            "{:.1} s ({})",
            ours_took.as_secs_f64(),
            if ours_result.is_err() {
                "error"
            } else {
                "served?!"
            }
        ),
        theirs: theirs_took.map_or_else(
            || format!("> {} s (stopped)", HANG_CAP.as_secs()),
            |t| format!("{:.1} s", t.as_secs_f64()),
        ),
        ratio: ratio(
            ours_took.as_secs_f64(),
            theirs_took.unwrap_or(HANG_CAP).as_secs_f64(),
        ),
    });

    // 4. A credential after the TTL with the backend down.
    for (label, fault) in [
        (
            "503s",
            Fault::new("/", 503, r#"{"__type": "ServiceUnavailable"}"#),
        ),
        ("accepts and never answers", Fault::hang("/")),
    ] {
        eprintln!("compare: backend down after the TTL ({label})");
        rows.push(stale_row(label, fault, &env, &url, &proxy, &predecessor)?);
    }

    // 5 and 6. The command line.
    eprintln!("compare: CLI wall time and memory");
    let runs = 10;
    let mlflow_url = mlflow.url();
    for (label, args) in [
        ("info", vec!["info"]),
        (
            "doctor --dry-run",
            vec!["doctor", "--dry-run", mlflow_url.as_str()],
        ),
    ] {
        let (ours_time, ours_rss) = cli_figures(&cli, &args, &env, runs)?;
        let (theirs_time, theirs_rss) = cli_figures(&pred_cli, &args, &env, runs)?;
        rows.push(Row {
            what: format!("5. CLI `{label}` wall time, median of {runs}"),
            ours: ms(ours_time),
            theirs: ms(theirs_time),
            ratio: ratio(ours_time.as_secs_f64(), theirs_time.as_secs_f64()),
        });
        let kb = |rss: Option<u64>| {
            rss.map_or("not measured (no /usr/bin/time)".to_owned(), |k| {
                format!("{:.1} MB", k as f64 / 1024.0)
            })
        };
        rows.push(Row {
            what: format!("6. CLI `{label}` peak RSS"),
            ours: kb(ours_rss),
            theirs: kb(theirs_rss),
            ratio: match (ours_rss, theirs_rss) {
                (Some(a), Some(b)) => ratio(a as f64, b as f64),
                _ => "—".into(),
            },
        });
    }
    let server_share = authenticated_call_time(&mlflow);

    println!("| measurement | ours | predecessor 0.2.0 | ratio (predecessor / ours) |");
    println!("|---|---|---|---|");
    for row in rows {
        println!(
            "| {} | {} | {} | {} |",
            row.what, row.ours, row.theirs, row.ratio
        );
    }
    println!();
    println!(
        "MLflow's basic-auth server itself takes {} (median of 5) to answer one authenticated \
         request on this machine (it hashes the password each time); `doctor --dry-run` makes one \
         authenticated and one anonymous call, the predecessor's makes one anonymous `HEAD /`.",
        ms(server_share)
    );
    Ok(())
}

/// Row 4: after a 1 s TTL, with the backend failing as `fault` makes it, is
/// the credential served and how fast (the predecessor is stopped after
/// [`STALE_CAP`]).
fn stale_row(
    label: &str,
    fault: Fault,
    env: &HashMap<String, String>,
    url: &str,
    proxy: &FaultProxy,
    predecessor: &Predecessor,
) -> Result<Row> {
    let mut stale_env = env.clone();
    stale_env.insert("MLFLOW_AWS_TTL_SEC".into(), "1".into());
    stale_env.insert("MLFLOW_SECRETS_TTL_MIN_SEC".into(), "1".into());
    stale_env.insert("MLFLOW_SECRETS_STALE_IF_ERROR_SEC".into(), "300".into());
    let stale_auth = blocking::SecretsAuth::new(ours(&stale_env)?)?;
    stale_auth.header_for(url)?.ok_or("no header")?;
    let mut theirs_process = predecessor
        .command(&stale_env, &["stale"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut their_out = BufReader::new(theirs_process.stdout.take().ok_or("stdout")?);
    let mut line = String::new();
    their_out.read_line(&mut line)?;
    proxy.inject(fault);
    std::thread::sleep(Duration::from_millis(1500));
    let started = Instant::now();
    let ours_stale = stale_auth.header_for(url);
    let ours_took = started.elapsed();
    theirs_process
        .stdin
        .take()
        .ok_or("stdin")?
        .write_all(b"go\n")?;
    let their_started = Instant::now();
    while theirs_process.try_wait()?.is_none() && their_started.elapsed() < STALE_CAP {
        std::thread::sleep(Duration::from_millis(50));
    }
    let stopped = theirs_process.try_wait()?.is_none();
    if stopped {
        theirs_process.kill()?;
        theirs_process.wait()?;
    }
    let mut rest = String::new();
    for next in their_out.lines() {
        rest = next?;
    }
    proxy.clear();
    let theirs: Value = serde_json::from_str(&rest).unwrap_or(Value::Null);
    let served = |yes: bool| if yes { "yes" } else { "no" };
    Ok(Row {
        what: format!(
            "4. credential served with the backend down after the TTL ({label}; answer time)"
        ),
        ours: format!(
            "{} ({:.3} s)",
            served(matches!(ours_stale, Ok(Some(_)))),
            ours_took.as_secs_f64()
        ),
        theirs: if stopped {
            format!("no answer (stopped after {} s)", STALE_CAP.as_secs())
        } else {
            format!(
                "{} ({:.2} s)",
                served(theirs["after"]["served"].as_bool() == Some(true)),
                theirs["after"]["seconds"].as_f64().unwrap_or(f64::NAN)
            )
        },
        ratio: "—".into(),
    })
}

/// Median time of an authenticated `experiments/search` call, made by the
/// testkit's plain HTTP client (the server's share of `doctor --dry-run`).
fn authenticated_call_time(mlflow: &MlflowServer) -> Duration {
    let mut times: Vec<Duration> = (0..5)
        .map(|_| {
            let started = Instant::now();
            let response = mlflow.admin(
                "GET",
                "/api/2.0/mlflow/experiments/search?max_results=1",
                "",
            );
            assert_eq!(response.status, 200);
            started.elapsed()
        })
        .collect();
    times.sort();
    times[2]
}
