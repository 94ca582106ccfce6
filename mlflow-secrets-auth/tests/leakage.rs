//! The middleware never lets the credential reach a host outside the
//! allowlist: not directly, not through URL userinfo tricks, not after a
//! redirect — with `Authorization` and with a custom header name. Servers
//! that record every header they receive stand on three loopback addresses:
//! 127.0.0.1 and 127.0.0.3 are allowed, 127.0.0.2 is not.

use std::time::Duration;

use mlflow_secrets_auth::middleware::client;
use mlflow_secrets_auth::{
    AuthMode, Config, FileProvider, HeaderName, HostAllowlist, ProviderSettings, SecretsAuth,
};
use secrets_testkit::capture::CaptureServer;

const TOKEN: &str = "tok-leak-check-d41d8c";

struct Setup {
    allowed: CaptureServer,
    evil: CaptureServer,
    other_allowed: CaptureServer,
    client: reqwest_middleware::ClientWithMiddleware,
    _dir: tempfile::TempDir,
}

/// A `SecretsAuth` serving TOKEN from a file, with `config`.
fn file_auth(config: Config) -> (SecretsAuth, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, TOKEN).unwrap();
    let auth = SecretsAuth::builder()
        .config(config)
        .provider(
            FileProvider::new(&path),
            ProviderSettings {
                auth_mode: AuthMode::Bearer,
                ttl: Duration::from_secs(300),
            },
        )
        .build();
    (auth, dir)
}

fn setup(header: &str) -> Setup {
    let mut config = Config::default();
    config.allowlist = HostAllowlist::parse("127.0.0.1, 127.0.0.3").unwrap();
    config.header_name = HeaderName::new(header).unwrap();
    let (auth, dir) = file_auth(config);
    Setup {
        allowed: CaptureServer::start_on("127.0.0.1:0"),
        evil: CaptureServer::start_on("127.0.0.2:0"),
        other_allowed: CaptureServer::start_on("127.0.0.3:0"),
        client: client(auth).unwrap(),
        _dir: dir,
    }
}

const HEADERS: [&str; 2] = ["Authorization", "X-MLflow-Auth"];

#[tokio::test]
async fn allowed_hosts_get_the_credential_with_either_header() {
    for header in HEADERS {
        let s = setup(header);
        let response = s
            .client
            .get(format!("{}/api", s.allowed.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let request = &s.allowed.requests()[0];
        let expected = if header == "Authorization" {
            format!("Bearer {TOKEN}")
        } else {
            TOKEN.to_owned()
        };
        assert_eq!(request.header(header), Some(expected.as_str()), "{header}");
    }
}

#[tokio::test]
async fn disallowed_hosts_and_userinfo_tricks_never_see_it() {
    for header in HEADERS {
        let s = setup(header);
        let port = s.evil.port();
        for url in [
            format!("http://127.0.0.2:{port}/api"),
            format!("http://127.0.0.1@127.0.0.2:{port}/api"),
            format!("http://127.0.0.1:{port}@127.0.0.2:{port}/api"),
        ] {
            let response = s.client.get(&url).send().await.unwrap();
            assert_eq!(response.status(), 200, "{url}");
        }
        assert_eq!(s.evil.requests().len(), 3);
        assert!(!s.evil.saw(TOKEN), "{header}: {:?}", s.evil.requests());
    }
}

#[tokio::test]
async fn a_redirect_to_a_disallowed_host_drops_the_credential() {
    for header in HEADERS {
        let s = setup(header);
        let target = format!("{}/landing", s.evil.url());
        s.allowed.route("/start", 302, &[("Location", &target)], "");
        let response = s
            .client
            .get(format!("{}/start", s.allowed.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(s.allowed.saw(TOKEN), "{header}: the first hop had it");
        assert_eq!(s.evil.requests().len(), 1, "the redirect was followed");
        assert!(!s.evil.saw(TOKEN), "{header}: {:?}", s.evil.requests());
    }
}

#[tokio::test]
async fn a_redirect_to_another_allowed_host_keeps_it() {
    for header in HEADERS {
        let s = setup(header);
        let target = format!("{}/landing", s.other_allowed.url());
        s.allowed.route("/start", 307, &[("Location", &target)], "");
        s.client
            .post(format!("{}/start", s.allowed.url()))
            .body("payload")
            .send()
            .await
            .unwrap();
        assert!(s.other_allowed.saw(TOKEN), "{header}");
        assert_eq!(
            s.other_allowed.requests()[0].method,
            "POST",
            "307 keeps the method"
        );
    }
}

#[tokio::test]
async fn redirect_chains_are_checked_hop_by_hop_and_bounded() {
    let s = setup("Authorization");
    let to_evil = format!("{}/end", s.evil.url());
    let to_other = format!("{}/hop", s.other_allowed.url());
    s.allowed
        .route("/start", 302, &[("Location", &to_other)], "");
    s.other_allowed
        .route("/hop", 301, &[("Location", &to_evil)], "");
    s.client
        .get(format!("{}/start", s.allowed.url()))
        .send()
        .await
        .unwrap();
    assert!(s.other_allowed.saw(TOKEN));
    assert!(!s.evil.saw(TOKEN));

    s.allowed.route("/loop", 302, &[("Location", "/loop")], "");
    let response = s
        .client
        .get(format!("{}/loop", s.allowed.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302, "gives up after the redirect limit");
}

#[tokio::test]
async fn a_401_is_not_resent_when_the_backend_holds_the_same_credential() {
    let s = setup("Authorization");
    s.allowed.route("/denied", 401, &[], "no");
    for _ in 0..3 {
        let response = s
            .client
            .get(format!("{}/denied", s.allowed.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    }
    assert_eq!(s.allowed.requests().len(), 3, "never resent");
}

#[tokio::test]
async fn plain_http_to_a_remote_host_is_refused_under_require_tls() {
    let mut config = Config::default();
    config.require_tls = true;
    let (auth, _dir) = file_auth(config);
    let err = auth
        .header_for("http://mlflow.example.com/api")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("MLFLOW_SECRETS_REQUIRE_TLS"),
        "{err}"
    );
    assert!(
        auth.header_for("http://127.0.0.1:5000/api")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        auth.header_for("https://mlflow.example.com/api")
            .await
            .unwrap()
            .is_some()
    );
}

/// Under REQUIRE_TLS, plain http carries the credential to `localhost`
/// itself, never to another `*.localhost` name: a resolver may send that to
/// DNS. The client resolves every name here to a loopback server itself, so
/// a name wrongly taken as loopback would hand the server the credential.
#[tokio::test]
async fn under_require_tls_only_localhost_itself_is_loopback() {
    for header in HEADERS {
        let mut config = Config::default();
        config.require_tls = true;
        config.allowlist = HostAllowlist::parse("127.0.0.1, localhost, *.localhost").unwrap();
        config.header_name = HeaderName::new(header).unwrap();
        let (auth, _dir) = file_auth(config);
        let allowed = CaptureServer::start_on("127.0.0.1:0");
        let named = CaptureServer::start_on("127.0.0.2:0");
        // Port 0: the URL's port is used.
        let named_addr: std::net::SocketAddr = "127.0.0.2:0".parse().unwrap();
        let builder = reqwest::Client::builder()
            .resolve("localhost", named_addr)
            .resolve("x.localhost", named_addr);
        let client = mlflow_secrets_auth::middleware::client_from(builder, auth).unwrap();
        let port = named.port();

        // `localhost` itself: plain http is fine.
        let response = client
            .get(format!("http://localhost:{port}/itself"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(named.saw(TOKEN), "{header}: localhost got no credential");

        // Another `*.localhost` name: refused before anything is sent.
        let before = named.requests().len();
        let err = client
            .get(format!("http://x.localhost:{port}/direct"))
            .send()
            .await
            .unwrap_err();
        assert!(
            format!("{err:?}").contains("MLFLOW_SECRETS_REQUIRE_TLS"),
            "{err:?}"
        );
        // A redirect there from an allowed loopback address: not followed
        // with the credential either.
        let target = format!("http://x.localhost:{port}/landing");
        allowed.route("/start", 302, &[("Location", &target)], "");
        let _ = client.get(format!("{}/start", allowed.url())).send().await;
        let after: Vec<_> = named.requests().into_iter().skip(before).collect();
        assert!(
            after.iter().all(|r| r.header(header).is_none()),
            "{header}: x.localhost got the credential: {after:?}"
        );
    }
}
