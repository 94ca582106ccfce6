//! `SecretsAuth` configured only by the predecessor's environment variables:
//! enabled providers, per-provider toggles, misconfigured providers reported
//! and skipped, and the error when nothing usable is left.

use mlflow_secrets_auth::secrecy::ExposeSecret;
use mlflow_secrets_auth::{Env, ErrorKind, SecretsAuth};

const URL: &str = "https://mlflow.example.com/api/2.0/mlflow/experiments/search";

fn token_file(dir: &tempfile::TempDir) -> String {
    let path = dir.path().join("token");
    std::fs::write(&path, "{\"token\": \"tok-from-env\"}").unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn a_misconfigured_provider_is_reported_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let file = token_file(&dir);
    let vars = [
        ("MLFLOW_SECRETS_AUTH_ENABLE", "vault, file"),
        ("MLFLOW_SECRETS_FILE_PATH", file.as_str()),
        ("MLFLOW_SECRETS_ALLOWED_HOSTS", "mlflow.example.com"),
        ("MLFLOW_VAULT_SECRET_PATH", "secret/mlflow"),
    ];
    let auth = SecretsAuth::from_source(&Env::new(&vars)).unwrap();
    let status = auth.status();
    let vault = status.iter().find(|s| s.name == "vault").unwrap();
    assert!(!vault.configured);
    assert!(
        vault.problem.as_deref().unwrap().contains("VAULT_ADDR"),
        "{vault:?}"
    );
    assert!(auth.warnings().iter().any(|w| w.0.contains("vault")));
    let file = status.iter().find(|s| s.name == "file").unwrap();
    assert!(file.configured);

    let header = auth.header_for(URL).await.unwrap().unwrap();
    assert_eq!(header.value().expose_secret(), "Bearer tok-from-env");
    assert!(
        auth.header_for("https://other.example.com/")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn per_provider_toggles_and_auth_modes_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("basic");
    std::fs::write(&path, "alice:pw").unwrap();
    let file = path.display().to_string();
    let vars = [
        ("MLFLOW_SECRETS_AUTH_ENABLE_FILE", "true"),
        ("MLFLOW_SECRETS_FILE_PATH", file.as_str()),
        ("MLFLOW_FILE_AUTH_MODE", "basic"),
        ("MLFLOW_AUTH_HEADER_NAME", "X-MLflow-Auth"),
    ];
    let auth = SecretsAuth::from_source(&Env::new(&vars)).unwrap();
    assert!(
        auth.warnings()
            .iter()
            .any(|w| w.0.contains("MLFLOW_SECRETS_ALLOWED_HOSTS"))
    );
    let header = auth.header_for(URL).await.unwrap().unwrap();
    assert_eq!(header.name().as_str(), "X-MLflow-Auth");
    assert_eq!(header.value().expose_secret(), "Basic YWxpY2U6cHc=");
}

#[tokio::test]
async fn nothing_usable_is_a_config_error_naming_the_cause() {
    let vars = [("MLFLOW_SECRETS_AUTH_ENABLE", "file")];
    let auth = SecretsAuth::from_source(&Env::new(&vars)).unwrap();
    let err = auth.header_for(URL).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(
        err.to_string().contains("MLFLOW_SECRETS_FILE_PATH"),
        "{err}"
    );

    let none: [(&str, &str); 0] = [];
    let auth = SecretsAuth::from_source(&Env::new(&none)).unwrap();
    let err = auth.header_for(URL).await.unwrap_err();
    assert!(
        err.to_string().contains("MLFLOW_SECRETS_AUTH_ENABLE"),
        "{err}"
    );
}

#[test]
fn malformed_variables_fail_construction_with_their_name() {
    let vars = [("MLFLOW_SECRETS_BREAKER_THRESHOLD", "many")];
    let err = SecretsAuth::from_source(&Env::new(&vars)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("MLFLOW_SECRETS_BREAKER_THRESHOLD"),
        "{err}"
    );
}
