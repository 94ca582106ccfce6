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
    assert!(
        auth.warnings()
            .iter()
            .any(|w| w.message().contains("vault"))
    );
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
            .any(|w| w.message().contains("MLFLOW_SECRETS_ALLOWED_HOSTS"))
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
    // The provider's own error, once: the variable that is wrong leads.
    assert_eq!(
        err.to_string(),
        "MLFLOW_SECRETS_FILE_PATH is not set: the file holding the secret (provider file)"
    );

    // Two unusable providers: both named, each once.
    let vars = [("MLFLOW_SECRETS_AUTH_ENABLE", "file,vault")];
    let auth = SecretsAuth::from_source(&Env::new(&vars)).unwrap();
    let err = auth.header_for(URL).await.unwrap_err().to_string();
    for var in ["MLFLOW_SECRETS_FILE_PATH", "VAULT_ADDR", "VAULT_TOKEN"] {
        assert_eq!(
            err.matches(&format!("{var} is not set")).count(),
            1,
            "{var}: {err}"
        );
    }

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

#[tokio::test]
async fn an_unreachable_azure_vault_fails_over_to_the_next_provider() {
    let dir = tempfile::tempdir().unwrap();
    let file = token_file(&dir);
    let closed = format!("https://{}", secrets_testkit::net::closed_port());
    let vars = [
        ("MLFLOW_SECRETS_AUTH_ENABLE", "azure-key-vault,file"),
        ("AZURE_KEY_VAULT_URL", closed.as_str()),
        ("MLFLOW_AZURE_SECRET_NAME", "mlflow-cred"),
        ("AZURE_TENANT_ID", "tenant-1"),
        ("AZURE_CLIENT_ID", "client-1"),
        ("AZURE_CLIENT_SECRET", "azure-secret-never-shown"),
        // Even a token request could only go to loopback.
        ("AZURE_AUTHORITY_HOST", closed.as_str()),
        ("MLFLOW_SECRETS_FILE_PATH", file.as_str()),
        ("MLFLOW_SECRETS_ALLOWED_HOSTS", "mlflow.example.com"),
        ("MLFLOW_SECRETS_MAX_RETRIES", "0"),
    ];
    let auth = SecretsAuth::from_source(&Env::new(&vars)).unwrap();
    let status = auth.status();
    let azure = status.iter().find(|s| s.name == "azure-key-vault").unwrap();
    assert!(azure.configured, "{azure:?}");
    let described = azure.description.as_ref().unwrap().to_string();
    assert!(
        described.contains("credential=client secret (tenant tenant-1, client client-1)"),
        "{described}"
    );
    assert!(!described.contains("azure-secret-never-shown"));

    let header = auth.header_for(URL).await.unwrap().unwrap();
    assert_eq!(header.value().expose_secret(), "Bearer tok-from-env");
    let azure = auth
        .status()
        .into_iter()
        .find(|s| s.name == "azure-key-vault")
        .unwrap();
    assert_eq!(azure.last_error, Some(ErrorKind::Transient));
}

#[test]
fn a_blank_allowlist_is_an_error_naming_the_variable() {
    for blank in ["", "  ", " , "] {
        let vars = [
            ("MLFLOW_SECRETS_AUTH_ENABLE", "file"),
            ("MLFLOW_SECRETS_ALLOWED_HOSTS", blank),
        ];
        let err = SecretsAuth::from_source(&Env::new(&vars)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(
            err.to_string().contains("MLFLOW_SECRETS_ALLOWED_HOSTS"),
            "{blank:?}: {err}"
        );
    }
}

#[test]
fn stars_inside_a_label_are_warned_about() {
    let vars = [("MLFLOW_SECRETS_ALLOWED_HOSTS", "mlflow-*, *.example.com")];
    let auth = SecretsAuth::from_source(&Env::new(&vars)).unwrap();
    let warned: Vec<&str> = auth.warnings().iter().map(|w| w.message()).collect();
    let about_patterns: Vec<_> = warned
        .iter()
        .filter(|w| w.contains("host pattern"))
        .collect();
    assert_eq!(about_patterns.len(), 1, "{warned:?}");
    assert!(about_patterns[0].contains("`mlflow-*`"), "{warned:?}");
}

#[test]
fn huge_durations_are_capped_at_a_year_and_never_overflow() {
    let vars = [
        ("MLFLOW_SECRETS_TTL_MAX_SEC", "1e300"),
        ("MLFLOW_SECRETS_STALE_IF_ERROR_SEC", "1e20"),
        ("MLFLOW_SECRETS_BREAKER_OPEN_SEC", "18446744073709551615"),
        ("MLFLOW_SECRETS_REFETCH_INTERVAL_SEC", "7"),
    ];
    let auth = SecretsAuth::from_source(&Env::new(&vars)).unwrap();
    let config = auth.config();
    assert_eq!(config.ttl_max, mlflow_secrets_auth::MAX_DURATION);
    assert_eq!(
        config.stale_if_error,
        Some(mlflow_secrets_auth::MAX_DURATION)
    );
    assert_eq!(config.breaker_open_for, mlflow_secrets_auth::MAX_DURATION);
    assert_eq!(config.refetch_interval, std::time::Duration::from_secs(7));
}

#[cfg(feature = "vault")]
#[test]
fn a_providers_warnings_reach_every_face() {
    let vars = [
        ("MLFLOW_SECRETS_AUTH_ENABLE", "vault"),
        ("MLFLOW_SECRETS_ALLOWED_HOSTS", "mlflow.example.com"),
        ("VAULT_ADDR", "http://vault.example.com:8200"),
        ("VAULT_SKIP_VERIFY", "true"),
        ("VAULT_TOKEN", "s.not-a-real-token"),
        ("MLFLOW_VAULT_SECRET_PATH", "secret/mlflow"),
    ];
    let auth = SecretsAuth::from_source(&Env::new(&vars)).unwrap();
    let warned: Vec<&str> = auth.warnings().iter().map(|w| w.message()).collect();
    for expected in ["vault: VAULT_SKIP_VERIFY", "vault: VAULT_ADDR"] {
        assert!(
            warned.iter().any(|w| w.starts_with(expected)),
            "{expected}: {warned:?}"
        );
    }
    assert!(warned.iter().all(|w| !w.contains("not-a-real-token")));
    assert!(
        auth.warnings()
            .iter()
            .filter(|w| w.message().starts_with("vault:"))
            .all(|w| w.kind() == mlflow_secrets_auth::WarningKind::Provider)
    );
}

#[test]
fn the_builder_warns_about_an_open_allowlist_as_from_env_does() {
    let open = SecretsAuth::builder().build();
    assert!(
        open.warnings().iter().any(|w| w
            .message()
            .contains("MLFLOW_SECRETS_ALLOWED_HOSTS is not set")),
        "{:?}",
        open.warnings()
    );
    let mut config = mlflow_secrets_auth::Config::default();
    config.allowlist = mlflow_secrets_auth::HostAllowlist::parse("mlflow-*").unwrap();
    let loose = SecretsAuth::builder().config(config).build();
    assert!(
        loose
            .warnings()
            .iter()
            .any(|w| w.message().contains("mlflow-*"))
    );
}

/// Every configuration error the providers give for a bad environment,
/// as `info`, `doctor` and the logs show it: it names the variable, the
/// redaction leaves our own words whole (a variable's name followed by our
/// message is not a secret), and no secret value of the environment appears.
#[test]
fn every_providers_config_errors_name_the_variable_and_survive_redaction() {
    use mlflow_secrets_auth::redact;

    const SECRETS: [&str; 6] = [
        "hvs.tok-value-never-shown",
        "with-a-line-break",
        "sid-value-never-shown",
        "aws-secret-never-shown",
        "azure-secret-never-shown",
        "identity-header-never-shown",
    ];
    let dir = tempfile::tempdir().unwrap();
    let file = token_file(&dir);
    /// The provider, its variables, and the variable its error must name.
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case<'_>] = &[
        ("vault", &[], "VAULT_TOKEN is not set"),
        (
            "vault",
            &[
                ("VAULT_ADDR", "vault.example.com:8200"),
                ("MLFLOW_VAULT_SECRET_PATH", "secret/mlflow"),
                ("VAULT_TOKEN", SECRETS[0]),
            ],
            "VAULT_ADDR",
        ),
        (
            "vault",
            &[
                ("VAULT_ADDR", "https://vault.example.com"),
                ("MLFLOW_VAULT_SECRET_PATH", "secret/../sys/raw"),
                ("VAULT_TOKEN", SECRETS[0]),
            ],
            "MLFLOW_VAULT_SECRET_PATH",
        ),
        (
            "vault",
            &[
                ("VAULT_ADDR", "https://vault.example.com"),
                ("MLFLOW_VAULT_SECRET_PATH", "secret/mlflow"),
                ("VAULT_ROLE_ID", "role-1"),
            ],
            "VAULT_SECRET_ID",
        ),
        (
            "vault",
            &[
                ("VAULT_ADDR", "https://vault.example.com"),
                ("MLFLOW_VAULT_SECRET_PATH", "secret/mlflow"),
                ("MLFLOW_VAULT_AUTH_METHOD", "kubernetes"),
            ],
            "MLFLOW_VAULT_AUTH_ROLE",
        ),
        (
            "vault",
            &[
                ("VAULT_ADDR", "https://vault.example.com"),
                ("MLFLOW_VAULT_SECRET_PATH", "secret/mlflow"),
                ("MLFLOW_VAULT_AUTH_METHOD", "jwt"),
                ("VAULT_SECRET_ID", SECRETS[2]),
            ],
            "MLFLOW_VAULT_JWT_FILE",
        ),
        (
            "vault",
            &[
                ("VAULT_ADDR", "https://vault.example.com"),
                ("MLFLOW_VAULT_SECRET_PATH", "secret/mlflow"),
                ("MLFLOW_VAULT_AUTH_METHOD", "ldap"),
            ],
            "MLFLOW_VAULT_AUTH_METHOD",
        ),
        (
            "vault",
            &[
                ("VAULT_ADDR", "https://proxy.example.com/vault"),
                ("MLFLOW_VAULT_SECRET_PATH", "secret/mlflow"),
                ("VAULT_TOKEN", SECRETS[0]),
            ],
            "VAULT_ADDR",
        ),
        (
            "vault",
            &[
                ("VAULT_ADDR", "https://vault.example.com"),
                ("MLFLOW_VAULT_SECRET_PATH", "secret/.\t./x"),
                ("VAULT_TOKEN", SECRETS[0]),
            ],
            "MLFLOW_VAULT_SECRET_PATH",
        ),
        (
            "vault",
            &[
                ("VAULT_ADDR", "https://vault.example.com"),
                ("MLFLOW_VAULT_SECRET_PATH", "secret/mlflow"),
                ("VAULT_TOKEN", "hvs.pasted\nwith-a-line-break"),
            ],
            "VAULT_TOKEN",
        ),
        ("aws-secrets-manager", &[], "MLFLOW_AWS_SECRET_NAME"),
        (
            "aws-secrets-manager",
            &[
                ("MLFLOW_AWS_SECRET_NAME", "mlflow"),
                ("AWS_SECRET_ACCESS_KEY", SECRETS[3]),
            ],
            "AWS_ACCESS_KEY_ID",
        ),
        (
            "aws-secrets-manager",
            &[
                ("MLFLOW_AWS_SECRET_NAME", "mlflow"),
                ("AWS_ENDPOINT_URL", "localhost:4566"),
            ],
            "AWS_ENDPOINT_URL",
        ),
        (
            "aws-secrets-manager",
            &[
                ("MLFLOW_AWS_SECRET_NAME", "mlflow"),
                ("MLFLOW_SECRETS_REQUEST_TIMEOUT_SEC", "soon"),
            ],
            "MLFLOW_SECRETS_REQUEST_TIMEOUT_SEC",
        ),
        (
            "azure-key-vault",
            &[("MLFLOW_AZURE_SECRET_NAME", "mlflow")],
            "MLFLOW_AZURE_KEY_VAULT_URL",
        ),
        (
            "azure-key-vault",
            &[
                ("MLFLOW_AZURE_KEY_VAULT_URL", "https://team.vault.azure.net"),
                ("MLFLOW_AZURE_SECRET_NAME", "mlflow/token"),
            ],
            "MLFLOW_AZURE_SECRET_NAME",
        ),
        (
            "azure-key-vault",
            &[
                ("MLFLOW_AZURE_KEY_VAULT_URL", "https://team.vault.azure.net"),
                ("MLFLOW_AZURE_SECRET_NAME", "mlflow"),
                ("AZURE_CLIENT_SECRET", SECRETS[4]),
                ("AZURE_CLIENT_ID", "client-1"),
            ],
            "AZURE_TENANT_ID",
        ),
        (
            "azure-key-vault",
            &[
                ("MLFLOW_AZURE_KEY_VAULT_URL", "https://team.vault.azure.net"),
                ("MLFLOW_AZURE_SECRET_NAME", "mlflow"),
                (
                    "AZURE_FEDERATED_TOKEN_FILE",
                    "/var/run/secrets/azure/tokens/token",
                ),
            ],
            "AZURE_TENANT_ID",
        ),
        (
            "azure-key-vault",
            &[
                ("MLFLOW_AZURE_KEY_VAULT_URL", "https://team.vault.azure.net"),
                ("MLFLOW_AZURE_SECRET_NAME", "mlflow"),
                ("IDENTITY_ENDPOINT", "http://localhost:42356/msi/token"),
            ],
            "IDENTITY_HEADER",
        ),
        (
            "azure-key-vault",
            &[
                ("MLFLOW_AZURE_KEY_VAULT_URL", "https://team.vault.azure.net"),
                ("MLFLOW_AZURE_SECRET_NAME", "mlflow"),
                ("IDENTITY_ENDPOINT", "localhost:42356"),
                ("IDENTITY_HEADER", SECRETS[5]),
            ],
            "IDENTITY_ENDPOINT",
        ),
        (
            "azure-key-vault",
            &[
                ("MLFLOW_AZURE_KEY_VAULT_URL", "https://team.vault.azure.net"),
                ("MLFLOW_AZURE_SECRET_NAME", "mlflow"),
                ("AZURE_AUTHORITY_HOST", "login.microsoftonline.com"),
            ],
            "AZURE_AUTHORITY_HOST",
        ),
    ];
    for (provider, vars, named) in cases {
        // A working file provider beside it: the bad one is reported and
        // skipped, and its problem is what `info` and `doctor` show.
        let enable = format!("{provider}, file");
        let mut all = vec![
            ("MLFLOW_SECRETS_AUTH_ENABLE", enable.as_str()),
            ("MLFLOW_SECRETS_FILE_PATH", file.as_str()),
            ("MLFLOW_SECRETS_ALLOWED_HOSTS", "mlflow.example.com"),
            ("PATH", "/nonexistent"),
        ];
        all.extend_from_slice(vars);
        // A setting every provider shares fails the construction itself.
        let problem = match SecretsAuth::from_source(&Env::new(&all.as_slice())) {
            Ok(auth) => {
                let status = auth.status();
                let bad = status.iter().find(|s| s.name == *provider).unwrap();
                bad.problem
                    .clone()
                    .unwrap_or_else(|| panic!("{provider} {vars:?} is not refused"))
            }
            Err(e) => e.to_string(),
        };
        assert!(problem.contains(named), "{provider} {vars:?}: {problem}");
        assert_eq!(redact(&problem), problem, "{provider} {vars:?}");
        for secret in SECRETS {
            assert!(!problem.contains(secret), "{provider} {vars:?}: {problem}");
        }
    }
}
