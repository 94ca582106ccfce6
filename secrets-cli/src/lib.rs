//! The `mlflow-secrets-auth` command as a library: [`main_with`] runs it on
//! an argument list and returns its exit code, so the binary and the Python
//! wheel (`mlflow-secrets-auth` console script, `python -m
//! mlflow_secrets_auth`) run one implementation. Subcommands: `info` (the
//! configuration, no network), `doctor` (numbered checks of the whole chain,
//! optionally against an MLflow server), `exec` (run a program with the
//! credential in MLflow's variables; replaces the calling process) and
//! `header` (print the header for scripts).
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod cache;
mod doctor;
mod info;
mod output;
mod run;
mod server;

use std::ffi::OsString;
use std::io::Write;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use clap_complete::Shell;
use mlflow_secrets_auth::{LogFormat, LogLevel, init_logging_as};

/// Fetch the MLflow credential from a secret manager, check the chain, and run
/// MLflow clients with it. Configured by the MLFLOW_SECRETS_* variables.
#[derive(Debug, Parser)]
#[command(name = "mlflow-secrets-auth", version)]
struct Cli {
    /// Log to stderr at this level (trace, debug, info, warning, error);
    /// default: MLFLOW_SECRETS_LOG_LEVEL if set, else no logs.
    #[arg(long, global = true, value_name = "LEVEL")]
    log_level: Option<LogLevel>,

    /// Log lines as text or as one JSON object per line.
    #[arg(long, global = true, value_name = "FORMAT", default_value = "text")]
    log_format: LogFormatArg,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the configuration: providers, allowlist, header, TTLs, retries. No network.
    Info {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Check the chain step by step; with --dry-run, call an MLflow server too.
    Doctor {
        /// An MLflow tracking URL to call with the credential.
        #[arg(long, value_name = "URL")]
        dry_run: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Run a command with MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME /
    /// MLFLOW_TRACKING_PASSWORD set from the secret.
    Exec {
        /// The tracking URL (default: MLFLOW_TRACKING_URI); its host must be allowed.
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// Give CMD a local proxy (MLFLOW_TRACKING_URI on loopback, a one-time
        /// MLFLOW_TRACKING_TOKEN) instead of the credential: rotations need no
        /// restart and CMD's environment holds no real credential.
        #[arg(long)]
        proxy: bool,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<OsString>,
    },
    /// Print `Name: value` of the auth header (for `curl -H @-`).
    Header {
        /// The URL the header is for (default: MLFLOW_TRACKING_URI); its host must be allowed.
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },
    /// Run the node agent: one credential cache for every process on this
    /// machine, served on a Unix socket (see docs/agent.md). Logs at info by default.
    Agent(server::AgentArgs),
    /// Run an authenticating local proxy in front of one MLflow server: clients
    /// send a local token, the proxy forwards with the real credential (see docs/proxy.md).
    Proxy(server::ProxyArgs),
    /// The agent's cache: `status` or `clear` (MLFLOW_SECRETS_AGENT or --socket names it).
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Print a shell completion script (e.g. `mlflow-secrets-auth completions bash
    /// > /etc/bash_completion.d/mlflow-secrets-auth`).
    Completions {
        /// The shell.
        shell: Shell,
    },
}

#[derive(Debug, Subcommand)]
enum CacheCommand {
    /// Providers, the cached entry, breakers and counters of the agent (no secret).
    Status {
        /// The agent's socket (default: MLFLOW_SECRETS_AGENT).
        #[arg(long, value_name = "PATH")]
        socket: Option<std::path::PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Make the agent fetch the credential again now.
    Clear {
        /// The agent's socket (default: MLFLOW_SECRETS_AGENT).
        #[arg(long, value_name = "PATH")]
        socket: Option<std::path::PathBuf>,
    },
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormatArg {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The version `info` shows: the host's (see [`main_as`]).
static VERSION: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// The version this command runs as.
fn version() -> &'static str {
    VERSION.get().copied().unwrap_or(env!("CARGO_PKG_VERSION"))
}

/// Exit code: success.
const SUCCESS: u8 = 0;
/// Exit code: a check failed, nothing usable, or an error.
const FAILURE: u8 = 1;
/// Exit code: `exec` could not run the command (as a shell says).
const CANNOT_RUN: u8 = 127;
/// The reader of the output went away (128 + SIGPIPE, what a shell shows
/// for a command SIGPIPE ended).
const BROKEN_PIPE: u8 = 141;

/// Runs the command line `args` (the program name first, as in `argv`) and
/// returns the exit code; output goes to this process's stdout and stderr,
/// flushed before returning. `exec` replaces the calling process.
pub fn main_with<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    main_as(env!("CARGO_PKG_VERSION"), args)
}

/// [`main_with`] for a host that ships the command under its own version
/// (the Python wheel): `--version` and `info` show `version`.
pub fn main_as<I, T>(version: &'static str, args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let parsed = Cli::command()
        .version(version)
        .try_get_matches_from(args)
        .and_then(|matches| Cli::from_arg_matches(&matches));
    VERSION.get_or_init(|| version);
    quiet_on_broken_pipe();
    let code = match parsed {
        Ok(cli) => run(cli),
        Err(error) => {
            // --help and --version are "errors" that print and succeed.
            let _ = error.print();
            u8::try_from(error.exit_code()).unwrap_or(FAILURE)
        }
    };
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    code
}

/// A reader that stopped reading (`… | head -1`) ends the command quietly,
/// as it ends other Unix tools (status 141, as if by SIGPIPE), instead of a
/// panic message about a broken pipe. Any other panic is reported as before.
fn quiet_on_broken_pipe() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or_default();
            if message.contains("Broken pipe") || message.contains("os error 32") {
                std::process::exit(BROKEN_PIPE.into());
            }
            report(info);
        }));
    });
}

fn run(cli: Cli) -> u8 {
    let level = cli.log_level.or_else(|| {
        std::env::var("MLFLOW_SECRETS_LOG_LEVEL")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    // A server says what it does unless told otherwise.
    let level = match cli.command {
        Command::Agent(_) | Command::Proxy(_) => level.or(Some(LogLevel::Info)),
        _ => level,
    };
    if let Some(level) = level {
        let format = match cli.log_format {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        };
        let _ = init_logging_as(level, format);
    }
    let result = match cli.command {
        Command::Info { json } => info::run(json),
        Command::Doctor { dry_run, json } => doctor::run(dry_run.as_deref(), json),
        Command::Exec {
            url,
            proxy: true,
            command,
        } => run::exec_with_proxy(url.as_deref(), &command),
        Command::Exec {
            url,
            proxy: false,
            command,
        } => run::exec(url.as_deref(), &command),
        Command::Proxy(args) => server::proxy(args),
        Command::Header { url } => run::header(url.as_deref()),
        Command::Agent(args) => server::agent(args),
        Command::Cache { command } => match command {
            CacheCommand::Status { socket, json } => cache::status(socket, json),
            CacheCommand::Clear { socket } => cache::clear(socket),
        },
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "mlflow-secrets-auth",
                &mut std::io::stdout(),
            );
            Ok(SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!(
                "mlflow-secrets-auth: {}",
                // Each cause once: many errors repeat their source's text.
                mlflow_secrets_auth::redact(&mlflow_secrets_auth::source_chain(&*error))
            );
            FAILURE
        }
    }
}
