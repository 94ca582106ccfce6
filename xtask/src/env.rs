//! `cargo xtask test-env`: the virtual environments of the test servers and
//! the Python tools, installed from pinned requirements.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::{root, run};

/// The virtual environment of the test servers (`SECRETS_TESTKIT_VENV` or `.venv`).
pub(crate) fn venv() -> PathBuf {
    std::env::var_os("SECRETS_TESTKIT_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv"))
}

pub(crate) fn test_env() -> Result<()> {
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

/// Creates the virtual environment `venv` if needed and installs
/// `requirements` into it, pinned by `constraints`.
pub(crate) fn install_into(venv: &Path, requirements: &Path, constraints: &Path) -> Result<()> {
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
pub(crate) fn pip_install(python: &Path) -> Command {
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
