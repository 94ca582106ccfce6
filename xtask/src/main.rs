//! Development tasks, run as `cargo xtask <task>`:
//!
//! - `ci`: everything CI checks — format, clippy (`-D warnings`), all tests,
//!   docs (`-D warnings`) and the facade's feature matrix.
//! - `demo`: the end-to-end demo of the README.
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

const USAGE: &str = "usage: cargo xtask <ci|demo>";

/// Provider features of the facade; each must build alone.
const FACADE_FEATURES: &[&str] = &["vault", "aws", "azure"];

fn main() -> Result<()> {
    let task = std::env::args().nth(1);
    match task.as_deref() {
        Some("ci") => ci(),
        Some("demo") => demo(),
        Some(other) => bail!("unknown task `{other}`\n{USAGE}"),
        None => bail!("{USAGE}"),
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

fn ci() -> Result<()> {
    run("format", cargo().args(["fmt", "--all", "--check"]))?;
    run(
        "clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    run(
        "tests",
        cargo().args(["test", "--workspace", "--all-features"]),
    )?;
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
    eprintln!("\nci: all steps passed");
    Ok(())
}

fn demo() -> Result<()> {
    run(
        "demo: file provider end to end",
        cargo().args([
            "run",
            "--quiet",
            "-p",
            "mlflow-secrets-auth",
            "--example",
            "demo",
        ]),
    )
}
