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
    python_env()?;
    node_env()
}

/// The OpenID provider the OAuth2 tests start (`oidc-provider` on Node),
/// from its pinned lockfile into `secrets-testkit/oidc/node_modules`.
fn node_env() -> Result<()> {
    let folder = root().join("secrets-testkit/oidc");
    let lock = std::fs::read_to_string(folder.join("package-lock.json"))
        .context("reading secrets-testkit/oidc/package-lock.json")?;
    let stamp = folder.join("node_modules/.test-env-installed");
    if std::fs::read_to_string(&stamp).is_ok_and(|installed| installed == lock) {
        return Ok(());
    }
    run(
        "install the OpenID provider (npm ci, secrets-testkit/oidc)",
        Command::new("npm").current_dir(&folder).args([
            "ci",
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
        ]),
    )
    .context("Node.js and npm are needed for the OAuth2 tests (Debian: apt install nodejs npm)")?;
    std::fs::write(&stamp, lock).context("writing the node test-env stamp")?;
    Ok(())
}

fn python_env() -> Result<()> {
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
