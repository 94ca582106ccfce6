//! Workload identity through the CLI, as a pod or a CI job runs it: the AWS
//! SDK's own chain reads web identity (EKS IRSA, GitHub Actions) and
//! container credentials (EKS Pod Identity) from the process environment,
//! against moto's STS and a loopback credentials endpoint, with no static key
//! anywhere; `info` names what the environment sets up and `doctor` which
//! source answered and when its credentials expire.

use serde_json::Value;

use secrets_testkit::moto::{CONTAINER_ACCESS_KEY, ContainerCredentials, MotoServer};

use super::{cli, stdout};

const ROLE: &str = "arn:aws:iam::123456789012:role/mlflow-reader";

/// The variables every AWS case shares: moto for Secrets Manager and STS, no
/// profile files, no instance metadata, no static keys.
fn aws_vars<'a>(moto: &'a str, home: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("MLFLOW_SECRETS_AUTH_ENABLE", "aws-secrets-manager"),
        ("MLFLOW_AWS_SECRET_NAME", "mlflow-identity"),
        ("MLFLOW_SECRETS_ALLOWED_HOSTS", "127.0.0.1"),
        ("MLFLOW_SECRETS_MAX_RETRIES", "0"),
        ("AWS_ENDPOINT_URL", moto),
        ("AWS_ENDPOINT_URL_STS", moto),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("HOME", home),
        ("AWS_CONFIG_FILE", "/nonexistent/aws-config"),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/aws-credentials",
        ),
    ]
}

/// `doctor --json`'s checks, by name.
fn doctor(vars: &[(&str, &str)]) -> (bool, Vec<Value>) {
    let output = cli(vars, &["doctor", "--json"]);
    let report: Value = serde_json::from_str(&stdout(&output)).expect("doctor --json");
    let passed = report["passed"].as_bool().unwrap_or(false);
    assert_eq!(output.status.success(), passed, "{report:#}");
    (
        passed,
        report["checks"].as_array().cloned().unwrap_or_default(),
    )
}

fn detail<'a>(checks: &'a [Value], name: &str) -> &'a str {
    checks
        .iter()
        .find(|c| c["check"] == name)
        .and_then(|c| c["detail"].as_str())
        .unwrap_or_else(|| panic!("no `{name}` check in {checks:#?}"))
}

fn described_credentials(vars: &[(&str, &str)]) -> String {
    let output = cli(vars, &["info", "--json"]);
    assert!(output.status.success(), "{}", stdout(&output));
    let info: Value = serde_json::from_str(&stdout(&output)).unwrap();
    info["providers"][0]["description"]["credentials"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn aws_web_identity_reads_the_secret_with_no_static_key() {
    let Some(moto) = MotoServer::start("aws web identity") else {
        return;
    };
    moto.create_secret("mlflow-identity", r#"{"token": "tok-web-identity"}"#);
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    let token_path = token_file.display().to_string();
    let (url, home) = (moto.url(), dir.path().display().to_string());
    let mut vars = aws_vars(&url, &home);
    vars.extend([
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token_path.as_str()),
        ("AWS_ROLE_ARN", ROLE),
        ("AWS_ROLE_SESSION_NAME", "mlflow-job"),
    ]);

    assert_eq!(
        described_credentials(&vars),
        format!("AWS default chain (web identity: role {ROLE}, token file {token_path})")
    );

    // The platform has not projected the token yet: refused, with the fix.
    let (passed, checks) = doctor(&vars);
    assert!(!passed);
    let failed = checks.iter().find(|c| c["ok"] == false).unwrap();
    assert_eq!(failed["check"], "backend reachable", "{failed:#}");
    let said = failed["detail"].as_str().unwrap();
    assert!(
        said.starts_with(&format!(
            "AWS_WEB_IDENTITY_TOKEN_FILE: {token_path}: cannot be read"
        )),
        "{said}"
    );
    assert!(
        failed["fix"]
            .as_str()
            .unwrap()
            .starts_with("mount the platform's token where AWS_WEB_IDENTITY_TOKEN_FILE points"),
        "{failed:#}"
    );

    std::fs::write(&token_file, "eyJhbGciOiJSUzI1NiJ9.web-identity-token.sig").unwrap();
    let (passed, checks) = doctor(&vars);
    assert!(passed, "{checks:#?}");
    let identity = detail(&checks, "identity");
    assert!(
        identity.starts_with(
            "aws-secrets-manager: credentials=AWS default chain: WebIdentityToken, expire in "
        ),
        "{identity}"
    );
    let output = cli(&vars, &["header", "--url", "http://127.0.0.1:5000/"]);
    assert!(output.status.success());
    assert_eq!(
        stdout(&output).trim(),
        "Authorization: Bearer tok-web-identity"
    );
}

#[test]
fn aws_container_credentials_present_the_token_file_of_each_run() {
    let Some(moto) = MotoServer::start("aws container credentials") else {
        return;
    };
    moto.create_secret("mlflow-identity", r#"{"token": "tok-pod-identity"}"#);
    let endpoint = ContainerCredentials::start("pod-identity-token-1");
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("eks-pod-identity-token");
    std::fs::write(&token_file, "pod-identity-token-1").unwrap();
    let (url, home, uri) = (moto.url(), dir.path().display().to_string(), endpoint.url());
    let token_path = token_file.display().to_string();
    let mut vars = aws_vars(&url, &home);
    vars.extend([
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri.as_str()),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            token_path.as_str(),
        ),
    ]);
    assert_eq!(
        described_credentials(&vars),
        format!(
            "AWS default chain (container credentials from http://{})",
            endpoint.addr()
        )
    );

    let (passed, checks) = doctor(&vars);
    assert!(passed, "{checks:#?}");
    assert!(
        detail(&checks, "identity").starts_with(
            "aws-secrets-manager: credentials=AWS default chain: EcsContainer, expire in "
        ),
        "{checks:#?}"
    );

    // The platform rotates the token: the next process presents the new one.
    endpoint.accept("pod-identity-token-2");
    std::fs::write(&token_file, "pod-identity-token-2").unwrap();
    let output = cli(&vars, &["header", "--url", "http://127.0.0.1:5000/"]);
    assert!(output.status.success(), "{}", super::stderr(&output));
    assert_eq!(
        stdout(&output).trim(),
        "Authorization: Bearer tok-pod-identity"
    );
    assert_eq!(
        endpoint.presented(),
        ["pod-identity-token-1", "pod-identity-token-2"]
    );
    assert!(!stdout(&output).contains(CONTAINER_ACCESS_KEY));
}
