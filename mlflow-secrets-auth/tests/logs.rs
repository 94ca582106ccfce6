//! Logs at `trace` through a whole flow — fetch, hits, a redirect to a
//! presigned URL, a refusal, invalidation, stale serving during an outage, a
//! failing auth mode — contain neither the secret, nor its base64 form, nor
//! the signature: through the redacting subscriber and through a plain one. Alone in its test binary: `tracing` caches
//! per-callsite interest, and concurrent tests without a subscriber could
//! race with the scoped one installed here.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use mlflow_secrets_auth::{AuthMode, FileProvider, LogLevel, ProviderSettings, SecretsAuth};
use mlflow_secrets_auth_cache::ManualClock;
use secrets_testkit::hostile::{Answer, HostileKit};

#[allow(dead_code)]
mod common;
use common::{URL, backend, config, settings};

/// Collects everything the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const PASSWORD: &str = "pw-never-logged-93c1e";
const SIGNATURE: &str = "sig-never-logged-5d0a7";

/// Fetch, hits, invalidation, stale serving during an outage, a failing
/// auth mode, and the middleware through a redirect whose target carries a
/// presigned signature, a refusal and a resend.
fn flow() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let Some(backend) = backend(
            "logs",
            "mlflow/basic",
            &format!(r#"{{"username": "mlflow-user", "password": "{PASSWORD}"}}"#),
        ) else {
            return;
        };
        let clock = Arc::new(ManualClock::new());
        let mut allowing_loopback = config();
        allowing_loopback.allowlist =
            mlflow_secrets_auth::HostAllowlist::parse("mlflow.example.com, 127.0.0.1").unwrap();
        let auth = SecretsAuth::builder()
            .config(allowing_loopback)
            .provider(
                backend.provider("mlflow/basic"),
                ProviderSettings {
                    auth_mode: AuthMode::Basic,
                    ttl: Duration::from_secs(60),
                },
            )
            .clock(clock.clone())
            .build();
        for _ in 0..3 {
            auth.header_for(URL).await.unwrap().unwrap();
        }
        let kit = HostileKit::start();
        kit.script(
            "allowed",
            "/start",
            vec![Answer::redirect(
                302,
                &format!("/refuse?X-Amz-Signature={SIGNATURE}"),
            )],
        );
        kit.script("allowed", "/refuse", vec![Answer::status(401)]);
        let client = mlflow_secrets_auth::middleware::client(auth.clone()).unwrap();
        let response = client
            .get(format!("{}/start", kit.url("allowed")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        auth.invalidate();
        auth.header_for(URL).await.unwrap();
        backend.go_down();
        clock.advance(Duration::from_secs(61));
        auth.header_for(URL).await.unwrap();
        let mut bearer = config();
        bearer.header_name = "X-MLflow-Auth".parse().unwrap();
        let wrong_mode = SecretsAuth::builder()
            .config(bearer)
            .provider(backend.provider("mlflow/basic"), settings(60))
            .build();
        backend.proxy.clear();
        assert!(wrong_mode.header_for(URL).await.is_err());
    });
}

/// A plain `tracing_subscriber` at TRACE, as a user would install one,
/// writing into `logs`.
fn plain(logs: &Captured) -> impl tracing::Subscriber + Send + Sync + use<> {
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish()
}

fn assert_clean(logs: &Captured) {
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("credential fetched") && text.contains("following redirect"),
        "trace logs were captured:\n{text}"
    );
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("mlflow-user:{PASSWORD}"));
    assert!(!text.contains(PASSWORD), "{text}");
    assert!(!text.contains(&encoded), "{text}");
    assert!(!text.contains(SIGNATURE), "{text}");
}

/// One test for both subscribers, one after the other: `tracing` caches
/// per-callsite interest, which concurrent tests could race on.
#[test]
fn trace_logs_never_contain_the_secret() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = mlflow_secrets_auth::subscriber(LogLevel::Trace, move || writer.clone());
    tracing::subscriber::with_default(subscriber, flow);
    assert_clean(&logs);

    // A plain subscriber of the user's own, without our redaction.
    let logs = Captured::default();
    tracing::subscriber::with_default(plain(&logs), flow);
    assert_clean(&logs);

    // OAuth2 with a plain subscriber: the client secrets, the private key,
    // the assertions and the access tokens are in no line.
    let logs = Captured::default();
    let hidden = tracing::subscriber::with_default(plain(&logs), oauth_flow);
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    if !hidden.is_empty() {
        assert!(
            text.contains("the IdP refused the client"),
            "trace logs were captured:\n{text}"
        );
    }
    for value in &hidden {
        assert!(!text.contains(value.as_str()), "{text}");
    }
    // A JWT (an assertion, or a JWT access token) starts with `eyJ`.
    assert!(!text.contains("eyJ"), "{text}");

    // A withheld credential is warned about once per (host, reason).
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = mlflow_secrets_auth::subscriber(LogLevel::Warning, move || writer.clone());
    tracing::subscriber::with_default(subscriber, withheld);
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let said: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("no credential sent to this host"))
        .collect();
    assert_eq!(said.len(), 3, "{text}");
    for (host, why) in [
        ("other.example", "host not allowed"),
        ("third.example", "host not allowed"),
        ("mlflow.example.com", "the redirect chain left https"),
    ] {
        assert_eq!(
            said.iter()
                .filter(|l| l.contains(host) && l.contains(why))
                .count(),
            1,
            "{host}: {text}"
        );
    }
    assert!(
        said.iter()
            .all(|l| l.contains("MLFLOW_SECRETS_ALLOWED_HOSTS"))
    );
}

/// Tokens for a client with a secret (Basic and in the body), and for one
/// with a key (`private_key_jwt`, JWT access tokens), and a refused secret;
/// what must never be logged.
fn oauth_flow() -> Vec<String> {
    use mlflow_secrets_auth::Env;
    use mlflow_secrets_auth::secrecy::ExposeSecret;
    use secrets_testkit::oidc::{OidcClient, OidcServer};

    const SECRET: &str = "oauth-secret-never-logged-71";
    let with_secret = OidcClient::new("logged-client", SECRET, "client_secret_basic");
    let posting = OidcClient::new("posting-client", SECRET, "client_secret_post");
    let keyed = OidcClient::with_key("keyed-client", "key-1");
    let Some(idp) = OidcServer::start(
        "logs: OAuth2",
        &[with_secret.clone(), posting.clone(), keyed.clone()],
        Duration::from_secs(600),
    ) else {
        return Vec::new();
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (pem, _) = keyed.key.clone().unwrap();
    let mut hidden = vec![
        SECRET.to_owned(),
        base64::engine::general_purpose::STANDARD.encode(format!("logged-client:{SECRET}")),
    ];
    hidden.extend(
        pem.lines()
            .filter(|l| !l.starts_with("-----"))
            .map(str::to_owned),
    );
    let dir = tempfile::tempdir().unwrap();
    let token_url = idp.token_url();
    for (client, method, resource) in [
        (&with_secret, "client_secret_basic", ""),
        (&posting, "client_secret_post", ""),
        (&keyed, "private_key_jwt", "https://mlflow.example.test"),
    ] {
        let stored = client.store_in(dir.path());
        let mut vars = vec![
            ("MLFLOW_SECRETS_AUTH_ENABLE", "file"),
            ("MLFLOW_SECRETS_FILE_PATH", stored.as_str()),
            ("MLFLOW_SECRETS_ALLOWED_HOSTS", "mlflow.example.com"),
            ("MLFLOW_SECRETS_OAUTH_TOKEN_URL", token_url.as_str()),
            ("MLFLOW_SECRETS_OAUTH_CLIENT_AUTH", method),
        ];
        if !resource.is_empty() {
            vars.push(("MLFLOW_SECRETS_OAUTH_RESOURCE", resource));
        }
        let auth = SecretsAuth::from_source(&Env::new(&vars.as_slice())).unwrap();
        let header = runtime.block_on(auth.header_for(URL)).unwrap().unwrap();
        let token = header
            .value()
            .expose_secret()
            .strip_prefix("Bearer ")
            .unwrap();
        // The provider introspects its opaque tokens only; a JWT says whose it is.
        if resource.is_empty() {
            assert!(idp.issued_to(token, &client.id));
        } else {
            assert!(token.starts_with("eyJ"), "a JWT access token");
        }
        hidden.push(token.to_owned());
    }
    // A secret the IdP refuses: read again, refused again, an error.
    let wrong = OidcClient::new("logged-client", "wrong-secret-never-logged", "");
    let stored = wrong.store_in(dir.path());
    let vars = [
        ("MLFLOW_SECRETS_AUTH_ENABLE", "file"),
        ("MLFLOW_SECRETS_FILE_PATH", stored.as_str()),
        ("MLFLOW_SECRETS_ALLOWED_HOSTS", "mlflow.example.com"),
        ("MLFLOW_SECRETS_OAUTH_TOKEN_URL", token_url.as_str()),
    ];
    let auth = SecretsAuth::from_source(&Env::new(&vars.as_slice())).unwrap();
    assert!(runtime.block_on(auth.header_for(URL)).is_err());
    hidden.push("wrong-secret-never-logged".to_owned());
    hidden
}

/// Withholds the credential from two hosts (each many times) and from an
/// https → http redirect.
fn withheld() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    std::fs::write(&path, "tok-withheld").unwrap();
    let auth = SecretsAuth::builder()
        .config(config())
        .provider(FileProvider::new(path), settings(60))
        .build();
    for _ in 0..5 {
        for url in [
            "http://other.example/a",
            "http://other.example/b",
            "https://third.example/",
        ] {
            let url = mlflow_secrets_auth::Url::parse(url).unwrap();
            assert!(!auth.permits(&url).unwrap());
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let first = mlflow_secrets_auth::Url::parse("https://mlflow.example.com/a").unwrap();
    let second = mlflow_secrets_auth::Url::parse("http://mlflow.example.com/b").unwrap();
    for _ in 0..3 {
        let (hop, header) = runtime
            .block_on(auth.hop(Some(&first), true, &second))
            .unwrap();
        assert!(header.is_none() && hop.left_https);
    }
}
