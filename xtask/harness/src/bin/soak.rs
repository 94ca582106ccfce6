//! `cargo xtask soak [--seconds N]`: many callers at once against a backend
//! that keeps failing, for N seconds.
//!
//! One process's `SecretsAuth` is asked by 64 tasks (async face) and 8
//! threads (blocking face, the same cache); four Python processes ask
//! through MLflow's plugin path (`fetch_auth("mlflow_secrets_auth")` then
//! the auth on a prepared request). Each cache has its own fault proxy in
//! front of moto, and every proxy cycles through the same schedule: healthy,
//! 503 answers, connection resets, requests never answered. TTL 2 s, stale
//! grace 120 s (longer than any outage), so every call must get the
//! credential.
//!
//! Prints a Markdown report and fails (exit 1) on any call without the
//! credential, on more backend requests in one TTL window than one fetch may
//! make (1 + retries) for any cache, or on RSS growth over 20 % in any
//! process (from after the first whole fault cycle in a run of two or
//! more). Run by `cargo xtask soak`, which passes `MSA_PYTHON` (a Python
//! with MLflow and the plugin installed) and `MSA_SOAK_CLIENT` (the client
//! script).
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mlflow_secrets_auth::secrecy::ExposeSecret;
use mlflow_secrets_auth::{Env, SecretsAuth, blocking};
use secrets_testkit::fault::{Fault, FaultProxy};
use secrets_testkit::moto::MotoServer;
use serde_json::Value;
use xtask_harness::{Result, aws_env};

const SECRET: &str = "soak/mlflow";
const URL: &str = "http://127.0.0.1:5000/api/2.0/mlflow/experiments/search";
const TTL: Duration = Duration::from_secs(2);
const TASKS: usize = 64;
const THREADS: usize = 8;
const PYTHONS: usize = 4;
/// Retries after the first attempt (the default policy).
const RETRIES: u64 = 3;
/// The pause between one caller's calls.
const PAUSE: Duration = Duration::from_millis(1);
/// Allowed RSS growth from the start of the run to its end.
const RSS_GROWTH: f64 = 0.20;

/// When the RSS baseline is read in a run of `length`.
fn rss_baseline_at(length: Duration) -> Duration {
    let cycle = Duration::from_secs(CYCLE.iter().map(|(_, s)| s).sum());
    if length >= 2 * cycle {
        cycle
    } else {
        Duration::from_secs(4).min(length / 4)
    }
}

/// One step of the fault schedule, applied to every proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Phase {
    Healthy,
    Unavailable,
    Reset,
    Hang,
}

impl Phase {
    fn fault(self) -> Option<Fault> {
        match self {
            Self::Healthy => None,
            Self::Unavailable => Some(Fault::new(
                "/",
                503,
                r#"{"__type": "ServiceUnavailableException"}"#,
            )),
            Self::Reset => Some(Fault::reset("/")),
            Self::Hang => Some(Fault::hang("/")),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Unavailable => "503 answers",
            Self::Reset => "connection resets",
            Self::Hang => "requests never answered",
        }
    }
}

/// The schedule, repeated: (phase, seconds).
const CYCLE: &[(Phase, u64)] = &[
    (Phase::Healthy, 5),
    (Phase::Unavailable, 3),
    (Phase::Healthy, 4),
    (Phase::Reset, 3),
    (Phase::Healthy, 2),
    (Phase::Hang, 3),
];

/// Latencies in log-linear buckets (3 significant bits, ≤ 12.5 % wide):
/// constant memory however long the run.
struct Histogram {
    buckets: Vec<AtomicU64>,
    max: AtomicU64,
}

impl Histogram {
    const BUCKETS: usize = 512;

    fn new() -> Self {
        Self {
            buckets: (0..Self::BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max: AtomicU64::new(0),
        }
    }

    fn index(ns: u64) -> usize {
        if ns < 8 {
            return ns as usize;
        }
        let log = 63 - u64::from(ns.leading_zeros());
        ((log - 2) * 8 + ((ns >> (log - 3)) & 7)) as usize
    }

    /// The largest value of bucket `i`.
    fn upper(i: usize) -> u64 {
        if i < 8 {
            return i as u64;
        }
        let (log, sub) = ((i / 8 + 2) as u32, (i % 8) as u64);
        ((8 + sub) << (log - 3)) + (1u64 << (log - 3)) - 1
    }

    fn record(&self, ns: u64) {
        self.add(Self::index(ns), 1);
        self.max.fetch_max(ns, Ordering::Relaxed);
    }

    fn add(&self, bucket: usize, count: u64) {
        if let Some(b) = self.buckets.get(bucket) {
            b.fetch_add(count, Ordering::Relaxed);
        }
    }

    fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The bucket bound below which a fraction `q` of the values lie.
    fn quantile(&self, q: f64) -> u64 {
        let wanted = (self.count() as f64 * q).ceil() as u64;
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= wanted.max(1) {
                return Self::upper(i);
            }
        }
        self.max.load(Ordering::Relaxed)
    }

    fn summary(&self) -> String {
        format!(
            "{} / {} / {}",
            us(self.quantile(0.5)),
            us(self.quantile(0.99)),
            us(self.max.load(Ordering::Relaxed))
        )
    }
}

fn us(ns: u64) -> String {
    if ns >= 1_000_000 {
        format!("{:.1} ms", ns as f64 / 1e6)
    } else {
        format!("{:.2} µs", ns as f64 / 1e3)
    }
}

/// Calls made and calls that got no credential (with the first reason).
#[derive(Default)]
struct Tally {
    calls: AtomicU64,
    failed: AtomicU64,
    first_failure: Mutex<Option<String>>,
}

impl Tally {
    fn note(&self, outcome: std::result::Result<(), String>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if let Err(why) = outcome {
            self.failed.fetch_add(1, Ordering::Relaxed);
            self.first_failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(why);
        }
    }
}

/// Whether a `header_for` answer carries the expected value.
fn check(
    answer: mlflow_secrets_auth::Result<Option<mlflow_secrets_auth::AuthHeader>>,
    expected: &str,
) -> std::result::Result<(), String> {
    match answer {
        Ok(Some(header)) if header.value().expose_secret() == expected => Ok(()),
        Ok(Some(_)) => Err("a different credential".into()),
        Ok(None) => Err("no credential".into()),
        Err(error) => Err(error.to_string()),
    }
}

/// One call: how long it took since `started`, and whether it got the credential.
fn record(
    times: &Histogram,
    tally: &Tally,
    started: Instant,
    outcome: std::result::Result<(), String>,
) {
    times.record(started.elapsed().as_nanos() as u64);
    tally.note(outcome);
}

/// Resident set size of process `pid` ("self" for this one), in kB.
fn rss_kb(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The environment of one cache, whose backend is behind `proxy`.
fn env_for(proxy: &FaultProxy) -> HashMap<String, String> {
    let mut env = aws_env(&proxy.url(), SECRET);
    for (name, value) in [
        ("MLFLOW_SECRETS_ALLOWED_HOSTS", "127.0.0.1"),
        ("MLFLOW_AWS_TTL_SEC", "2"),
        ("MLFLOW_SECRETS_TTL_MIN_SEC", "1"),
        ("MLFLOW_SECRETS_STALE_IF_ERROR_SEC", "120"),
        ("MLFLOW_SECRETS_REQUEST_TIMEOUT_SEC", "2"),
        ("MLFLOW_SECRETS_BREAKER_OPEN_SEC", "5"),
        ("MLFLOW_TRACKING_AUTH", "mlflow_secrets_auth"),
        ("SOAK_URL", URL),
    ] {
        env.insert(name.to_owned(), value.to_owned());
    }
    env
}

struct PythonClient {
    child: Child,
    stdout: BufReader<std::process::ChildStdout>,
}

impl PythonClient {
    fn start(
        python: &PathBuf,
        script: &PathBuf,
        env: &HashMap<String, String>,
        seconds: u64,
    ) -> Result<Self> {
        let mut child = Command::new(python)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", std::env::var_os("HOME").unwrap_or_default())
            .envs(env)
            .arg(script)
            .arg(seconds.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = BufReader::new(child.stdout.take().ok_or("stdout")?);
        Ok(Self { child, stdout })
    }

    /// Waits for the client's warm-up ("ready").
    fn ready(&mut self) -> Result<()> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        if line.trim() != "ready" {
            return Err(format!("a Python client did not start: {line:?}").into());
        }
        Ok(())
    }

    fn go(&mut self) -> Result<()> {
        self.child.stdin.take().ok_or("stdin")?.write_all(b"go\n")?;
        Ok(())
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// The client's figures: calls, failed, first_failure, buckets, max_ns.
    fn finish(mut self) -> Result<Value> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        self.child.wait()?;
        Ok(serde_json::from_str(&line)?)
    }
}

fn seconds_arg() -> Result<u64> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => Ok(30),
        [flag, n] if flag == "--seconds" => Ok(n.parse()?),
        _ => Err("usage: soak [--seconds N]".into()),
    }
}

fn main() -> Result<()> {
    let seconds = seconds_arg()?;
    let python = PathBuf::from(
        std::env::var_os("MSA_PYTHON").ok_or("MSA_PYTHON is not set: run `cargo xtask soak`")?,
    );
    let script = PathBuf::from(
        std::env::var_os("MSA_SOAK_CLIENT")
            .ok_or("MSA_SOAK_CLIENT is not set: run `cargo xtask soak`")?,
    );

    eprintln!("soak: starting moto");
    let moto = MotoServer::start("soak").ok_or("moto missing: cargo xtask test-env")?;
    moto.create_secret(
        SECRET,
        r#"{"username": "soak-user", "password": "soak-password-7d1e"}"#,
    );
    let proxies: Vec<FaultProxy> = (0..=PYTHONS)
        .map(|_| FaultProxy::start(moto.addr()))
        .collect();

    eprintln!("soak: starting {PYTHONS} Python clients");
    let mut clients = proxies[1..]
        .iter()
        .map(|proxy| PythonClient::start(&python, &script, &env_for(proxy), seconds))
        .collect::<Result<Vec<_>>>()?;
    for client in &mut clients {
        client.ready()?;
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let auth = SecretsAuth::from_source(&Env::new(&env_for(&proxies[0])))?;
    let sync_auth = Arc::new(blocking::SecretsAuth::new(auth.clone())?);
    let expected = sync_auth
        .header_for(URL)?
        .ok_or("no credential at the start")?
        .value()
        .expose_secret()
        .to_owned();
    let expected = Arc::new(expected);

    eprintln!("soak: {seconds} s, {TASKS} tasks, {THREADS} threads, {PYTHONS} Python processes");
    let stop = Arc::new(AtomicBool::new(false));
    let (async_tally, async_times) = (Arc::new(Tally::default()), Arc::new(Histogram::new()));
    let (sync_tally, sync_times) = (Arc::new(Tally::default()), Arc::new(Histogram::new()));
    for client in &mut clients {
        client.go()?;
    }
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (auth, stop, tally, times, expected) = (
                auth.clone(),
                stop.clone(),
                async_tally.clone(),
                async_times.clone(),
                expected.clone(),
            );
            runtime.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let answer = auth.header_for(URL).await;
                    record(&times, &tally, started, check(answer, &expected));
                    tokio::time::sleep(PAUSE).await;
                }
            })
        })
        .collect();
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (auth, stop, tally, times, expected) = (
                sync_auth.clone(),
                stop.clone(),
                sync_tally.clone(),
                sync_times.clone(),
                expected.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let answer = auth.header_for(URL);
                    record(&times, &tally, started, check(answer, &expected));
                    std::thread::sleep(PAUSE);
                }
            })
        })
        .collect();

    // The schedule and the backend's counts, one TTL window at a time.
    let pids: Vec<String> = std::iter::once("self".to_owned())
        .chain(clients.iter().map(PythonClient::pid))
        .collect();
    let mut rss_start: Vec<Option<u64>> = vec![None; pids.len()];
    let mut rss_end: Vec<Option<u64>> = vec![None; pids.len()];
    let requests = |p: &FaultProxy| (p.answered() + p.forwarded()) as u64;
    let mut last: Vec<u64> = proxies.iter().map(requests).collect();
    let mut window_max = vec![0u64; proxies.len()];
    let mut phases: HashMap<Phase, u32> = HashMap::new();
    let cycle: u64 = CYCLE.iter().map(|(_, s)| s).sum();
    let mut phase = None;
    let deadline = Duration::from_secs(seconds);
    let mut next_window = TTL;
    while started.elapsed() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let elapsed = started.elapsed();
        let mut at = elapsed.as_secs() % cycle;
        let now = CYCLE
            .iter()
            .find(|(_, s)| {
                let inside = at < *s;
                at = at.saturating_sub(*s);
                inside
            })
            .map_or(Phase::Healthy, |(p, _)| *p);
        if phase != Some(now) {
            phase = Some(now);
            *phases.entry(now).or_default() += 1;
            for proxy in &proxies {
                proxy.clear();
                if let Some(fault) = now.fault() {
                    proxy.inject(fault);
                }
            }
        }
        if elapsed >= next_window {
            next_window += TTL;
            for (i, proxy) in proxies.iter().enumerate() {
                let count = requests(proxy);
                window_max[i] = window_max[i].max(count - last[i]);
                last[i] = count;
            }
            // After every process is up and busy, and in a run of two fault
            // cycles or more after the first whole one (every fault's
            // buffers and retries allocated once): the RSS baseline.
            if rss_start[0].is_none() && elapsed >= rss_baseline_at(deadline) {
                rss_start = pids.iter().map(|p| rss_kb(p)).collect();
            }
            rss_end = pids.iter().map(|p| rss_kb(p)).collect();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for proxy in &proxies {
        proxy.clear();
    }
    for thread in threads {
        thread.join().map_err(|_| "a caller thread panicked")?;
    }
    runtime.block_on(async {
        for task in tasks {
            task.await?;
        }
        Ok::<_, tokio::task::JoinError>(())
    })?;
    let stats = auth.stats();
    let python: Vec<Value> = clients
        .into_iter()
        .map(PythonClient::finish)
        .collect::<Result<_>>()?;
    let python_times = Histogram::new();
    let (mut python_calls, mut python_failed, mut python_failure) = (0, 0, None);
    for figures in &python {
        python_calls += figures["calls"].as_u64().unwrap_or(0);
        python_failed += figures["failed"].as_u64().unwrap_or(u64::MAX);
        if let Some(why) = figures["first_failure"].as_str() {
            python_failure.get_or_insert(why.to_owned());
        }
        if let Some(buckets) = figures["buckets"].as_object() {
            for (bucket, count) in buckets {
                python_times.add(bucket.parse()?, count.as_u64().unwrap_or(0));
            }
        }
        python_times
            .max
            .fetch_max(figures["max_ns"].as_u64().unwrap_or(0), Ordering::Relaxed);
    }

    // The report.
    let mut problems = Vec::new();
    let failed = |tally: &Tally| tally.failed.load(Ordering::Relaxed);
    let calls = |tally: &Tally| tally.calls.load(Ordering::Relaxed);
    for (who, count, why) in [
        (
            "async",
            failed(&async_tally),
            async_tally
                .first_failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        ),
        (
            "blocking",
            failed(&sync_tally),
            sync_tally
                .first_failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        ),
        ("Python", python_failed, python_failure),
    ] {
        if count > 0 {
            problems.push(format!(
                "{count} {who} calls got no credential (first: {})",
                why.unwrap_or_default()
            ));
        }
    }
    // Callers that stopped calling (a wedged loop, a dead process) must not
    // pass for callers that never failed: each group makes at least one call
    // per second of the run — a floor for liveness, far below any speed.
    let floor = seconds;
    for (who, count) in [
        ("async", calls(&async_tally)),
        ("blocking", calls(&sync_tally)),
        ("Python", python_calls),
    ] {
        if count < floor {
            problems.push(format!(
                "the {who} callers made {count} calls in {seconds} s (at least {floor} expected)"
            ));
        }
    }
    let bound = 1 + RETRIES;
    for (i, max) in window_max.iter().enumerate() {
        if *max > bound {
            problems.push(format!(
                "cache {i}: {max} backend requests in one {} s window (at most {bound})",
                TTL.as_secs()
            ));
        }
    }
    let mut rss_rows = Vec::new();
    for (i, (start, end)) in rss_start.iter().zip(&rss_end).enumerate() {
        let who = if i == 0 {
            "Rust process".to_owned()
        } else {
            format!("Python process {i}")
        };
        match (start, end) {
            (Some(start), Some(end)) => {
                let growth = *end as f64 / *start as f64 - 1.0;
                if growth > RSS_GROWTH {
                    problems.push(format!("{who}: RSS grew {:.0} %", growth * 100.0));
                }
                rss_rows.push(format!(
                    "{who}: {:.1} → {:.1} MB ({:+.1} %)",
                    *start as f64 / 1024.0,
                    *end as f64 / 1024.0,
                    growth * 100.0
                ));
            }
            _ => problems.push(format!("{who}: RSS not measured")),
        }
    }
    let mut seen: Vec<String> = CYCLE
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| *p != Phase::Healthy)
        .map(|p| format!("{} ×{}", p.describe(), phases.get(&p).copied().unwrap_or(0)))
        .collect();
    seen.dedup();

    println!(
        "{seconds} s; TTL {} s, stale grace 120 s, request timeout 2 s, breaker open 5 s, default retries ({RETRIES}); every cache behind its own fault proxy in front of moto, cycling {} → …; outages seen: {}.\n",
        TTL.as_secs(),
        CYCLE
            .iter()
            .map(|(p, s)| format!("{} {s} s", p.describe()))
            .collect::<Vec<_>>()
            .join(" → "),
        seen.join(", ")
    );
    println!("| callers | calls | without the credential | header p50 / p99 / max |");
    println!("|---|---|---|---|");
    println!(
        "| {TASKS} tasks, async `header_for(&str)` | {} | {} | {} |",
        calls(&async_tally),
        failed(&async_tally),
        async_times.summary()
    );
    println!(
        "| {THREADS} threads, blocking `header_for(&str)` (same cache) | {} | {} | {} |",
        calls(&sync_tally),
        failed(&sync_tally),
        sync_times.summary()
    );
    println!(
        "| {PYTHONS} Python processes, MLflow's plugin path per request | {python_calls} | {python_failed} | {} |",
        python_times.summary()
    );
    println!();
    println!(
        "- backend requests per {} s window, most seen (bound {bound}): Rust process {}; Python processes {}",
        TTL.as_secs(),
        window_max[0],
        window_max[1..]
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "- Rust process cache: {} fetches, {} hits, {} stale served, {} coalesced",
        stats.fetches, stats.hits, stats.stale_served, stats.coalesced
    );
    println!("- RSS: {}", rss_rows.join("; "));
    if problems.is_empty() {
        eprintln!("soak: passed");
        Ok(())
    } else {
        println!("\n**Failed:** {}", problems.join("; "));
        Err(format!("soak failed: {}", problems.join("; ")).into())
    }
}
