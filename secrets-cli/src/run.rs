//! `exec` and `header`: hand the credential to another program, only for an
//! allowed tracking host.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::{CANNOT_RUN, SUCCESS};

use anyhow::bail;
use mlflow_secrets_auth::secrecy::ExposeSecret;
use mlflow_secrets_auth::{
    Credential, ErrorKind, SecretError, SecretsAuth, WarningKind, parse_handed_on,
};
use url::Url;

/// The tracking URL: `--url`, else `MLFLOW_TRACKING_URI`, as text (what is
/// handed on) and parsed (what is judged). The text goes to other programs
/// that read it with parsers of their own, so it must be a plain origin
/// that every parser reads alike ([`parse_handed_on`]).
fn tracking_url(url: Option<&str>) -> anyhow::Result<(String, Url)> {
    let (text, source) = match url {
        Some(url) => (url.to_owned(), "--url"),
        None => match std::env::var("MLFLOW_TRACKING_URI") {
            Ok(text) => (text, "MLFLOW_TRACKING_URI"),
            Err(_) => bail!(
                "no tracking server named: set MLFLOW_TRACKING_URI or pass --url (the MLflow server the credential is for)"
            ),
        },
    };
    let parsed = parse_handed_on(&text, source)?;
    Ok((text, parsed))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn refuse(url: &Url, auth: &SecretsAuth) -> anyhow::Error {
    anyhow::anyhow!(
        "refusing: host `{}` is not in MLFLOW_SECRETS_ALLOWED_HOSTS ({})",
        url.host_str().unwrap_or_default(),
        auth.config().allowlist
    )
}

/// A configuration error, followed by the set names that nothing reads: a
/// misspelt variable is the usual cause of a missing one.
pub(crate) fn with_unread(error: SecretError, auth: &SecretsAuth) -> anyhow::Error {
    let unread = unread(auth);
    if error.kind() != ErrorKind::Config || unread.is_empty() {
        return error.into();
    }
    anyhow::anyhow!("{error}; {unread}")
}

/// The warnings about set names that nothing reads, in one line.
pub(crate) fn unread(auth: &SecretsAuth) -> String {
    auth.warnings()
        .iter()
        .filter(|w| w.kind() == WarningKind::Unread)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

pub fn header(url: Option<&str>) -> anyhow::Result<u8> {
    let (_, url) = tracking_url(url)?;
    let auth = SecretsAuth::from_env()?;
    let header = runtime()?
        .block_on(auth.header_for_url(&url))
        .map_err(|e| with_unread(e, &auth))?
        .ok_or_else(|| refuse(&url, &auth))?;
    println!("{}: {}", header.name(), header.value().expose_secret());
    Ok(SUCCESS)
}

/// `exec --proxy`: CMD talks to a local proxy of the tracking server.
pub fn exec_with_proxy(url: Option<&str>, command: &[OsString]) -> anyhow::Result<u8> {
    let (tracking, _) = tracking_url(url)?;
    crate::server::exec_with_proxy(&tracking, command)
}

/// `NO_PROXY` as this process has it (upper or lower case), with `host`
/// added: for a child that must reach `host` directly.
pub(crate) fn no_proxy_with(host: &str) -> String {
    std::env::var("NO_PROXY")
        .or_else(|_| std::env::var("no_proxy"))
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map_or_else(|| host.to_owned(), |given| format!("{given},{host}"))
}

pub fn exec(url: Option<&str>, command: &[OsString]) -> anyhow::Result<u8> {
    let Some((program, args)) = command.split_first() else {
        bail!("no command given after `--`");
    };
    let (text, tracking) = tracking_url(url)?;
    let auth = SecretsAuth::from_env()?;
    let credential = runtime()?
        .block_on(auth.credential_for_url(&tracking))
        .map_err(|e| with_unread(e, &auth))?
        .ok_or_else(|| refuse(&tracking, &auth))?;
    let mut child = Command::new(program);
    child.args(args);
    for name in [
        "MLFLOW_TRACKING_TOKEN",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
    ] {
        child.env_remove(name);
    }
    match &credential {
        Credential::Token(token) => {
            child.env("MLFLOW_TRACKING_TOKEN", token.expose_secret());
        }
        Credential::UserPassword { username, password } => {
            child
                .env("MLFLOW_TRACKING_USERNAME", username.expose_secret())
                .env("MLFLOW_TRACKING_PASSWORD", password.expose_secret());
        }
    }
    // The text judged, always: an environment may hold the variable twice,
    // and this process read the first while the child would get the last.
    child.env("MLFLOW_TRACKING_URI", text);
    if tracking.scheme() == "http"
        && let Some(host) = tracking.host_str()
    {
        // Over plain http a proxy from HTTP_PROXY would read the credential.
        let no_proxy = no_proxy_with(host.trim_start_matches('[').trim_end_matches(']'));
        child.env("NO_PROXY", &no_proxy).env("no_proxy", &no_proxy);
    }
    // Replaces this process: exit code and signals are the command's own.
    let error = child.exec();
    eprintln!(
        "mlflow-secrets-auth: cannot run `{}`: {error}",
        program.to_string_lossy()
    );
    Ok(CANNOT_RUN)
}
