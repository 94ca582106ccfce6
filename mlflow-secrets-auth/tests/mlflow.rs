//! Against a real MLflow server with basic auth (one per test binary): the
//! example's flow succeeds through the middleware with the admin credential
//! kept in moto or OpenBao, the same call without it is refused, and a
//! password rotation costs one 401 and exactly one extra backend fetch.

use std::time::Duration;

use mlflow_secrets_auth::middleware::client;
use mlflow_secrets_auth::{AuthMode, Config, HostAllowlist, ProviderSettings, SecretsAuth};
use secrets_testkit::mlflow::{ADMIN_USER, MlflowServer};

#[allow(dead_code)]
mod common;
use common::backend;
use mlflow_secrets_auth_vault::VaultProvider;
use secrets_testkit::openbao::{OpenBao, ROOT_TOKEN};

#[allow(dead_code)]
#[path = "../examples/log_run.rs"]
mod example;

fn basic() -> ProviderSettings {
    ProviderSettings {
        auth_mode: AuthMode::Basic,
        ttl: Duration::from_secs(300),
    }
}

fn config() -> Config {
    let mut config = Config::default();
    config.allowlist = HostAllowlist::parse("127.0.0.1").unwrap();
    config.max_retries = 1;
    config.base_delay = Duration::from_millis(20);
    // Authenticated MLflow calls hash a password: give them time on 2 cores.
    config.request_timeout = Duration::from_secs(5);
    config
}

fn user_secret(user: &str, password: &str) -> String {
    serde_json::json!({ "username": user, "password": password }).to_string()
}

async fn search_status(
    client: &reqwest_middleware::ClientWithMiddleware,
    mlflow: &MlflowServer,
) -> u16 {
    client
        .get(format!(
            "{}/api/2.0/mlflow/experiments/search?max_results=1",
            mlflow.url()
        ))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn the_example_flow_runs_with_a_credential_from_moto_and_fails_without() {
    let Some(mlflow) = MlflowServer::shared("mlflow_flow") else {
        return;
    };
    let secret = user_secret(ADMIN_USER, mlflow.admin_password());
    let Some(aws) = backend("mlflow_flow", "mlflow/admin", &secret) else {
        return;
    };
    let auth = SecretsAuth::builder()
        .config(config())
        .provider(aws.provider("mlflow/admin"), basic())
        .build();
    let client = client(auth).unwrap();
    let run_id = example::log_run(&client, &mlflow.url(), "flow-through-middleware")
        .await
        .unwrap();
    assert!(!run_id.is_empty());

    let plain = reqwest::get(format!(
        "{}/api/2.0/mlflow/experiments/search?max_results=1",
        mlflow.url()
    ))
    .await
    .unwrap();
    assert_eq!(plain.status(), 401, "without the middleware MLflow refuses");
    drop(aws.moto);
}

#[tokio::test]
async fn a_credential_from_openbao_works_too() {
    let Some(mlflow) = MlflowServer::shared("mlflow_openbao") else {
        return;
    };
    let Some(bao) = OpenBao::start("mlflow_openbao") else {
        return;
    };
    bao.admin(
        "POST",
        "secret/data/mlflow/admin",
        &format!(
            r#"{{"data": {}}}"#,
            user_secret(ADMIN_USER, mlflow.admin_password())
        ),
    );
    let vault = VaultProvider::builder()
        .address(bao.url())
        .path("secret/mlflow/admin")
        .token(ROOT_TOKEN)
        .build()
        .unwrap();
    let auth = SecretsAuth::builder()
        .config(config())
        .provider(vault, basic())
        .build();
    assert_eq!(search_status(&client(auth).unwrap(), mlflow).await, 200);
}

#[tokio::test]
async fn a_rotated_password_costs_one_401_and_one_extra_fetch() {
    let Some(mlflow) = MlflowServer::shared("mlflow_rotation") else {
        return;
    };
    let user = "rotating-user";
    mlflow.create_user(user, "first-password-0001");
    let Some(aws) = backend(
        "mlflow_rotation",
        "mlflow/rotating",
        &user_secret(user, "first-password-0001"),
    ) else {
        return;
    };
    let auth = SecretsAuth::builder()
        .config(config())
        .provider(aws.provider("mlflow/rotating"), basic())
        .build();
    let client = client(auth.clone()).unwrap();
    assert_eq!(search_status(&client, mlflow).await, 200);
    assert_eq!(aws.proxy.forwarded(), 1);

    mlflow.set_password(user, "second-password-0002");
    aws.moto.put_secret_value(
        "mlflow/rotating",
        &user_secret(user, "second-password-0002"),
    );

    assert_eq!(
        search_status(&client, mlflow).await,
        200,
        "401, refetch, resend"
    );
    assert_eq!(aws.proxy.forwarded(), 2, "exactly one extra fetch");
    assert_eq!(search_status(&client, mlflow).await, 200);
    assert_eq!(aws.proxy.forwarded(), 2, "cached again");
}
