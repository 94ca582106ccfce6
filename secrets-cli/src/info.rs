//! `info`: the configuration as the library sees it — no network, no SDK client.

use crate::{FAILURE, SUCCESS};

use mlflow_secrets_auth::{ProviderKind, SecretsAuth, provider_compiled_in};
use serde_json::{Value, json};

use crate::output::{line, mark, redacted, redacted_json};

fn seconds(d: std::time::Duration) -> f64 {
    d.as_secs_f64()
}

/// The configuration as JSON (the shape `info --json` prints).
pub fn report(auth: &SecretsAuth) -> Value {
    let config = auth.config();
    let providers: Vec<Value> = auth
        .status()
        .into_iter()
        .map(|s| {
            json!({
                "name": s.name,
                "configured": s.configured,
                "problem": s.problem,
                "description": s.description.map(|d| {
                    d.fields.into_iter().map(|(k, v)| (k.to_owned(), Value::String(v))).collect::<serde_json::Map<_, _>>()
                }),
                "auth_mode": s.settings.map(|st| st.auth_mode.as_str()),
                "ttl_sec": s.settings.map(|st| seconds(st.ttl)),
            })
        })
        .collect();
    let compiled: Vec<&str> = ProviderKind::ALL
        .into_iter()
        .filter(|k| provider_compiled_in(*k))
        .map(ProviderKind::name)
        .collect();
    json!({
        "version": crate::version(),
        "compiled_providers": compiled,
        "providers": providers,
        "allowed_hosts": config.allowlist.is_restricted().then(|| config.allowlist.patterns().collect::<Vec<_>>()),
        "header": config.header_name.as_str(),
        "cache": {
            "disabled": config.cache_disabled,
            "ttl_min_sec": seconds(config.ttl_min),
            "ttl_max_sec": seconds(config.ttl_max),
            "stale_if_error_sec": config.stale_if_error.map(seconds),
        },
        "retry": {
            "max_retries": config.max_retries,
            "base_delay_sec": seconds(config.base_delay),
            "max_delay_sec": seconds(config.max_delay),
            "request_timeout_sec": seconds(config.request_timeout),
            "fetch_deadline_sec": seconds(config.fetch_deadline),
        },
        "breaker": {
            "threshold": config.breaker_threshold,
            "open_sec": seconds(config.breaker_open_for),
        },
        "require_tls": config.require_tls,
        "warnings": auth.warnings().iter().map(|w| w.to_string()).collect::<Vec<_>>(),
    })
}

pub fn run(json_output: bool) -> anyhow::Result<u8> {
    let auth = SecretsAuth::from_env()?;
    let usable = auth.status().iter().any(|s| s.configured);
    let mut report = report(&auth);
    // The agent, when one is named: a call on this machine only.
    let agent = crate::cache::runtime()?.block_on(crate::cache::probe());
    report["agent"] = match &agent {
        None => Value::Null,
        Some((address, answered)) => json!({
            "address": address,
            "reachable": answered.is_ok(),
            "error": answered.as_ref().err(),
            "serves": answered.as_ref().ok().map(crate::cache::serves),
            "status": answered.as_ref().ok(),
        }),
    };
    if json_output {
        println!("{}", redacted_json(&report)?);
    } else {
        print_human(&auth, &report);
    }
    Ok(if usable { SUCCESS } else { FAILURE })
}

fn print_human(auth: &SecretsAuth, report: &Value) {
    let config = auth.config();
    println!("mlflow-secrets-auth {}", crate::version());
    let compiled: Vec<&str> = report["compiled_providers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    println!("{}", line("providers compiled in", compiled.join(", ")));
    let status = auth.status();
    if status.is_empty() {
        println!(
            "{}",
            line("providers enabled", "none (set MLFLOW_SECRETS_AUTH_ENABLE)")
        );
    }
    for s in &status {
        let detail = match (&s.description, &s.problem) {
            (Some(d), _) => {
                let settings = s
                    .settings
                    .map(|st| format!(" [{} mode, TTL {}s]", st.auth_mode, st.ttl.as_secs()))
                    .unwrap_or_default();
                format!("{d}{settings}")
            }
            (None, Some(problem)) => problem.clone(),
            (None, None) => String::new(),
        };
        println!("  {} {}", mark(s.configured), line(s.name, detail));
    }
    if let Some(agent) = report["agent"].as_object() {
        let address = agent["address"].as_str().unwrap_or_default();
        let detail = match agent["error"].as_str() {
            None => format!(
                "{address} (reachable): {}",
                agent["serves"].as_str().unwrap_or_default()
            ),
            Some(error) => format!("{address} (unreachable: {error})"),
        };
        println!("{}", line("agent", detail));
    }
    println!("{}", line("allowed hosts", &config.allowlist));
    println!("{}", line("header", &config.header_name));
    println!(
        "{}",
        line(
            "cache",
            if config.cache_disabled {
                "disabled".to_owned()
            } else {
                format!(
                    "TTL within [{}s, {}s], stale if error {}",
                    config.ttl_min.as_secs(),
                    config.ttl_max.as_secs(),
                    config
                        .stale_if_error
                        .map_or("as long as the TTL".to_owned(), |d| format!(
                            "{}s",
                            d.as_secs()
                        ))
                )
            }
        )
    );
    println!(
        "{}",
        line(
            "retries",
            format!(
                "{} after the first, {:.1}s doubling up to {:.1}s, {:.1}s per attempt, {:.1}s per fetch",
                config.max_retries,
                config.base_delay.as_secs_f64(),
                config.max_delay.as_secs_f64(),
                config.request_timeout.as_secs_f64(),
                config.fetch_deadline.as_secs_f64()
            )
        )
    );
    println!(
        "{}",
        line(
            "circuit breaker",
            format!(
                "opens after {} failures for {}s",
                config.breaker_threshold,
                config.breaker_open_for.as_secs()
            )
        )
    );
    println!("{}", line("require TLS", config.require_tls));
    for warning in auth.warnings() {
        println!("{}", redacted(format!("warning: {warning}")));
    }
}
