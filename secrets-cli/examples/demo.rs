//! The end-to-end demo (`cargo xtask demo`): starts a real MLflow server with
//! basic auth and a real secrets backend (OpenBao, else moto) on loopback,
//! stores the MLflow credential in the backend, and then, with only
//! environment variables, runs
//!
//! 1. `mlflow-secrets-auth doctor --dry-run <mlflow>`,
//! 2. the `log_run` example of the library (Rust, reqwest middleware),
//! 3. `mlflow-secrets-auth exec -- python -c "import mlflow; ..."` (MLflow's
//!    own Python client, with the credential only in the variables `exec` sets),
//! 4. the same Python without `exec`, which the server refuses.
//!
//! Every server stops when the demo ends. `cargo xtask demo` builds the CLI
//! and the `log_run` example first; they are found next to this program.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use secrets_testkit::ServerPolicy;
use secrets_testkit::mlflow::{ADMIN_USER, MlflowServer};
use secrets_testkit::moto::{self, MotoServer};
use secrets_testkit::openbao::{OpenBao, ROOT_TOKEN};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// The Python the `exec` step runs: MLflow's client, configured by nothing
/// but `MLFLOW_TRACKING_URI` and the variables `exec` adds.
const PYTHON_CLIENT: &str = "\
import mlflow
mlflow.set_experiment('mlflow-secrets-auth-demo-python')
with mlflow.start_run() as run:
    mlflow.log_metric('accuracy', 0.91)
print('python client: logged accuracy=0.91 to run', run.info.run_id)
";

/// A running backend holding the credential, and the variables that reach it.
enum Backend {
    OpenBao(OpenBao),
    Moto(MotoServer),
}

impl Backend {
    fn start(secret: &str) -> Result<Self> {
        if ServerPolicy::from_env().find("bao").is_some() {
            let bao = OpenBao::start("demo").ok_or("OpenBao did not start")?;
            bao.admin(
                "POST",
                "secret/data/mlflow/demo",
                &format!(r#"{{"data": {secret}}}"#),
            );
            step(&format!(
                "OpenBao (dev mode) at {}; credential stored at secret/mlflow/demo",
                bao.url()
            ));
            return Ok(Self::OpenBao(bao));
        }
        let moto = MotoServer::start("demo").ok_or(
            "neither OpenBao (`bao`) nor moto (`moto_server`) is installed: run `cargo xtask test-env`",
        )?;
        moto.create_secret("mlflow/demo", secret);
        step(&format!(
            "moto (AWS Secrets Manager) at {}; credential stored as mlflow/demo",
            moto.url()
        ));
        Ok(Self::Moto(moto))
    }

    fn vars(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::OpenBao(bao) => vec![
                ("MLFLOW_SECRETS_AUTH_ENABLE", "vault".into()),
                ("VAULT_ADDR", bao.url()),
                ("VAULT_TOKEN", ROOT_TOKEN.into()),
                ("MLFLOW_VAULT_SECRET_PATH", "secret/mlflow/demo".into()),
                ("MLFLOW_VAULT_AUTH_MODE", "basic".into()),
            ],
            Self::Moto(moto) => vec![
                ("MLFLOW_SECRETS_AUTH_ENABLE", "aws-secrets-manager".into()),
                ("AWS_ENDPOINT_URL", moto.url()),
                ("AWS_REGION", moto::REGION.into()),
                ("AWS_ACCESS_KEY_ID", moto::ACCESS_KEY.into()),
                ("AWS_SECRET_ACCESS_KEY", moto::SECRET_KEY.into()),
                ("AWS_EC2_METADATA_DISABLED", "true".into()),
                ("MLFLOW_AWS_SECRET_NAME", "mlflow/demo".into()),
                ("MLFLOW_AWS_AUTH_MODE", "basic".into()),
            ],
        }
    }
}

fn step(text: &str) {
    println!("\n==> {text}");
}

/// Runs `program args` with exactly `vars` (plus `PATH`), echoing the command
/// line; returns whether it succeeded. With `last_error_line`, only the last
/// line of the program's stderr is shown (a Python traceback's message).
fn run(
    program: &Path,
    args: &[&str],
    vars: &[(&'static str, String)],
    last_error_line: bool,
) -> Result<bool> {
    let name = program.file_name().unwrap_or_default().to_string_lossy();
    let shown: Vec<String> = args
        .iter()
        .map(|a| {
            if a.contains(' ') || a.contains('\n') {
                "'…'".to_owned()
            } else {
                (*a).to_owned()
            }
        })
        .collect();
    println!("$ {name} {}", shown.join(" "));
    let mut command = Command::new(program);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .args(args);
    let started = |e: std::io::Error| format!("could not start {}: {e}", program.display());
    let status = if last_error_line {
        let output = command.stderr(Stdio::piped()).output().map_err(started)?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if let Some(line) = stderr.lines().rev().find(|l| !l.trim().is_empty()) {
            println!("{line}");
        }
        output.status
    } else {
        command.status().map_err(started)?
    };
    println!(
        "[exit {}]",
        status.code().map_or("signal".into(), |c| c.to_string())
    );
    Ok(status.success())
}

/// The folder holding the CLI (`target/<profile>`), from this example's path
/// (`target/<profile>/examples/demo`).
fn build_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot locate the build folder")?
        .to_path_buf())
}

fn main() -> Result<()> {
    let bin = build_dir()?;
    let cli = bin.join("mlflow-secrets-auth");
    let log_run = bin.join("examples/log_run");
    for needed in [&cli, &log_run] {
        if !needed.is_file() {
            return Err(format!(
                "{} is missing: run the demo with `cargo xtask demo`",
                needed.display()
            )
            .into());
        }
    }
    let python = secrets_testkit::venv_dir().join("bin/python");

    step("starting MLflow with basic auth on loopback (takes a few seconds)");
    let mlflow =
        MlflowServer::start("demo").ok_or("MLflow is not installed: run `cargo xtask test-env`")?;
    println!("MLflow at {}", mlflow.url());
    let secret = format!(
        r#"{{"username": "{ADMIN_USER}", "password": "{}"}}"#,
        mlflow.admin_password()
    );
    let backend = Backend::start(&secret)?;

    let mut vars = backend.vars();
    vars.extend([
        ("MLFLOW_SECRETS_ALLOWED_HOSTS", "127.0.0.1".to_owned()),
        ("MLFLOW_TRACKING_URI", mlflow.url()),
    ]);
    step("the environment (nothing else is configured)");
    for (name, value) in &vars {
        let shown = if name.ends_with("TOKEN") || name.ends_with("SECRET_ACCESS_KEY") {
            "***"
        } else {
            value
        };
        println!("  {name}={shown}");
    }

    let mut ok = true;
    step("1. doctor: every check of the chain, then a call to MLflow");
    ok &= run(&cli, &["doctor", "--dry-run", &mlflow.url()], &vars, false)?;

    step("2. the Rust example `log_run` (reqwest + the middleware)");
    ok &= run(&log_run, &[], &vars, false)?;

    let python_path = python.to_string_lossy().into_owned();
    step("3. MLflow's Python client under `exec`");
    ok &= run(
        &cli,
        &["exec", "--", &python_path, "-c", PYTHON_CLIENT],
        &vars,
        false,
    )?;

    step("4. the same Python client without `exec`: the server demands auth");
    let refused = !run(&python, &["-c", PYTHON_CLIENT], &vars, true)?;
    println!(
        "{}",
        if refused {
            "refused, as it should be"
        } else {
            "unexpectedly accepted"
        }
    );
    ok &= refused;

    step("stopping MLflow and the backend");
    drop(backend);
    drop(mlflow);
    if ok {
        println!("demo: every step did what it should");
        Ok(())
    } else {
        Err("demo: a step failed (see above)".into())
    }
}
