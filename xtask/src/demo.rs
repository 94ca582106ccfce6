//! `cargo xtask demo`: the end-to-end demo of the README.

use anyhow::Result;

use crate::{cargo, run, test_env};

pub(crate) fn demo() -> Result<()> {
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
