//! `cargo xtask wheel`: the Python plugin's wheel, built with maturin.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{install_into, pip_install, root, run, test_env, venv};

/// Builds the plugin's wheel with maturin from the venv; returns its path.
pub(crate) fn wheel(release: bool) -> Result<PathBuf> {
    test_env()?;
    // The debug wheel (for the tests) apart from the one users install, so
    // the two can be built at the same time.
    let out = if release {
        root().join("target/wheels")
    } else {
        root().join("target/wheels/debug")
    };
    if let Ok(entries) = std::fs::read_dir(&out) {
        for path in entries.flatten().map(|e| e.path()) {
            if path.extension().is_some_and(|x| x == "whl") {
                std::fs::remove_file(&path)
                    .with_context(|| format!("removing {}", path.display()))?;
            }
        }
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
        // glibc 2.17 (manylinux2014): linked by zig against that glibc's
        // symbols, so pip installs it on RHEL/Rocky 8, Amazon Linux 2, Ubuntu 20.04.
        install_into(
            &venv(),
            &root().join("xtask/wheel-requirements.txt"),
            &root().join("xtask/test-env-constraints.txt"),
        )?;
        maturin
            // Cargo.toml's `wheel` profile says why it is not `--release`.
            .args([
                "--profile",
                "wheel",
                "--zig",
                "--compatibility",
                "manylinux2014",
            ])
            .env("PATH", with_venv_on_path()?)
            .env("CARGO_TARGET_DIR", root().join("target/manylinux2014"));
    }
    let step = if release {
        "wheel: maturin build (release, manylinux2014)"
    } else {
        "wheel: maturin build (debug)"
    };
    run(step, &mut maturin)?;
    let built: Vec<PathBuf> = std::fs::read_dir(&out)
        .with_context(|| format!("reading {}", out.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "whl"))
        .collect();
    let [wheel] = built.as_slice() else {
        bail!("expected one wheel in {}, found {built:?}", out.display());
    };
    if release {
        check_manylinux2014(wheel)?;
    }
    let size = std::fs::metadata(wheel).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "wheel: {} ({:.1} MB)",
        wheel.display(),
        size as f64 / 1_000_000.0
    );
    Ok(wheel.clone())
}

/// `PATH` with the venv's `bin` first (where `python -m ziglang` is found).
fn with_venv_on_path() -> Result<std::ffi::OsString> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::iter::once(venv().join("bin")).chain(std::env::split_paths(&path));
    std::env::join_paths(dirs).context("building PATH")
}

/// `auditwheel show` must agree that the wheel needs nothing newer than
/// glibc 2.17.
fn check_manylinux2014(wheel: &Path) -> Result<()> {
    let shown = Command::new(venv().join("bin/auditwheel"))
        .arg("show")
        .arg(wheel)
        .output()
        .context("running auditwheel")?;
    let text = String::from_utf8_lossy(&shown.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    eprintln!("{text}");
    if !shown.status.success()
        || !text.contains("consistent with the following platform tag: \"manylinux_2_17_x86_64\"")
    {
        bail!(
            "auditwheel does not find {} manylinux2014-compatible",
            wheel.display()
        );
    }
    Ok(())
}

/// Installs (or replaces) the plugin in the venv.
pub(crate) fn install_wheel(wheel: &Path) -> Result<()> {
    run(
        "wheel: install into the venv",
        pip_install(&venv().join("bin/python"))
            .args(["--force-reinstall", "--no-deps"])
            .arg(wheel),
    )
}

/// What the sdist needs to build the extension where no wheel fits: the
/// Python sources, the lock file and every crate the extension is built from.
const SDIST_NEEDS: &[&str] = &[
    "pyproject.toml",
    "Cargo.toml",
    "Cargo.lock",
    "python/mlflow_secrets_auth/__init__.py",
    "python/mlflow_secrets_auth/__main__.py",
    "python/mlflow_secrets_auth/_plugin.py",
    "python/mlflow_secrets_auth/cli.py",
    "python/mlflow_secrets_auth/_core.pyi",
    "python/mlflow_secrets_auth/py.typed",
    "mlflow-secrets-auth-py/Cargo.toml",
    "mlflow-secrets-auth-py/src/lib.rs",
    "mlflow-secrets-auth/src/lib.rs",
    "secrets-cli/src/lib.rs",
    "secrets-server/src/lib.rs",
    "secrets-core/src/lib.rs",
    "secrets-cache/src/lib.rs",
    "secrets-retry/src/lib.rs",
    "secrets-vault/src/lib.rs",
    "secrets-aws/src/lib.rs",
    "secrets-azure/src/lib.rs",
    "secrets-agent/src/lib.rs",
];

/// Builds the sdist into `target/sdist` and checks it holds what a build from
/// it needs; returns its path.
pub(crate) fn sdist() -> Result<PathBuf> {
    let out = root().join("target/sdist");
    if out.is_dir() {
        std::fs::remove_dir_all(&out).context("emptying target/sdist")?;
    }
    run(
        "sdist: maturin sdist",
        Command::new(venv().join("bin/maturin"))
            .current_dir(root())
            .args(["sdist", "-m", "mlflow-secrets-auth-py/Cargo.toml", "--out"])
            .arg(&out),
    )?;
    let sdist = std::fs::read_dir(&out)
        .context("reading target/sdist")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .context("no sdist built")?;
    let listing = Command::new("tar")
        .arg("tzf")
        .arg(&sdist)
        .output()
        .context("listing the sdist")?;
    let listing = String::from_utf8_lossy(&listing.stdout);
    let files: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_once('/').map(|(_, rest)| rest))
        .collect();
    let missing: Vec<&&str> = SDIST_NEEDS
        .iter()
        .filter(|needed| !files.contains(needed))
        .collect();
    if !missing.is_empty() {
        bail!("{} lacks {missing:?}", sdist.display());
    }
    eprintln!("sdist: {} ({} files)", sdist.display(), files.len());
    Ok(sdist)
}
