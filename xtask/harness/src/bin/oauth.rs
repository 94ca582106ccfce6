//! The OAuth2 figures for BENCHMARKS.md, against the real OpenID provider
//! (panva's `oidc-provider`) behind a counting proxy: token requests of many
//! callers with and without the agent, the header's latency while tokens
//! rotate underneath, a cold exchange against a direct request to the IdP,
//! and the Python plugin's per-request cost with the exchange on. Prints a
//! Markdown table.
//!
//! `MSA_CLI`: the release `mlflow-secrets-auth` binary; `MSA_OURS_PYTHON`: a
//! venv with the release wheel and MLflow; `MSA_PLUGIN_SCRIPT`: the
//! per-request measurement.
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mlflow_secrets_auth::{Env, SecretsAuth};
use secrets_testkit::fault::FaultProxy;
use secrets_testkit::oidc::{OidcClient, OidcServer};
use xtask_harness::{Agent, Result, percentile};

const URL: &str = "http://127.0.0.1:5000/api/2.0/mlflow/experiments/search";
/// Callers, each with a cache of its own (as separate processes have).
const CALLERS: usize = 20;
/// The short token lifetime of the rotating measurements.
const SHORT: Duration = Duration::from_secs(4);
/// How long the rotating measurements run.
const WINDOW: Duration = Duration::from_secs(20);

fn main() -> Result<()> {
    let cli = PathBuf::from(std::env::var("MSA_CLI")?);
    let python = PathBuf::from(std::env::var("MSA_OURS_PYTHON")?);
    let script = PathBuf::from(std::env::var("MSA_PLUGIN_SCRIPT")?);
    let client = OidcClient::new(
        "bench-client",
        "bench-client-secret-8",
        "client_secret_basic",
    );
    let clients = std::slice::from_ref(&client);
    let short =
        OidcServer::start("oauth figures", clients, SHORT).ok_or("oidc-provider missing")?;
    let long = OidcServer::start("oauth figures", clients, Duration::from_secs(3600))
        .ok_or("oidc-provider missing")?;
    let dir = std::env::temp_dir().join(format!("msa-oauth-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let stored = client.store_in(&dir);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut rows = Vec::new();

    // Token requests of 20 callers over 20 s of 4 s tokens: each with its
    // own cache, then all through one agent.
    let counter = FaultProxy::start(short.addr());
    let env = vars(&stored, &format!("{}/token", counter.url()));
    let own: Vec<SecretsAuth> = (0..CALLERS)
        .map(|_| SecretsAuth::from_source(&Env::new(&env)))
        .collect::<std::result::Result<_, _>>()?;
    let (without, _) = runtime.block_on(rotate(&own, &counter))?;
    let agent = Agent::start(&cli, &env, &dir.join("run/agent.sock"))?;
    let through: HashMap<String, String> = [
        ("MLFLOW_SECRETS_AGENT".to_owned(), agent.var()),
        (
            "MLFLOW_SECRETS_ALLOWED_HOSTS".to_owned(),
            "127.0.0.1".to_owned(),
        ),
    ]
    .into();
    let shared: Vec<SecretsAuth> = (0..CALLERS)
        .map(|_| SecretsAuth::from_source(&Env::new(&through)))
        .collect::<std::result::Result<_, _>>()?;
    let (with, _) = runtime.block_on(rotate(&shared, &counter))?;
    drop(agent);
    let lifetimes = WINDOW.as_secs_f64() / SHORT.as_secs_f64();
    rows.push(format!(
        "| token requests of {CALLERS} callers asking in a loop for {}s of {}s tokens: each with its own cache / all through the agent | **{without}** / **{with}** (per token lifetime: {:.1} / {:.1}) |",
        WINDOW.as_secs(),
        SHORT.as_secs(),
        without as f64 / lifetimes,
        with as f64 / lifetimes,
    ));

    // The header's latency, one caller in a loop: tokens that never need a
    // refresh against 4 s tokens refreshed underneath.
    let steady = SecretsAuth::from_source(&Env::new(&vars(&stored, &long.token_url())))?;
    let (_, still) = runtime.block_on(rotate(std::slice::from_ref(&steady), &counter))?;
    let rotating = FaultProxy::start(short.addr());
    let moving = SecretsAuth::from_source(&Env::new(&vars(
        &stored,
        &format!("{}/token", rotating.url()),
    )))?;
    let (refreshes, moved) = runtime.block_on(rotate(std::slice::from_ref(&moving), &rotating))?;
    let ns = |d: Duration| format!("{:.2} µs", d.as_secs_f64() * 1e6);
    rows.push(format!(
        "| header p50 / p99 / max, one caller in a loop for {}s: no refresh / {} refreshes of 4 s tokens in the background | {} / {} / {} — {} / {} / {} |",
        WINDOW.as_secs(),
        refreshes.saturating_sub(1),
        ns(percentile(&still, 0.5)),
        ns(percentile(&still, 0.99)),
        ns(*still.last().unwrap_or(&Duration::ZERO)),
        ns(percentile(&moved, 0.5)),
        ns(percentile(&moved, 0.99)),
        ns(*moved.last().unwrap_or(&Duration::ZERO)),
    ));

    // An exchange with an empty cache (the client already read, as after
    // the first) against the same token request made directly with
    // reqwest; both keep their connection; alternating, 30 each.
    let direct = reqwest::Client::builder().no_proxy().build()?;
    let basic = secrets_testkit::mlflow::basic(&client.id, &client.secret);
    let long_env = vars(&stored, &long.token_url());
    let auth = SecretsAuth::from_source(&Env::new(&long_env))?;
    let (mut cold, mut raw) = (Vec::new(), Vec::new());
    runtime.block_on(async {
        auth.header_for(URL).await?.ok_or("no header")?;
        for _ in 0..30 {
            auth.invalidate();
            let started = Instant::now();
            auth.header_for(URL).await?.ok_or("no header")?;
            cold.push(started.elapsed());
            let started = Instant::now();
            let answer = direct
                .post(long.token_url())
                .header("Authorization", &basic)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body("grant_type=client_credentials")
                .send()
                .await?;
            answer.bytes().await?;
            raw.push(started.elapsed());
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    cold.sort();
    raw.sort();
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
    let (cold_p50, raw_p50) = (percentile(&cold, 0.5), percentile(&raw, 0.5));
    rows.push(format!(
        "| header with an empty cache (the token request through the cache, retry and chain) / the same token request made directly with reqwest, median of 30 | {} / {} (×{:.2}) |",
        ms(cold_p50),
        ms(raw_p50),
        cold_p50.as_secs_f64() / raw_p50.as_secs_f64()
    ));

    // The Python plugin per request, with and without the exchange.
    let token_file = dir.join("token");
    std::fs::write(&token_file, "plain-bearer-token")?;
    let mut plain = vars(&token_file.display().to_string(), "");
    plain.remove("MLFLOW_SECRETS_OAUTH_TOKEN_URL");
    plain.insert("MLFLOW_AUTH_MODE".into(), "bearer".into());
    let with_oauth = per_request(&python, &script, &long_env)?;
    let without_oauth = per_request(&python, &script, &plain)?;
    rows.push(format!(
        "| Python plugin per request in MLflow's path, warm: with the OAuth2 exchange / a stored bearer token | {:.2} µs / {:.2} µs |",
        with_oauth / 1000.0,
        without_oauth / 1000.0
    ));
    let _ = std::fs::remove_dir_all(&dir);

    println!("| figure | value |\n|---|---|");
    for row in rows {
        println!("{row}");
    }
    Ok(())
}

/// The file provider's variables for the client in `stored`, exchanged at
/// `token_url`.
fn vars(stored: &str, token_url: &str) -> HashMap<String, String> {
    [
        ("MLFLOW_SECRETS_AUTH_ENABLE", "file"),
        ("MLFLOW_SECRETS_FILE_PATH", stored),
        ("MLFLOW_SECRETS_ALLOWED_HOSTS", "127.0.0.1"),
        ("MLFLOW_SECRETS_OAUTH_TOKEN_URL", token_url),
        ("BENCH_URL", URL),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Every caller asks for the header in a loop for [`WINDOW`]; the token
/// requests `counter` forwarded meanwhile, and every call's time, sorted.
async fn rotate(callers: &[SecretsAuth], counter: &FaultProxy) -> Result<(usize, Vec<Duration>)> {
    let before = counter.forwarded();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for auth in callers {
        let auth = auth.clone();
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            while started.elapsed() < WINDOW {
                let call = Instant::now();
                let header = auth.header_for(URL).await.map_err(|e| e.to_string())?;
                times.push(call.elapsed());
                header.ok_or("no header")?;
                // A caller that also does other work (and lets the others run).
                tokio::task::yield_now().await;
            }
            Ok::<_, String>(times)
        }));
    }
    let mut times = Vec::new();
    for task in tasks {
        times.extend(task.await??);
    }
    times.sort();
    Ok((counter.forwarded() - before, times))
}

/// The plugin's per-request cost in ns, configured by `env`.
fn per_request(python: &Path, script: &Path, env: &HashMap<String, String>) -> Result<f64> {
    let output = Command::new(python)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env)
        .env("MLFLOW_TRACKING_AUTH", "mlflow_secrets_auth")
        .arg(script)
        .output()?;
    if !output.status.success() {
        return Err(format!(
            "{}: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let figures: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    figures["ns"].as_f64().ok_or_else(|| "no figure".into())
}
