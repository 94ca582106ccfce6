//! Logs a run to an MLflow server through the middleware, configured only by
//! the environment: the provider variables (e.g. `MLFLOW_SECRETS_AUTH_ENABLE=file`,
//! `MLFLOW_SECRETS_FILE_PATH=...`), `MLFLOW_SECRETS_ALLOWED_HOSTS`, and
//! `MLFLOW_TRACKING_URI` (default `http://127.0.0.1:5000`).
//!
//! `cargo run -p mlflow-secrets-auth --example log_run`
#![allow(clippy::print_stdout)]

use std::error::Error;
use std::time::{SystemTime, UNIX_EPOCH};

use mlflow_secrets_auth::SecretsAuth;
use mlflow_secrets_auth::middleware::client;
use serde_json::{Value, json};

/// Creates an experiment and a run, logs a metric, and returns the run id.
pub async fn log_run(
    client: &reqwest_middleware::ClientWithMiddleware,
    tracking_uri: &str,
    experiment: &str,
) -> Result<String, Box<dyn Error>> {
    let api = |path: &str| format!("{tracking_uri}/api/2.0/mlflow/{path}");
    let created: Value = client
        .post(api("experiments/create"))
        .json(&json!({ "name": experiment }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let experiment_id = created["experiment_id"]
        .as_str()
        .ok_or("no experiment_id")?;
    let run: Value = client
        .post(api("runs/create"))
        .json(&json!({ "experiment_id": experiment_id }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let run_id = run["run"]["info"]["run_id"]
        .as_str()
        .ok_or("no run_id")?
        .to_owned();
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
    client
        .post(api("runs/log-metric"))
        .json(
            &json!({ "run_id": run_id, "key": "loss", "value": 0.25, "timestamp": now, "step": 1 }),
        )
        .send()
        .await?
        .error_for_status()?;
    Ok(run_id)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    let auth = SecretsAuth::from_env()?;
    for warning in auth.warnings() {
        println!("warning: {warning}");
    }
    let tracking_uri =
        std::env::var("MLFLOW_TRACKING_URI").unwrap_or_else(|_| "http://127.0.0.1:5000".to_owned());
    let client = client(auth)?;
    let experiment = format!(
        "mlflow-secrets-auth-example-{}",
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs()
    );
    let run_id = log_run(&client, tracking_uri.trim_end_matches('/'), &experiment).await?;
    println!("logged metric `loss` to run {run_id} of experiment {experiment}");
    Ok(())
}
