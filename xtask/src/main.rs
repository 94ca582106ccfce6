//! Development tasks, run as `cargo xtask <task>`:
//!
//! - `ci`: everything CI checks — the test servers (`test-env`), format,
//!   clippy (`-D warnings`, fuzz targets included), all tests (`--locked`),
//!   the Python tests, the soak, fuzzing, docs (`-D warnings`), the facade's
//!   feature matrix and `cargo package` of every published crate.
//! - `test`: `cargo test` of the whole workspace (extra arguments are passed
//!   on) without requiring the servers, then names every test that skipped
//!   for want of one — cargo shows a passing test's output to nobody.
//! - `test-env`: installs the servers backend tests start (moto, ...) into
//!   `.venv/`, and the OpenID provider of the OAuth2 tests (`npm ci` into
//!   `secrets-testkit/oidc/node_modules`), from pinned versions; does
//!   nothing when they are up to date.
//! - `wheel [--release] [--install]`: builds the Python plugin's wheel
//!   (maturin, from the venv) into `target/wheels/` (`--release`) or
//!   `target/wheels/debug/`, and installs it into the
//!   venv with `--install`. `--release` builds for glibc 2.17 (manylinux2014,
//!   linked by zig from PyPI's `ziglang`) and checks it with `auditwheel show`;
//!   `ci` builds both (the debug one for pytest).
//! - `sdist`: the Python package's source distribution (`target/sdist/`),
//!   checked for the files a build from it needs; `ci` runs it.
//! - `fuzz [--seconds N]`: runs every cargo-fuzz target (nightly) for N
//!   seconds each (default 60), from the committed seeds; `ci` runs 20 s each.
//! - `bench`: the criterion benches, the side-by-side comparison with the
//!   predecessor (installed into `target/bench/predecessor-venv`, ours with
//!   a release wheel into `target/bench/ours-venv`) on real moto and MLflow
//!   servers, and a 5-minute soak; writes `BENCHMARKS.md`.
//! - `soak [--seconds N]`: many callers (async, blocking, Python plugin)
//!   against a backend cycling through outages, N seconds (default 30; `ci`
//!   runs 30); fails on any call without the credential, on more backend
//!   requests per TTL than one fetch may make, or on RSS growth.
//! - `demo`: the end-to-end demo of the README: real MLflow and secrets
//!   servers on loopback, `doctor`, the `log_run` example and `exec` of
//!   MLflow's Python client.
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

mod bench;
mod ci;
mod demo;
mod env;
mod fuzz;
mod wheel;

use bench::{bench, soak};
use ci::ci;
use demo::demo;
use env::{install_into, pip_install, test_env, venv};
use fuzz::fuzz;
use wheel::{install_wheel, sdist, wheel};

pub(crate) const USAGE: &str = "usage: cargo xtask <ci|test [ARGS]|test-env|wheel [--release] [--install]|fuzz [--seconds N]|sdist|bench|soak [--seconds N]|demo>";

fn main() -> Result<()> {
    let task = std::env::args().nth(1);
    match task.as_deref() {
        Some("ci") => ci(),
        Some("test-env") => test_env(),
        Some("test") => ci::test(&std::env::args().skip(2).collect::<Vec<_>>()),
        Some("demo") => demo(),
        Some("bench") => bench(),
        Some("fuzz") => fuzz(seconds_flag(60)?),
        Some("sdist") => sdist().map(drop),
        Some("soak") => {
            let seconds = seconds_flag(30)?;
            install_wheel(&wheel(false)?)?;
            soak(seconds, false, &venv().join("bin/python")).map(drop)
        }
        Some("wheel") => {
            let flags: Vec<String> = std::env::args().skip(2).collect();
            let wheel = wheel(flags.iter().any(|f| f == "--release"))?;
            if flags.iter().any(|f| f == "--install") {
                install_wheel(&wheel)?;
            }
            Ok(())
        }
        Some(other) => bail!("unknown task `{other}`\n{USAGE}"),
        None => bail!("{USAGE}"),
    }
}

/// `--seconds N` after the task's name, or `default`.
pub(crate) fn seconds_flag(default: u64) -> Result<u64> {
    let args: Vec<String> = std::env::args().skip(2).collect();
    match args.as_slice() {
        [] => Ok(default),
        [flag, n] if flag == "--seconds" => n
            .parse()
            .with_context(|| format!("--seconds takes a number, not `{n}`")),
        _ => bail!("{USAGE}"),
    }
}

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

pub(crate) fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

pub(crate) fn run(step: &str, cmd: &mut Command) -> Result<()> {
    timed(step, || {
        let log = LOG.with(|log| log.borrow().clone());
        if let Some(log) = &log {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .with_context(|| format!("opening {}", log.display()))?;
            writeln!(file, "\n==> {step}")?;
            cmd.stdout(file.try_clone()?).stderr(file);
        } else {
            eprintln!("\n==> {step}");
        }
        let status = cmd
            .status()
            .with_context(|| format!("{step}: could not start {cmd:?}"))?;
        if !status.success() {
            bail!("{step} failed ({status})");
        }
        Ok(())
    })
}

/// The wall time of every step so far, in the order they ended.
static STEPS: std::sync::Mutex<Vec<(String, Duration)>> = std::sync::Mutex::new(Vec::new());

/// Runs `f` as step `step`, its wall time kept for [`print_times`].
pub(crate) fn timed<T>(step: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let started = Instant::now();
    let result = f();
    let beside = LOG.with(|log| log.borrow().is_some());
    let step = if beside {
        format!("  beside: {step}")
    } else {
        step.to_owned()
    };
    STEPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((step, started.elapsed()));
    result
}

thread_local! {
    /// Where [`run`] sends a step's output on a [`Beside`] thread.
    static LOG: std::cell::RefCell<Option<PathBuf>> = const { std::cell::RefCell::new(None) };
}

/// Steps run on a thread of their own, beside the steps that follow (which
/// mostly wait on servers), their output in a log file.
pub(crate) struct Beside {
    name: String,
    log: PathBuf,
    thread: std::thread::JoinHandle<Result<()>>,
}

impl Beside {
    /// Starts `f` as `name`; its steps' output goes to `target/ci-logs/FILE`.
    pub(crate) fn start(
        name: &str,
        file: &str,
        f: impl FnOnce() -> Result<()> + Send + 'static,
    ) -> Result<Self> {
        let dir = root().join("target/ci-logs");
        std::fs::create_dir_all(&dir)?;
        let log = dir.join(file);
        let _ = std::fs::remove_file(&log);
        eprintln!(
            "\n==> {name}: started beside the next steps (output in {})",
            log.display()
        );
        let thread = {
            let log = log.clone();
            std::thread::spawn(move || {
                LOG.with(|l| *l.borrow_mut() = Some(log));
                f()
            })
        };
        Ok(Self {
            name: name.to_owned(),
            log,
            thread,
        })
    }

    /// Waits for it; on failure prints the end of its log.
    pub(crate) fn join(self) -> Result<()> {
        let result = self
            .thread
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("{} panicked", self.name)));
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        match &result {
            Ok(()) => eprintln!(
                "\n==> {}: passed (output in {})",
                self.name,
                self.log.display()
            ),
            Err(_) => {
                let lines: Vec<&str> = text.lines().collect();
                eprintln!(
                    "\n==> {} failed; the end of {}:",
                    self.name,
                    self.log.display()
                );
                for line in &lines[lines.len().saturating_sub(150)..] {
                    eprintln!("{line}");
                }
            }
        }
        result
    }
}

/// Prints each step's wall time and the total since `started`.
pub(crate) fn print_times(started: Instant) {
    let steps = STEPS.lock().unwrap_or_else(|e| e.into_inner());
    eprintln!("\nwall time per step:");
    for (step, took) in steps.iter() {
        eprintln!("{:>9}  {step}", minutes(*took));
    }
    eprintln!("{:>9}  in all", minutes(started.elapsed()));
}

/// `12m 05s`.
fn minutes(took: Duration) -> String {
    let s = took.as_secs();
    format!("{}m {:02}s", s / 60, s % 60)
}
