//! The `mlflow-secrets-auth` command.
//!
//! Work in progress: only `--version` and `--help` exist so far.
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

const USAGE: &str = "\
usage: mlflow-secrets-auth [--version | --help]

Checks the credential chain and runs MLflow clients with the credential.
The commands info, doctor, exec and header are not available yet.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version" | "-V") => {
            println!("mlflow-secrets-auth {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("--help" | "-h") | None => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("mlflow-secrets-auth: unknown argument `{other}`\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
