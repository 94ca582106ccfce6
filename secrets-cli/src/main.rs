//! The `mlflow-secrets-auth` command (see the library, [`mlflow_secrets_auth_cli`]).
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(mlflow_secrets_auth_cli::main_with(std::env::args_os()))
}
