//! The Azure Key Vault provider against the testkit's HTTPS double of Key
//! Vault and Entra ID (no Key Vault runs outside Azure): the conformance
//! cases, pinned versions, disabled and expiring secrets, the challenge in
//! both forms, and failures (wrong client secret, denied, throttled, 5xx, a
//! vault that never answers). The double itself is first checked with
//! Microsoft's Python clients, so these tests exercise real wire shapes.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use mlflow_secrets_auth_azure::{AzureCredential, AzureKeyVaultBuilder, AzureKeyVaultProvider};
use mlflow_secrets_auth_conformance::SecretStore;
use mlflow_secrets_auth_core::{Credential, ErrorKind, SecretProvider};
use secrets_testkit::azure::{
    AzureKeyVault, CLIENT_ID, CLIENT_SECRET, Challenge, IDENTITY_HEADER, Mode, TENANT_ID,
    VAULT_HOST,
};
use secrets_testkit::or_hang;

/// A client that trusts only the double's CA and resolves the vault's host
/// name to it — the transport option, nothing else, points the SDK at it.
fn http_client(double: &AzureKeyVault) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(double.ca_pem().as_bytes()).expect("test CA");
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .tls_certs_only([ca])
        .resolve(VAULT_HOST, double.addr())
        .build()
        .expect("HTTP client")
}

fn client_secret(secret: &str) -> AzureCredential {
    AzureCredential::ClientSecret {
        tenant_id: TENANT_ID.to_owned(),
        client_id: CLIENT_ID.to_owned(),
        secret: secret.into(),
    }
}

/// A provider builder for `name` in the double.
fn provider(double: &AzureKeyVault, name: &str) -> AzureKeyVaultBuilder {
    AzureKeyVaultProvider::builder()
        .vault_url(double.vault_url())
        .secret_name(name)
        .credential(client_secret(CLIENT_SECRET))
        .authority_host(double.url())
        .http_client(http_client(double))
        .request_timeout(Duration::from_secs(5))
}

struct DoubleStore {
    double: AzureKeyVault,
}

async fn double_store(_test: &str) -> Option<DoubleStore> {
    Some(DoubleStore {
        double: AzureKeyVault::start(),
    })
}

#[async_trait]
impl SecretStore for DoubleStore {
    async fn put_text(&self, name: &str, text: &str) {
        self.double.set_secret(name, text);
    }

    async fn put_binary(&self, _name: &str, _bytes: &[u8]) {
        unreachable!("Key Vault secrets are text; the binary cases are not run");
    }

    fn provider(&self, name: &str) -> Box<dyn SecretProvider> {
        Box::new(provider(&self.double, name).build().unwrap())
    }
}

// Key Vault secret names hold letters, digits and dashes only, and values are
// text: the binary and slash cases do not apply.
mlflow_secrets_auth_conformance::conformance_suite!(
    double_store;
    binary: "Key Vault secrets are text: there is no binary secret to store";
    slashes: "Key Vault secret names allow only letters, digits and `-`"
);

async fn fetch(provider: &AzureKeyVaultProvider) -> mlflow_secrets_auth_core::Result<Credential> {
    provider.fetch().await?.credential()
}

fn token(text: &str) -> Credential {
    Credential::Token(text.into())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn microsofts_python_clients_accept_the_double() {
    let Some(python) = secrets_testkit::require_binary("python", "azure python check") else {
        return;
    };
    let double = AzureKeyVault::start();
    let first = double.set_secret("mlflow-cred", r#"{"token": "tok-v1"}"#);
    double.set_secret("mlflow-cred", r#"{"token": "tok-v2"}"#);
    let script = format!(
        r#"
import sys
from azure.core.exceptions import ClientAuthenticationError, ResourceNotFoundError
from azure.identity import ClientSecretCredential
from azure.keyvault.secrets import SecretClient

base, ca = sys.argv[1], sys.argv[2]
def client(secret):
    credential = ClientSecretCredential(
        "{TENANT_ID}", "{CLIENT_ID}", secret,
        authority=base, disable_instance_discovery=True, connection_verify=ca)
    # The vault is 127.0.0.1, not *.vault.azure.net: skip only the domain check.
    return SecretClient(vault_url=base, credential=credential,
                        verify_challenge_resource=False, connection_verify=ca)

good = client("{CLIENT_SECRET}")
latest = good.get_secret("mlflow-cred")
print("latest", latest.value, latest.properties.enabled, latest.properties.version is not None)
print("pinned", good.get_secret("mlflow-cred", "{first}").value)
try:
    good.get_secret("no-such-secret")
except ResourceNotFoundError as e:
    print("missing", type(e).__name__, e.error.code)
try:
    client("wrong-secret").get_secret("mlflow-cred")
except ClientAuthenticationError as e:
    print("refused", "AADSTS7000215" in str(e))

# Workload identity: the federated token file, as `client_assertion`.
from azure.identity import ManagedIdentityCredential, WorkloadIdentityCredential
federated = WorkloadIdentityCredential(
    tenant_id="{TENANT_ID}", client_id="{CLIENT_ID}", token_file_path=sys.argv[3],
    authority=base, disable_instance_discovery=True, connection_verify=ca)
print("workload", SecretClient(vault_url=base, credential=federated,
      verify_challenge_resource=False, connection_verify=ca).get_secret("mlflow-cred").value)
# Managed identity: IDENTITY_ENDPOINT and IDENTITY_HEADER from the environment.
for identity in [ManagedIdentityCredential(connection_verify=ca),
                 ManagedIdentityCredential(client_id="{CLIENT_ID}", connection_verify=ca)]:
    print("managed", SecretClient(vault_url=base, credential=identity,
          verify_challenge_resource=False, connection_verify=ca).get_secret("mlflow-cred").value)
"#
    );
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "projected-sa-token-py").unwrap();
    double.trust_federated_token("projected-sa-token-py");
    let output = std::process::Command::new(python)
        .arg("-c")
        .arg(&script)
        .arg(double.url())
        .arg(double.ca_path())
        .arg(&token_file)
        .env("IDENTITY_ENDPOINT", double.identity_endpoint())
        .env("IDENTITY_HEADER", IDENTITY_HEADER)
        .env("REQUESTS_CA_BUNDLE", double.ca_path())
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            r#"latest {"token": "tok-v2"} True True"#,
            r#"pinned {"token": "tok-v1"}"#,
            "missing ResourceNotFoundError SecretNotFound",
            "refused True",
            r#"workload {"token": "tok-v2"}"#,
            r#"managed {"token": "tok-v2"}"#,
            r#"managed {"token": "tok-v2"}"#,
        ],
        "{stderr}"
    );
    assert_eq!(double.assertions(), ["projected-sa-token-py"]);
}

#[tokio::test]
async fn a_pinned_version_is_served_after_rotation_and_latest_means_current() {
    let double = AzureKeyVault::start();
    let first = double.set_secret("pinned", "tok-one");
    double.set_secret("pinned", "tok-two");
    let pinned = provider(&double, "pinned").version(&first).build().unwrap();
    assert_eq!(fetch(&pinned).await.unwrap(), token("tok-one"));
    assert!(pinned.secret_ref().ends_with(&format!(":pinned:{first}")));
    let fetched = pinned.fetch().await.unwrap();
    assert_eq!(fetched.meta.version.as_deref(), Some(first.as_str()));

    let latest = provider(&double, "pinned")
        .version("latest")
        .build()
        .unwrap();
    assert_eq!(fetch(&latest).await.unwrap(), token("tok-two"));
    assert!(latest.secret_ref().ends_with(":pinned:latest"));

    let missing = provider(&double, "pinned")
        .version("0123456789abcdef0123456789abcdef")
        .build()
        .unwrap();
    assert_eq!(
        fetch(&missing).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test]
async fn a_disabled_secret_is_rejected_not_denied_nor_transient() {
    let double = AzureKeyVault::start();
    double.set_secret_with("off", "tok-off", false, None);
    let err = fetch(&provider(&double, "off").build().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Rejected, "{err}");
    assert!(!err.is_transient());
    assert!(err.to_string().contains("disabled"), "{err}");
    assert!(!err.to_string().contains("tok-off"));
}

#[tokio::test]
async fn the_expiry_bounds_the_validity_and_an_expired_secret_is_refused() {
    let double = AzureKeyVault::start();
    double.set_secret_with("expiring", "tok-exp", true, Some(unix_now() + 600));
    let fetched = provider(&double, "expiring")
        .build()
        .unwrap()
        .fetch()
        .await
        .unwrap();
    let valid_for = fetched.meta.valid_for.expect("exp is reported");
    assert!(
        valid_for <= Duration::from_secs(600) && valid_for >= Duration::from_secs(590),
        "{valid_for:?}"
    );

    double.set_secret_with("expired", "tok-old", true, Some(unix_now() - 60));
    let err = fetch(&provider(&double, "expired").build().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Rejected, "{err}");
    assert!(err.to_string().contains("expired"), "{err}");
}

#[tokio::test]
async fn both_challenge_forms_work_and_the_token_is_reused() {
    let double = AzureKeyVault::start();
    double.set_secret("chal", "tok-chal");
    let provider = provider(&double, "chal").build().unwrap();
    assert_eq!(fetch(&provider).await.unwrap(), token("tok-chal"));
    assert_eq!(fetch(&provider).await.unwrap(), token("tok-chal"));
    assert_eq!(double.token_requests(), 1, "the token is cached by the SDK");
    assert_eq!(double.secret_reads(), 2);

    let scoped = AzureKeyVault::start();
    scoped.set_challenge(Challenge::Scope);
    scoped.set_secret("chal", "tok-scope");
    let provider = self::provider(&scoped, "chal").build().unwrap();
    assert_eq!(fetch(&provider).await.unwrap(), token("tok-scope"));
}

#[tokio::test]
async fn a_wrong_client_secret_is_permission_denied_naming_the_credential() {
    let double = AzureKeyVault::start();
    double.set_secret("guarded", "tok-guarded");
    let provider = provider(&double, "guarded")
        .credential(client_secret("not-the-secret"))
        .build()
        .unwrap();
    let err = fetch(&provider).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    let text = err.to_string();
    assert!(text.contains("ClientSecretCredential"), "{text}");
    assert!(text.contains("AADSTS7000215"), "{text}");
    assert!(!text.contains("not-the-secret"), "{text}");
    assert_eq!(double.secret_reads(), 0);
}

#[tokio::test]
async fn a_denied_identity_is_permission_denied_with_the_service_code() {
    let double = AzureKeyVault::start();
    double.set_secret("denied", "tok-denied");
    double.set_mode(Mode::Denied);
    let err = fetch(&provider(&double, "denied").build().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(err.to_string().contains("HTTP 403 Forbidden"), "{err}");
}

#[tokio::test]
async fn throttling_surfaces_with_its_retry_after() {
    let double = AzureKeyVault::start();
    double.set_secret("busy", "tok-busy");
    double.set_mode(Mode::Throttled(7));
    let err = fetch(&provider(&double, "busy").build().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Throttled, "{err}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    assert_eq!(double.secret_reads(), 1, "the SDK's own retries are off");
}

#[tokio::test]
async fn a_server_error_is_transient_and_not_retried_by_the_sdk() {
    let double = AzureKeyVault::start();
    double.set_secret("flaky", "tok-flaky");
    double.set_mode(Mode::Failing);
    let err = fetch(&provider(&double, "flaky").build().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert_eq!(double.secret_reads(), 1);
}

#[tokio::test]
async fn a_hanging_vault_times_out_within_the_configured_timeout() {
    let double = AzureKeyVault::start();
    double.set_secret("slow", "tok-slow");
    double.set_mode(Mode::Hanging);
    let provider = provider(&double, "slow")
        .request_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    // The double never answers: the call ends only by its own timeout,
    // and not before it.
    let started = Instant::now();
    let err = or_hang("a fetch from a silent Key Vault", fetch(&provider))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(took >= Duration::from_millis(300), "{took:?}");
}

#[tokio::test]
async fn the_challenge_resource_must_match_the_vault_domain() {
    let double = AzureKeyVault::start();
    double.set_secret("domain", "tok-domain");
    // The vault addressed by IP: the challenge's resource (vault.azure.net)
    // does not match, and the SDK refuses to send a token there.
    let provider = provider(&double, "domain")
        .vault_url(double.url())
        .build()
        .unwrap();
    let err = fetch(&provider).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert_eq!(double.token_requests(), 0, "no token for a foreign vault");
}

/// The suite's declared incapability holds: a name with `/` is refused
/// before any call, as a configuration error naming the variable.
#[tokio::test]
async fn a_name_with_slashes_is_refused_before_any_call() {
    let double = AzureKeyVault::start();
    let err = provider(&double, "team/mlflow/auth-8").build().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(
        err.to_string().contains("MLFLOW_AZURE_SECRET_NAME"),
        "{err}"
    );
    assert_eq!(
        (double.token_requests(), double.secret_reads()),
        (0, 0),
        "nothing was sent"
    );
}

#[tokio::test]
async fn workload_identity_reads_the_token_file_again_at_each_token_request() {
    let double = AzureKeyVault::start();
    double.set_secret("federated", "tok-federated");
    // Tokens inside the SDK's 5-minute refresh window: every fetch asks anew.
    double.set_token_lifetime(60);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("azure-identity-token");
    let fresh = || {
        provider(&double, "federated")
            .credential(AzureCredential::WorkloadIdentity {
                tenant_id: TENANT_ID.to_owned(),
                client_id: CLIENT_ID.to_owned(),
                token_file: file.clone(),
            })
            .build()
            .unwrap()
    };
    let provider = fresh();

    // No file yet: a configuration error naming the variable, nothing sent.
    let err = fetch(&provider).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(
        err.to_string().contains("AZURE_FEDERATED_TOKEN_FILE"),
        "{err}"
    );
    assert_eq!(double.token_requests(), 0);

    for token in ["projected-sa-token-1", "projected-sa-token-2"] {
        double.trust_federated_token(token);
        std::fs::write(&file, format!("{token}\n")).unwrap();
        assert_eq!(
            fetch(&provider).await.unwrap(),
            self::token("tok-federated")
        );
    }
    assert_eq!(
        double.assertions(),
        ["projected-sa-token-1", "projected-sa-token-2"],
        "the rotated file's token is the next assertion"
    );

    // A client whose token is still valid keeps it when a new one is
    // refused (the SDK's policy); a new client shows the refusal.
    std::fs::write(&file, "projected-sa-token-of-another-account").unwrap();
    let err = fetch(&fresh()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    let text = err.to_string();
    assert!(text.contains("AADSTS700213"), "{text}");
    assert!(!text.contains("projected-sa-token"), "{text}");

    std::fs::write(&file, "  \n").unwrap();
    let err = fetch(&fresh()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("is empty"), "{err}");
}

#[tokio::test]
async fn managed_identity_gets_its_token_from_the_identity_endpoint() {
    let double = AzureKeyVault::start();
    double.set_secret("managed", "tok-managed");
    let endpoint = double.identity_endpoint();
    let credential = |vars: &[(&str, &str)]| {
        AzureCredential::from_env(&mlflow_secrets_auth_core::Env::new(&vars)).unwrap()
    };
    let base = [
        ("IDENTITY_ENDPOINT", endpoint.as_str()),
        ("IDENTITY_HEADER", IDENTITY_HEADER),
        ("PATH", "/nonexistent"),
    ];
    let mut user_assigned = base.to_vec();
    user_assigned.push(("AZURE_CLIENT_ID", CLIENT_ID));
    for vars in [base.to_vec(), user_assigned] {
        let provider = provider(&double, "managed")
            .credential(credential(&vars))
            .build()
            .unwrap();
        assert_eq!(fetch(&provider).await.unwrap(), token("tok-managed"));
    }
    assert_eq!(double.token_requests(), 2);

    // An identity not assigned to the resource, and a wrong header: refused,
    // naming the credential, never showing the header.
    let mut other = base.to_vec();
    other.push(("AZURE_CLIENT_ID", "00000000-0000-0000-0000-000000000000"));
    let mut wrong_header = base.to_vec();
    wrong_header[1] = ("IDENTITY_HEADER", "not-the-identity-header");
    for vars in [other, wrong_header] {
        let provider = provider(&double, "managed")
            .credential(credential(&vars))
            .build()
            .unwrap();
        let err = fetch(&provider).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
        let text = err.to_string();
        assert!(text.contains("ManagedIdentityCredential"), "{text}");
        assert!(text.contains("IDENTITY_ENDPOINT answered HTTP"), "{text}");
        assert!(!text.contains("not-the-identity-header"), "{text}");
    }
    assert_eq!(double.secret_reads(), 2);
}

#[tokio::test]
async fn the_identity_header_never_follows_a_redirect() {
    use secrets_testkit::capture::CaptureServer;
    let double = AzureKeyVault::start();
    double.set_secret("managed", "tok-managed");
    let thief = CaptureServer::start();
    let endpoint = CaptureServer::start();
    endpoint.route(
        "/msi/token",
        302,
        &[("Location", &format!("{}/stolen", thief.url()))],
        "",
    );
    let provider = provider(&double, "managed")
        .credential(AzureCredential::IdentityEndpoint {
            endpoint: format!("{}/msi/token", endpoint.url()),
            header: IDENTITY_HEADER.into(),
            client_id: None,
        })
        .build()
        .unwrap();
    let err = fetch(&provider).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(err.to_string().contains("redirect"), "{err}");
    assert!(!err.to_string().contains(IDENTITY_HEADER), "{err}");
    assert_eq!(endpoint.requests().len(), 1);
    assert!(thief.requests().is_empty(), "the header went nowhere else");
}
