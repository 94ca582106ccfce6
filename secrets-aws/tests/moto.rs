//! The AWS Secrets Manager provider against a real moto server on loopback:
//! the conformance cases, versions by stage and id, ARNs, and failures
//! (denied, deleted, connection refused, a backend that never answers).

use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::Credentials;
use aws_sdk_secretsmanager::primitives::Blob;
use mlflow_secrets_auth_aws::{AwsSecretsManagerBuilder, AwsSecretsManagerProvider, SecretVersion};
use mlflow_secrets_auth_conformance::SecretStore;
use mlflow_secrets_auth_conformance::cases::fetch_credential;
use mlflow_secrets_auth_core::{Credential, ErrorKind, SecretProvider};
use secrets_testkit::moto::{ACCESS_KEY, MotoServer, REGION, SECRET_KEY};
use secrets_testkit::net::{Blackhole, closed_port};
use secrets_testkit::or_hang;

/// A provider builder for `name` on the server at `url`.
fn provider(url: &str, name: &str) -> AwsSecretsManagerBuilder {
    AwsSecretsManagerProvider::builder()
        .secret_id(name)
        .region(REGION)
        .endpoint_url(url)
        .static_credentials(ACCESS_KEY, SECRET_KEY)
        .request_timeout(Duration::from_secs(5))
}

struct MotoStore {
    server: MotoServer,
    admin: Client,
}

async fn moto_store(test: &str) -> Option<MotoStore> {
    let server = MotoServer::start(test)?;
    let config = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(server.url())
        .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test"))
        .load()
        .await;
    let admin = Client::new(&config);
    Some(MotoStore { server, admin })
}

#[async_trait]
impl SecretStore for MotoStore {
    async fn put_text(&self, name: &str, text: &str) {
        let created = self
            .admin
            .create_secret()
            .name(name)
            .secret_string(text)
            .send()
            .await;
        if created.is_err() {
            self.admin
                .put_secret_value()
                .secret_id(name)
                .secret_string(text)
                .send()
                .await
                .expect("put_secret_value");
        }
    }

    async fn put_binary(&self, name: &str, bytes: &[u8]) {
        self.admin
            .create_secret()
            .name(name)
            .secret_binary(Blob::new(bytes))
            .send()
            .await
            .expect("create_secret (binary)");
    }

    fn provider(&self, name: &str) -> Box<dyn SecretProvider> {
        Box::new(provider(&self.server.url(), name).build().unwrap())
    }
}

// Secrets Manager can express every case.
mlflow_secrets_auth_conformance::conformance_suite!(moto_store);

fn token(text: &str) -> Credential {
    Credential::Token(text.into())
}

async fn fetch(
    provider: AwsSecretsManagerProvider,
) -> mlflow_secrets_auth_core::Result<Credential> {
    provider.fetch().await?.credential()
}

#[tokio::test]
async fn version_by_stage() {
    let Some(store) = moto_store("version_by_stage").await else {
        return;
    };
    store.put_text("staged", "tok-current").await;
    store
        .admin
        .put_secret_value()
        .secret_id("staged")
        .secret_string("tok-pending")
        .version_stages("AWSPENDING")
        .send()
        .await
        .unwrap();
    let pending = provider(&store.server.url(), "staged")
        .version(SecretVersion::Stage("AWSPENDING".into()))
        .build()
        .unwrap();
    assert_eq!(pending.secret_ref(), "aws:us-east-1:staged:AWSPENDING");
    assert_eq!(fetch(pending).await.unwrap(), token("tok-pending"));
    assert_eq!(
        fetch_credential(&store, "staged").await,
        token("tok-current")
    );
}

#[tokio::test]
async fn version_by_id() {
    let Some(store) = moto_store("version_by_id").await else {
        return;
    };
    let first = store
        .admin
        .create_secret()
        .name("by-id")
        .secret_string("tok-v1")
        .send()
        .await
        .unwrap()
        .version_id
        .expect("a version id");
    store.put_text("by-id", "tok-v2").await;
    let old = provider(&store.server.url(), "by-id")
        .version(SecretVersion::parse(&first))
        .build()
        .unwrap();
    let fetched = old.fetch().await.unwrap();
    assert_eq!(fetched.meta.version.as_deref(), Some(first.as_str()));
    assert_eq!(fetched.credential().unwrap(), token("tok-v1"));
    assert_eq!(fetch_credential(&store, "by-id").await, token("tok-v2"));
}

#[tokio::test]
async fn secret_by_arn() {
    let Some(store) = moto_store("secret_by_arn").await else {
        return;
    };
    let arn = store
        .admin
        .create_secret()
        .name("by-arn")
        .secret_string(r#"{"token": "tok-arn"}"#)
        .send()
        .await
        .unwrap()
        .arn
        .expect("an ARN");
    assert!(arn.starts_with("arn:aws:secretsmanager:"), "{arn}");
    let by_arn = provider(&store.server.url(), &arn).build().unwrap();
    assert_eq!(fetch(by_arn).await.unwrap(), token("tok-arn"));
}

#[tokio::test]
async fn secret_scheduled_for_deletion_is_rejected_with_the_aws_message() {
    let Some(store) = moto_store("deleted").await else {
        return;
    };
    store.put_text("doomed", "tok-doomed").await;
    store
        .admin
        .delete_secret()
        .secret_id("doomed")
        .send()
        .await
        .unwrap();
    let err = store.provider("doomed").fetch().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Rejected, "{err}");
    assert!(!err.is_transient());
    assert!(err.to_string().contains("InvalidRequestException"), "{err}");
    assert!(!err.to_string().contains("tok-doomed"));
}

#[tokio::test]
async fn unknown_credentials_are_permission_denied() {
    // moto checks credentials against its own IAM when told to.
    let Some(server) =
        MotoServer::start_with_env("denied", &[("INITIAL_NO_AUTH_ACTION_COUNT", "0")])
    else {
        return;
    };
    let denied = provider(&server.url(), "any")
        .static_credentials("AKIAUNKNOWNUNKNOWN00", "not-a-real-secret-key")
        .build()
        .unwrap();
    let err = denied.fetch().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(!err.to_string().contains("not-a-real-secret-key"));
}

#[tokio::test]
async fn connection_refused_is_transient() {
    let refused = provider(&format!("http://{}", closed_port()), "any")
        .build()
        .unwrap();
    let err = or_hang("a refused fetch", refused.fetch())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
}

#[tokio::test]
async fn a_backend_that_never_answers_times_out_within_the_request_timeout() {
    let hole = Blackhole::start();
    let hanging = provider(&hole.url(), "any")
        .request_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    // The backend never answers: the call ends only by its own timeout,
    // and not before it.
    let start = Instant::now();
    let err = or_hang("a fetch from a silent backend", hanging.fetch())
        .await
        .unwrap_err();
    let took = start.elapsed();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.is_transient());
    assert!(took >= Duration::from_millis(400), "gave up after {took:?}");
}

#[tokio::test]
async fn one_provider_serves_repeated_fetches() {
    let Some(store) = moto_store("repeated_fetches").await else {
        return;
    };
    store.put_text("reused", "tok-reused").await;
    let reused = provider(&store.server.url(), "reused").build().unwrap();
    for _ in 0..3 {
        let fetched = reused.fetch().await.unwrap();
        assert_eq!(fetched.credential().unwrap(), token("tok-reused"));
    }
    store.server.reset();
    let err = reused.fetch().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}
