//! `cargo xtask bench` and `cargo xtask soak`: criterion figures, the
//! comparison with the predecessor and the soak under faults → BENCHMARKS.md.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{cargo, install_into, pip_install, root, run, test_env, wheel};

/// The criterion benches: (crate, bench target).
pub(crate) const BENCHED: &[(&str, &str)] = &[
    ("mlflow-secrets-auth-cache", "cache"),
    ("mlflow-secrets-auth-retry", "retry"),
    ("mlflow-secrets-auth", "facade"),
];

/// `cargo xtask bench`: criterion figures and the comparison → BENCHMARKS.md.
pub(crate) fn bench() -> Result<()> {
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
        // moto's keys come with each configuration; never instance metadata.
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running the comparison")?;
    if !compared.status.success() {
        bail!("the comparison failed ({})", compared.status);
    }
    let table = String::from_utf8(compared.stdout).context("comparison output")?;
    eprintln!("\n==> bench: the node agent");
    let agent = cargo()
        .args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "xtask-harness",
            "--bin",
            "agent",
        ])
        .env("MSA_CLI", root().join("target/release/mlflow-secrets-auth"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running the agent figures")?;
    if !agent.status.success() {
        bail!("the agent figures failed ({})", agent.status);
    }
    let agent = String::from_utf8(agent.stdout).context("agent figures output")?;
    if Command::new("wrk").arg("--version").output().is_err() {
        run(
            "bench: install wrk (Debian) for the proxy's load",
            Command::new("apt-get").args(["install", "-y", "-q", "wrk"]),
        )?;
    }
    eprintln!("\n==> bench: the proxy");
    let proxy = cargo()
        .args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "xtask-harness",
            "--bin",
            "proxy",
        ])
        .env("MSA_CLI", root().join("target/release/mlflow-secrets-auth"))
        .env("MSA_PYTHON", crate::venv().join("bin/python"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running the proxy figures")?;
    if !proxy.status.success() {
        bail!("the proxy figures failed ({})", proxy.status);
    }
    let proxy = String::from_utf8(proxy.stdout).context("proxy figures output")?;
    let soaked = soak(300, true, &ours_python)?;
    let report = format!(
        "# Benchmarks\n\nGenerated by `cargo xtask bench` — do not edit; run it again after any change that could move a figure.\n\n{}\n## Side by side with the predecessor\n\nSame machine, same run, same secret in the same backend (moto behind a counting proxy), same MLflow server (basic auth), both with default settings unless a row says otherwise. Row 1 is measured before MLflow starts (for seconds after start-up its job runner and huey consumers want more than both cores, and a per-call figure taken then measures them: 4.78 µs in an earlier run), as the best of five runs for both; the Python rows run our release wheel and the predecessor each in a venv with the same MLflow. Row 4 sets a 1 s TTL for both and `MLFLOW_SECRETS_STALE_IF_ERROR_SEC=300` for ours (the predecessor has no such setting).\n\n{table}\n## The node agent (`mlflow-secrets-auth agent`, release build)\n\nmoto behind the counting proxy; every client is a `mlflow-secrets-auth header` process (process start included); the agent with default settings.\n\n{agent}\n## The proxy (`mlflow-secrets-auth proxy`, release build)\n\n`wrk -t2 -d10s --latency` on the same 2 cores as the proxy and the upstream (so the proxy's figures include its share of the CPU); the local token through the proxy, basic auth directly. Artifacts: MLflow's Python client against the same server (`--serve-artifacts`), directly with username and password, through the proxy with the local token.\n\n{proxy}\n## Soak under faults (`cargo xtask soak --seconds 300`, release build)\n\n{soaked}\n## Criterion (median per iteration, `--measurement-time 3`)\n\n{}",
        machine()?,
        criterion_table()?
    );
    std::fs::write(root().join("BENCHMARKS.md"), report).context("writing BENCHMARKS.md")?;
    eprintln!("bench: wrote BENCHMARKS.md");
    Ok(())
}

/// Runs the soak test for `seconds` with the plugin installed for `python`;
/// returns its Markdown report.
pub(crate) fn soak(seconds: u64, release: bool, python: &Path) -> Result<String> {
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
        // moto's keys come with each configuration; never instance metadata.
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
pub(crate) fn machine() -> Result<String> {
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
pub(crate) fn criterion_table() -> Result<String> {
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
pub(crate) fn median_ns(text: &str) -> Option<f64> {
    let median = &text[text.find("\"median\"")?..];
    let estimate = &median[median.find("\"point_estimate\":")? + "\"point_estimate\":".len()..];
    let end = estimate.find([',', '}'])?;
    estimate[..end].trim().parse().ok()
}
