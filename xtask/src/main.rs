//! Development tasks, run as `cargo xtask <task>`:
//!
//! - `ci`: everything CI checks — the test servers (`test-env`), format,
//!   clippy (`-D warnings`, fuzz targets included), all tests (`--locked`),
//!   the Python tests, the soak, fuzzing, docs (`-D warnings`), the facade's
//!   feature matrix and `cargo package` of every published crate.
//! - `test-env`: installs the servers backend tests start (moto, ...) into
//!   `.venv/`, from pinned versions; does nothing when they are up to date.
//! - `wheel [--release] [--install]`: builds the Python plugin's wheel
//!   (maturin, from the venv) into `target/wheels/`, and installs it into the
//!   venv with `--install`.
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

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

const USAGE: &str = "usage: cargo xtask <ci|test-env|wheel [--release] [--install]|fuzz [--seconds N]|bench|soak [--seconds N]|demo>";

/// Provider features of the facade; each must build alone.
const FACADE_FEATURES: &[&str] = &["vault", "aws", "azure", "middleware"];

fn main() -> Result<()> {
    let task = std::env::args().nth(1);
    match task.as_deref() {
        Some("ci") => ci(),
        Some("test-env") => test_env(),
        Some("demo") => demo(),
        Some("bench") => bench(),
        Some("fuzz") => fuzz(seconds_flag(60)?),
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
fn seconds_flag(default: u64) -> Result<u64> {
    let args: Vec<String> = std::env::args().skip(2).collect();
    match args.as_slice() {
        [] => Ok(default),
        [flag, n] if flag == "--seconds" => n
            .parse()
            .with_context(|| format!("--seconds takes a number, not `{n}`")),
        _ => bail!("{USAGE}"),
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

fn run(step: &str, cmd: &mut Command) -> Result<()> {
    eprintln!("\n==> {step}");
    let status = cmd
        .status()
        .with_context(|| format!("{step}: could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{step} failed ({status})");
    }
    Ok(())
}

/// The virtual environment of the test servers (`SECRETS_TESTKIT_VENV` or `.venv`).
fn venv() -> PathBuf {
    std::env::var_os("SECRETS_TESTKIT_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv"))
}

fn test_env() -> Result<()> {
    let venv = venv();
    let requirements = root().join("xtask/test-env-requirements.txt");
    let constraints = root().join("xtask/test-env-constraints.txt");
    let wanted = format!(
        "{}\n{}",
        std::fs::read_to_string(&requirements).context("reading test-env-requirements.txt")?,
        std::fs::read_to_string(&constraints).context("reading test-env-constraints.txt")?
    );
    let stamp = venv.join(".test-env-installed");
    if std::fs::read_to_string(&stamp).is_ok_and(|installed| installed == wanted) {
        eprintln!("test-env: {} is up to date", venv.display());
        return Ok(());
    }
    install_into(&venv, &requirements, &constraints)?;
    std::fs::write(&stamp, wanted).context("writing the test-env stamp")?;
    Ok(())
}

fn ci() -> Result<()> {
    test_env()?;
    run("format", cargo().args(["fmt", "--all", "--check"]))?;
    run(
        "clippy",
        cargo().args([
            "clippy",
            "--locked",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    let fuzz_manifest = root().join("fuzz/Cargo.toml");
    run(
        "format of the fuzz targets",
        cargo()
            .args(["fmt", "--check", "--manifest-path"])
            .arg(&fuzz_manifest),
    )?;
    run(
        "clippy on the fuzz targets",
        cargo()
            .args(["clippy", "--locked", "--all-targets", "--manifest-path"])
            .arg(&fuzz_manifest)
            .args(["--", "-D", "warnings"]),
    )?;
    run(
        "tests",
        cargo()
            .args(["test", "--locked", "--workspace", "--all-features"])
            // Backend tests must not skip for want of a server, and the AWS SDK
            // must never look for instance metadata off this machine.
            .env("SECRETS_REQUIRE_SERVERS", "1")
            .env("AWS_EC2_METADATA_DISABLED", "true"),
    )?;
    let wheel = wheel(false)?;
    install_wheel(&wheel)?;
    // The hostile servers the Python tests face are the Rust tests' own.
    run(
        "hostile-server for the Python tests",
        cargo().args(["build", "-p", "secrets-testkit", "--bin", "hostile-server"]),
    )?;
    run(
        "Python plugin tests (pytest, real MLflow and moto)",
        Command::new(venv().join("bin/python"))
            .current_dir(root())
            .env("HOSTILE_SERVER", root().join("target/debug/hostile-server"))
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .arg(root().join("mlflow-secrets-auth-py/tests")),
    )?;
    soak(30, false, &venv().join("bin/python"))?;
    fuzz(20)?;
    run(
        "docs",
        cargo()
            .args(["doc", "--workspace", "--no-deps", "--all-features"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    for feature in FACADE_FEATURES {
        run(
            &format!("facade with `{feature}` alone"),
            cargo().args([
                "check",
                "-p",
                "mlflow-secrets-auth",
                "--no-default-features",
                "--features",
                feature,
            ]),
        )?;
    }
    run(
        "facade with no provider feature",
        cargo().args([
            "check",
            "-p",
            "mlflow-secrets-auth",
            "--no-default-features",
        ]),
    )?;
    // Every publishable crate packages and builds from its package alone,
    // in dependency order (unpublished workspace crates excluded).
    run(
        "cargo package of every published crate",
        cargo().args([
            "package",
            "--locked",
            "--workspace",
            "--exclude",
            "secrets-testkit",
            "--exclude",
            "xtask",
            "--exclude",
            "xtask-harness",
            "--exclude",
            "mlflow-secrets-auth-py",
        ]),
    )?;
    eprintln!("\nci: all steps passed");
    Ok(())
}

/// The criterion benches: (crate, bench target).
const BENCHED: &[(&str, &str)] = &[
    ("mlflow-secrets-auth-cache", "cache"),
    ("mlflow-secrets-auth-retry", "retry"),
    ("mlflow-secrets-auth", "facade"),
];

/// `cargo xtask bench`: criterion figures and the comparison → BENCHMARKS.md.
fn bench() -> Result<()> {
    test_env()?;
    let pred = root().join("target/bench/predecessor-venv");
    let python = pred.join("bin/python");
    if !python.is_file() {
        install_into(
            &pred,
            &root().join("xtask/bench/predecessor-requirements.txt"),
            &root().join("xtask/bench/predecessor-constraints.txt"),
        )?;
    }
    // Only this run's figures: no stale benchmark from an older layout.
    let _ = std::fs::remove_dir_all(root().join("target/criterion"));
    for (krate, target) in BENCHED {
        run(
            &format!("bench: criterion, {krate}"),
            cargo().args([
                "bench",
                "--quiet",
                "-p",
                krate,
                "--bench",
                target,
                "--",
                "--warm-up-time",
                "1",
                "--measurement-time",
                "3",
            ]),
        )?;
    }
    run(
        "bench: release build of the command line",
        cargo().args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "mlflow-secrets-auth-cli",
        ]),
    )?;
    // Ours beside the predecessor: a release wheel in a venv with the same MLflow.
    let ours = root().join("target/bench/ours-venv");
    install_into(
        &ours,
        &root().join("xtask/bench/ours-requirements.txt"),
        &root().join("xtask/bench/predecessor-constraints.txt"),
    )?;
    let ours_python = ours.join("bin/python");
    run(
        "bench: install the release wheel beside MLflow",
        pip_install(&ours_python)
            .args(["--force-reinstall", "--no-deps"])
            .arg(wheel(true)?),
    )?;
    eprintln!("\n==> bench: side by side with the predecessor (several minutes)");
    let compared = cargo()
        .args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "xtask-harness",
            "--bin",
            "compare",
        ])
        .env("MSA_CLI", root().join("target/release/mlflow-secrets-auth"))
        .env("MSA_PRED_PYTHON", &python)
        .env("MSA_PRED_CLI", pred.join("bin/mlflow-secrets-auth"))
        .env("MSA_PRED_SCRIPT", root().join("xtask/bench/predecessor.py"))
        .env("MSA_OURS_PYTHON", &ours_python)
        .env(
            "MSA_PLUGIN_SCRIPT",
            root().join("xtask/bench/plugin_per_request.py"),
        )
        // The AWS SDK's credential chain reads the process environment:
        // moto's test keys, and never instance metadata.
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running the comparison")?;
    if !compared.status.success() {
        bail!("the comparison failed ({})", compared.status);
    }
    let table = String::from_utf8(compared.stdout).context("comparison output")?;
    let soaked = soak(300, true, &ours_python)?;
    let report = format!(
        "# Benchmarks\n\nGenerated by `cargo xtask bench` — do not edit; run it again after any change that could move a figure.\n\n{}\n## Side by side with the predecessor\n\nSame machine, same run, same secret in the same backend (moto behind a counting proxy), same MLflow server (basic auth), both with default settings unless a row says otherwise. Row 1 is measured before MLflow starts (for seconds after start-up its job runner and huey consumers want more than both cores, and a per-call figure taken then measures them: 4.78 µs in an earlier run), as the best of five runs for both; the Python rows run our release wheel and the predecessor each in a venv with the same MLflow. Row 4 sets a 1 s TTL for both and `MLFLOW_SECRETS_STALE_IF_ERROR_SEC=300` for ours (the predecessor has no such setting).\n\n{table}\n## Soak under faults (`cargo xtask soak --seconds 300`, release build)\n\n{soaked}\n## Criterion (median per iteration, `--measurement-time 3`)\n\n{}",
        machine()?,
        criterion_table()?
    );
    std::fs::write(root().join("BENCHMARKS.md"), report).context("writing BENCHMARKS.md")?;
    eprintln!("bench: wrote BENCHMARKS.md");
    Ok(())
}

/// Runs the soak test for `seconds` with the plugin installed for `python`;
/// returns its Markdown report.
fn soak(seconds: u64, release: bool, python: &Path) -> Result<String> {
    eprintln!("\n==> soak: {seconds} s under faults");
    let mut command = cargo();
    command.args(["run", "--quiet"]);
    if release {
        command.arg("--release");
    }
    let output = command
        .args(["-p", "xtask-harness", "--bin", "soak", "--", "--seconds"])
        .arg(seconds.to_string())
        .env("MSA_PYTHON", python)
        .env(
            "MSA_SOAK_CLIENT",
            root().join("xtask/harness/soak_client.py"),
        )
        // The AWS SDK's credential chain reads the process environment:
        // moto's test keys, and never instance metadata.
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running the soak")?;
    let report = String::from_utf8(output.stdout).context("soak output")?;
    println!("{report}");
    if !output.status.success() {
        bail!("the soak failed ({})", output.status);
    }
    Ok(report)
}

/// Machine, date and versions, as a Markdown list.
fn machine() -> Result<String> {
    let output = |program: &str, args: &[&str]| -> String {
        Command::new(program)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned())
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let pred_python = root().join("target/bench/predecessor-venv/bin/python");
    Ok(format!(
        "- date: {}\n- machine: {} × {cpu}, {}\n- rustc: {}\n- python: {}\n- ours: mlflow-secrets-auth {} (release build)\n- predecessor: {}\n",
        output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        output("nproc", &[]),
        output("uname", &["-sr"]),
        output("rustc", &["--version"]),
        output(pred_python.to_str().unwrap_or("python3"), &["--version"]),
        env!("CARGO_PKG_VERSION"),
        output(
            pred_python.to_str().unwrap_or("python3"),
            &[
                "-c",
                "import importlib.metadata as m; print('mlflow-secrets-auth', m.version('mlflow-secrets-auth'))"
            ],
        ),
    ))
}

/// Every criterion benchmark's median, from `target/criterion/**/new/estimates.json`.
fn criterion_table() -> Result<String> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.ends_with("new/estimates.json") {
                found.push(path);
            }
        }
    }
    let base = root().join("target/criterion");
    let mut found = Vec::new();
    walk(&base, &mut found);
    found.sort();
    let mut table = String::from("| benchmark | median |\n|---|---|\n");
    for path in found {
        let text = std::fs::read_to_string(&path)?;
        let Some(ns) = median_ns(&text) else { continue };
        let name = path
            .parent()
            .and_then(Path::parent)
            .and_then(|p| p.strip_prefix(&base).ok())
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let shown = if ns >= 1e6 {
            format!("{:.2} ms", ns / 1e6)
        } else if ns >= 1e3 {
            format!("{:.2} µs", ns / 1e3)
        } else {
            format!("{ns:.1} ns")
        };
        table.push_str(&format!("| {name} | {shown} |\n"));
    }
    Ok(table)
}

/// `median.point_estimate` of a criterion estimates file, without a JSON crate.
fn median_ns(text: &str) -> Option<f64> {
    let median = &text[text.find("\"median\"")?..];
    let estimate = &median[median.find("\"point_estimate\":")? + "\"point_estimate\":".len()..];
    let end = estimate.find([',', '}'])?;
    estimate[..end].trim().parse().ok()
}

/// The fuzz targets (`fuzz/fuzz_targets/*.rs`).
const FUZZ_TARGETS: &[&str] = &[
    "secret_parse",
    "allowlist",
    "url_host",
    "redact",
    "env_values",
    "hop",
];

/// The cargo-fuzz release `fuzz` installs into `target/tools`.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Runs each fuzz target for `seconds` from the committed seeds; a crash
/// fails the task and leaves its input in `target/fuzz-artifacts/`.
fn fuzz(seconds: u64) -> Result<()> {
    let tools = root().join("target/tools");
    let cargo_fuzz = tools.join("bin/cargo-fuzz");
    let installed = Command::new(&cargo_fuzz)
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION));
    if !installed {
        run(
            "fuzz: install cargo-fuzz",
            cargo()
                .args(["install", "--locked", "--quiet", "cargo-fuzz", "--version"])
                .arg(CARGO_FUZZ_VERSION)
                .arg("--root")
                .arg(&tools),
        )?;
    }
    let nightly = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !nightly {
        bail!("fuzz: the nightly toolchain is missing (`rustup toolchain install nightly`)");
    }
    let path = std::env::join_paths(std::iter::once(tools.join("bin")).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))?;
    for target in FUZZ_TARGETS {
        let corpus = root().join("target/fuzz-corpus").join(target);
        let artifacts = root().join("target/fuzz-artifacts").join(target);
        std::fs::create_dir_all(&corpus)?;
        std::fs::create_dir_all(&artifacts)?;
        run(
            &format!("fuzz: {target} for {seconds} s"),
            // The rustup proxy, not the stable cargo running this task.
            Command::new("cargo")
                .current_dir(root().join("fuzz"))
                .env_remove("CARGO")
                .env_remove("RUSTUP_TOOLCHAIN")
                .env_remove("RUSTC")
                .env("PATH", &path)
                .env("CARGO_TARGET_DIR", root().join("target/fuzz"))
                .args(["+nightly", "fuzz", "run", target])
                .arg(&corpus)
                .arg(root().join("fuzz/seeds").join(target))
                .arg("--")
                .arg(format!("-max_total_time={seconds}"))
                .arg(format!("-artifact_prefix={}/", artifacts.display()))
                .arg("-print_final_stats=0"),
        )?;
    }
    Ok(())
}

/// Builds the plugin's wheel with maturin from the venv; returns its path.
fn wheel(release: bool) -> Result<PathBuf> {
    test_env()?;
    let out = root().join("target/wheels");
    if out.is_dir() {
        std::fs::remove_dir_all(&out).context("emptying target/wheels")?;
    }
    let mut maturin = Command::new(venv().join("bin/maturin"));
    maturin
        .current_dir(root())
        .args([
            "build",
            "--quiet",
            "-m",
            "mlflow-secrets-auth-py/Cargo.toml",
            "--out",
        ])
        .arg(&out);
    if release {
        maturin.arg("--release");
    }
    run("wheel: maturin build", &mut maturin)?;
    let built: Vec<PathBuf> = std::fs::read_dir(&out)
        .context("reading target/wheels")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "whl"))
        .collect();
    match built.as_slice() {
        [one] => {
            eprintln!("wheel: {}", one.display());
            Ok(one.clone())
        }
        _ => bail!("expected one wheel in {}, found {built:?}", out.display()),
    }
}

/// Installs (or replaces) the plugin in the venv.
fn install_wheel(wheel: &Path) -> Result<()> {
    run(
        "wheel: install into the venv",
        pip_install(&venv().join("bin/python"))
            .args(["--force-reinstall", "--no-deps"])
            .arg(wheel),
    )
}

/// Creates the virtual environment `venv` if needed and installs
/// `requirements` into it, pinned by `constraints`.
fn install_into(venv: &Path, requirements: &Path, constraints: &Path) -> Result<()> {
    let python = venv.join("bin/python");
    if !python.is_file() {
        run(
            &format!("create the virtual environment {}", venv.display()),
            Command::new("python3").arg("-m").arg("venv").arg(venv),
        )?;
    }
    run(
        &format!("install {} into it", requirements.display()),
        pip_install(&python)
            .arg("-r")
            .arg(requirements)
            .arg("-c")
            .arg(constraints),
    )
}

/// `python -m pip install --quiet` without pip's version nag.
fn pip_install(python: &Path) -> Command {
    let mut pip = Command::new(python);
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ]);
    pip
}

fn demo() -> Result<()> {
    test_env()?;
    run(
        "demo: build the command line and the `log_run` example",
        cargo().args([
            "build",
            "--quiet",
            "-p",
            "mlflow-secrets-auth-cli",
            "--bin",
            "mlflow-secrets-auth",
            "-p",
            "mlflow-secrets-auth",
            "--example",
            "log_run",
        ]),
    )?;
    run(
        "demo: MLflow and a secrets backend on loopback, end to end",
        cargo().args([
            "run",
            "--quiet",
            "-p",
            "mlflow-secrets-auth-cli",
            "--example",
            "demo",
        ]),
    )
}
