//! `cache status` and `cache clear`: the agent's cache, seen and cleared from
//! outside; and the agent line of `info` and `doctor`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use mlflow_secrets_auth::Env;
use mlflow_secrets_auth::classify::server_said;
use mlflow_secrets_auth_agent::protocol::{self, ErrorAnswer};
use mlflow_secrets_auth_agent::{AGENT_VAR, AgentAddr, AgentClient, Answer};
use serde_json::Value;

use crate::output::line;
use crate::{FAILURE, SUCCESS};

/// The agent named by `--socket`, else by `MLFLOW_SECRETS_AGENT`.
pub(crate) fn client(socket: Option<PathBuf>) -> anyhow::Result<Option<AgentClient>> {
    match socket {
        Some(path) => Ok(Some(AgentClient::new(AgentAddr::Unix(path), None))),
        None => Ok(AgentClient::from_env(&Env::process())?),
    }
}

/// A single-threaded runtime for one call to the agent.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Asks the agent; `None` (after saying so) when none is configured.
fn ask(
    socket: Option<PathBuf>,
    post: bool,
    path: &str,
) -> anyhow::Result<Option<(AgentClient, Value)>> {
    let Some(client) = client(socket)? else {
        eprintln!(
            "mlflow-secrets-auth: no agent is configured: set MLFLOW_SECRETS_AGENT (e.g. unix:/run/user/1000/mlflow-secrets-auth/agent.sock) or pass --socket"
        );
        return Ok(None);
    };
    let answer = runtime()?.block_on(async {
        if post {
            client.post(path).await
        } else {
            client.get(path).await
        }
    })?;
    let body = parse(&client, &answer)?;
    Ok(Some((client, body)))
}

fn parse(client: &AgentClient, answer: &Answer) -> anyhow::Result<Value> {
    if !answer.status.is_success() {
        // The agent's words are a server's: blanked, cut and redacted.
        let reason = serde_json::from_slice::<ErrorAnswer>(&answer.body)
            .map(|e| server_said(&e.error))
            .unwrap_or_default();
        bail!(
            "the agent at {} answered {}: {reason}",
            client.addr(),
            answer.status
        );
    }
    serde_json::from_slice(&answer.body)
        .with_context(|| format!("the agent at {} sent a malformed answer", client.addr()))
}

/// `cache status [--json]`.
pub(crate) fn status(socket: Option<PathBuf>, as_json: bool) -> anyhow::Result<u8> {
    let Some((client, body)) = ask(socket, false, protocol::STATUS_PATH)? else {
        return Ok(FAILURE);
    };
    if as_json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(SUCCESS);
    }
    let number = |v: &Value| v.as_f64().unwrap_or_default();
    println!("{}", line("agent", client.addr()));
    println!(
        "{}",
        line("version", body["version"].as_str().unwrap_or("?"))
    );
    println!(
        "{}",
        line("uptime", format!("{:.1}s", number(&body["uptime_secs"])))
    );
    println!(
        "{}",
        line("ready", body["ready"].as_bool().unwrap_or(false))
    );
    if let Some(tenant) = body["tenant"].as_str() {
        let secret = body["secret"].as_str().unwrap_or("?");
        println!("{}", line("tenant", format!("{tenant} (secret {secret})")));
    }
    if let Some(tenants) = body["tenants"].as_object() {
        println!(
            "{}",
            line(
                "tenants",
                format!(
                    "{} in {}, {} uids, {} caches",
                    tenants["names"].as_array().map_or(0, Vec::len),
                    tenants["file"].as_str().unwrap_or("?"),
                    tenants["uids"].as_u64().unwrap_or(0),
                    tenants["caches"].as_array().map_or(0, Vec::len)
                )
            )
        );
    }
    for provider in body["providers"].as_array().into_iter().flatten() {
        let name = provider["name"].as_str().unwrap_or("?");
        let circuit = provider["circuit"].as_str().unwrap_or("-");
        let last = provider["last_error"].as_str().unwrap_or("none");
        println!(
            "{}",
            line(
                &format!("provider {name}"),
                format!("circuit {circuit}, last error {last}")
            )
        );
    }
    match body["entry"].as_object() {
        Some(entry) => println!(
            "{}",
            line(
                "credential",
                format!(
                    "{}, age {:.1}s, {:.1}s left",
                    entry["state"].as_str().unwrap_or("?"),
                    number(&entry["age_secs"]),
                    number(&entry["remaining_secs"])
                )
            )
        ),
        None => println!("{}", line("credential", "none cached")),
    }
    let counters = &body["counters"];
    let counted: Vec<String> = [
        "hits",
        "misses",
        "coalesced",
        "stale_served",
        "fetches",
        "failures",
        "refreshes",
    ]
    .iter()
    .map(|k| format!("{k} {}", counters[k].as_u64().unwrap_or(0)))
    .collect();
    println!("{}", line("counters", counted.join(", ")));
    let errors = body["fetch_errors"]
        .as_object()
        .filter(|m| !m.is_empty())
        .map_or_else(
            || "none".to_owned(),
            |m| {
                m.iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        );
    println!("{}", line("fetch errors", errors));
    println!(
        "{}",
        line(
            "clients",
            format!(
                "{} processes, {} secrets served",
                body["clients"].as_u64().unwrap_or(0),
                body["secrets_served"].as_u64().unwrap_or(0)
            )
        )
    );
    Ok(SUCCESS)
}

/// `cache clear`: the agent refetches now.
pub(crate) fn clear(socket: Option<PathBuf>) -> anyhow::Result<u8> {
    let Some((client, body)) = ask(socket, true, protocol::INVALIDATE_PATH)? else {
        return Ok(FAILURE);
    };
    let changed = body["changed"].as_bool().unwrap_or(false);
    println!(
        "the agent at {} fetched the credential again: {}",
        client.addr(),
        if changed { "it changed" } else { "unchanged" }
    );
    Ok(SUCCESS)
}

/// The configured agent and its `/v1/status` (a local call): `None` when no
/// agent is configured.
pub(crate) async fn probe() -> Option<(String, Result<Value, String>)> {
    let client = match AgentClient::from_env(&Env::process()) {
        Ok(Some(client)) => client,
        Ok(None) => return None,
        Err(error) => return Some((AGENT_VAR.to_owned(), Err(error.to_string()))),
    };
    let answered = match client.get(protocol::STATUS_PATH).await {
        Ok(answer) => parse(&client, &answer).map_err(|e| format!("{e:#}")),
        Err(error) => Err(error.to_string()),
    };
    Some((client.addr().to_string(), answered))
}

/// What an agent's status says it serves, in a line: its provider with
/// the auth mode and TTL of that provider, and the credential it holds. The
/// agent's words pass [`server_said`] (a stand-in may say anything).
pub(crate) fn serves(status: &Value) -> String {
    let providers: Vec<String> = status["providers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["configured"].as_bool() == Some(true))
        .map(|p| {
            let name = server_said(p["name"].as_str().unwrap_or("?"));
            match (p["auth_mode"].as_str(), p["ttl_secs"].as_f64()) {
                (Some(mode), Some(ttl)) if ttl.is_finite() && ttl < 1e9 => {
                    format!("{name} [{} mode, TTL {ttl:.0}s]", server_said(mode))
                }
                _ => name,
            }
        })
        .collect();
    let providers = if providers.is_empty() {
        "no usable provider".to_owned()
    } else {
        providers.join(" → ")
    };
    let credential = match status["entry"].as_object() {
        Some(entry) => format!(
            "credential {}, {:.0}s left",
            server_said(entry["state"].as_str().unwrap_or("?")),
            entry["remaining_secs"]
                .as_f64()
                .filter(|s| s.is_finite() && *s < 1e9)
                .unwrap_or_default()
        ),
        None => "no credential cached yet".to_owned(),
    };
    format!("serves {providers}; {credential}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_stand_in_agent_says_is_blanked_cut_and_bounded() {
        let status = serde_json::json!({
            "providers": [{
                "name": "\u{1b}[2J\u{1b}[31mFAKE\nwarning: all fine\r",
                "configured": true,
                "auth_mode": "bearer\u{1b}[5m",
                "ttl_secs": 1e308,
            }],
            "entry": {"state": format!("fresh\u{1b}[1A{}", "Z".repeat(100_000)), "remaining_secs": 5.0},
        });
        let line = serves(&status);
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert!(line.len() < 1_000, "{} bytes", line.len());
        assert!(!line.contains("1000000000"), "{line}");
    }
}
