//! `cargo xtask wheel`: the Python plugin's wheel, built with maturin.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{pip_install, root, run, test_env, venv};

/// Builds the plugin's wheel with maturin from the venv; returns its path.
pub(crate) fn wheel(release: bool) -> Result<PathBuf> {
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
pub(crate) fn install_wheel(wheel: &Path) -> Result<()> {
    run(
        "wheel: install into the venv",
        pip_install(&venv().join("bin/python"))
            .args(["--force-reinstall", "--no-deps"])
            .arg(wheel),
    )
}
