//! The middleware against hostile servers ([`HostileKit`]): redirects with
//! parser tricks, refusals followed by redirects, https→http downgrades,
//! chains across allowed hosts, refusal storms and streamed bodies — every
//! case with `Authorization` and with a custom header name, for a stored
//! credential and for an OAuth2 token from a real IdP. The thief
//! (127.0.0.2) records every header it receives; the oracle is what it saw.
//! Figures for the notes are printed (`--nocapture`).
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use mlflow_secrets_auth::middleware::client_from;
use mlflow_secrets_auth::{
    AuthMode, Config, FileProvider, HeaderName, HostAllowlist, ProviderSettings, SecretsAuth,
};
use reqwest_middleware::ClientWithMiddleware;
use secrets_testkit::hostile::{Answer, HostileKit};
use secrets_testkit::rfc3986::authority;

#[allow(dead_code)]
mod common;

const OLD: &str = "tok-hostile-old-7f3e1a";
const NEW: &str = "tok-hostile-new-0b9d44";
const HEADERS: [&str; 2] = ["Authorization", "X-MLflow-Auth"];

struct Scene {
    kit: HostileKit,
    auth: SecretsAuth,
    client: ClientWithMiddleware,
    header: &'static str,
    secret_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Scene {
    /// The kit, a file-backed credential (OLD) allowed on 127.0.0.1,
    /// localhost and 127.0.0.3, and a client trusting the kit's CA.
    fn new(header: &'static str) -> Self {
        let kit = HostileKit::start();
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("token");
        std::fs::write(&secret_file, OLD).unwrap();
        let mut config = Config::default();
        config.allowlist = HostAllowlist::parse("127.0.0.1, localhost, 127.0.0.3").unwrap();
        config.header_name = HeaderName::new(header).unwrap();
        let auth = SecretsAuth::builder()
            .config(config)
            .provider(
                FileProvider::new(&secret_file),
                ProviderSettings {
                    auth_mode: AuthMode::Bearer,
                    ttl: Duration::from_secs(300),
                },
            )
            .build();
        let ca = reqwest::Certificate::from_pem(kit.ca_pem().as_bytes()).unwrap();
        let builder = reqwest::Client::builder()
            .add_root_certificate(ca)
            .timeout(Duration::from_secs(10));
        let client = client_from(builder, auth.clone()).unwrap();
        Self {
            kit,
            auth,
            client,
            header: header_name(header),
            secret_file,
            _dir: dir,
        }
    }

    /// The value the server should see for `token`.
    fn value(&self, token: &str) -> String {
        if self.header == "Authorization" {
            format!("Bearer {token}")
        } else {
            token.to_owned()
        }
    }

    /// Caches OLD, then rotates the stored secret to NEW.
    async fn rotate_behind_the_cache(&self) {
        self.auth.warm().await.unwrap();
        std::fs::write(&self.secret_file, NEW).unwrap();
    }

    /// Whether `listener` ever received either credential, under any header.
    fn leaked_to(&self, listener: &str) -> bool {
        self.kit.saw(listener, OLD) || self.kit.saw(listener, NEW)
    }

    async fn get(&self, url: &str) -> Result<reqwest::Response, reqwest_middleware::Error> {
        self.client.get(url).send().await
    }
}

/// A credential from moto (through the counting proxy), allowed on 127.0.0.1,
/// and a middleware client.
fn moto_client(backend: &common::Backend, header: &str) -> (SecretsAuth, ClientWithMiddleware) {
    let mut config = common::config();
    config.allowlist = HostAllowlist::parse("127.0.0.1").unwrap();
    config.header_name = HeaderName::new(header).unwrap();
    let auth = SecretsAuth::builder()
        .config(config)
        .provider(backend.provider("mlflow/token"), common::settings(300))
        .build();
    let client = mlflow_secrets_auth::middleware::client(auth.clone()).unwrap();
    (auth, client)
}

fn header_name(header: &str) -> &'static str {
    HEADERS.into_iter().find(|h| *h == header).unwrap()
}

#[tokio::test]
async fn redirect_tricks_never_carry_the_credential_to_the_thief() {
    for header in HEADERS {
        let s = Scene::new(header);
        let tricks = s.kit.tricks();
        for (i, location) in tricks.iter().enumerate() {
            s.kit.script(
                "allowed",
                &format!("/trick{i}/"),
                vec![Answer::redirect(302, location)],
            );
            // Whatever the client makes of the target (follow, fail, stop), the
            // thief must see no credential.
            let _ = s.get(&format!("{}/trick{i}/", s.kit.url("allowed"))).await;
        }
        assert!(
            !s.leaked_to("thief"),
            "{header}: {:#?}",
            s.kit.requests("thief")
        );
        assert!(
            s.kit.requests("thief").len() >= 10,
            "{header}: most tricks reach the thief ({} did)",
            s.kit.requests("thief").len()
        );
        let seen = s.kit.requests("allowed");
        for i in 0..tricks.len() {
            let target = format!("/trick{i}/");
            assert!(
                seen.iter().any(|r| r.target == target),
                "{header}: {target}"
            );
        }
        println!(
            "{header}: {} redirect tricks, {} requests reached the thief, none with a credential",
            tricks.len(),
            s.kit.requests("thief").len()
        );
        assert!(s.kit.saw("allowed", OLD), "{header}: allowed hops had it");
    }
}

#[tokio::test]
async fn remembered_plain_origins_never_decide_for_tricky_urls() {
    // `header_for(&str)` remembers the verdict of a plain origin; every trick
    // must still be judged on its own. Oracles: http::Uri's reading of the
    // URL the `url` crate produced, and RFC 3986's reading of the text as
    // given (written below, in no parser the library uses), must both be an
    // allowed host.
    for header in HEADERS {
        let s = Scene::new(header);
        let allowed = format!("{}/api", s.kit.url("allowed"));
        assert!(s.auth.header_for(&allowed).await.unwrap().is_some());
        assert!(
            s.auth.header_for(&allowed).await.unwrap().is_some(),
            "remembered"
        );
        let thief = format!("{}/steal", s.kit.url("thief"));
        let mut urls = s.kit.tricks();
        urls.push(thief.clone());
        urls.push(thief.replacen("127.0.0.2", "127.0.0.1@127.0.0.2", 1));
        for url in &urls {
            let Some(got) = s.auth.header_for(url).await.unwrap() else {
                continue;
            };
            let parsed = url::Url::parse(url).unwrap();
            let uri: http::Uri = parsed.as_str().parse().unwrap();
            assert!(
                matches!(uri.host(), Some("127.0.0.1" | "localhost" | "127.0.0.3")),
                "{header}: {url:?} got {got}"
            );
            let read = authority(url).map(|(host, _)| host);
            assert!(
                matches!(
                    read.as_deref(),
                    Some("127.0.0.1" | "localhost" | "127.0.0.3")
                ),
                "{header}: {url:?} got {got}; RFC 3986 reads {read:?}"
            );
        }
        assert!(
            s.auth.header_for(&thief).await.unwrap().is_none(),
            "{header}"
        );
    }
}

#[tokio::test]
async fn a_refusal_then_a_redirect_to_the_thief_carries_nothing() {
    for header in HEADERS {
        for status in [401, 403] {
            let s = Scene::new(header);
            s.rotate_behind_the_cache().await;
            s.kit.script(
                "allowed",
                "/refuse",
                vec![
                    Answer::status(status),
                    Answer::redirect(302, "http://{thief}/steal"),
                ],
            );
            let response = s
                .get(&format!("{}/refuse", s.kit.url("allowed")))
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{header} {status}");
            let seen = s.kit.requests("allowed");
            assert_eq!(seen.len(), 2, "{header} {status}: sent, resent once");
            assert_eq!(seen[0].header(header), Some(s.value(OLD).as_str()));
            assert_eq!(seen[1].header(header), Some(s.value(NEW).as_str()));
            assert_eq!(
                s.kit.requests("thief").len(),
                1,
                "the redirect was followed"
            );
            assert!(!s.leaked_to("thief"), "{header} {status}");
        }
    }
}

#[tokio::test]
async fn an_https_to_http_downgrade_gets_nothing_even_on_an_allowed_host() {
    for header in HEADERS {
        let s = Scene::new(header);
        let port = s.kit.port("allowed");
        s.kit.script(
            "tls",
            "/down",
            vec![Answer::redirect(
                302,
                &format!("http://localhost:{port}/landing"),
            )],
        );
        s.kit
            .script("allowed", "/landing", vec![Answer::redirect(302, "/again")]);
        let response = s.get(&format!("{}/down", s.kit.url("tls"))).await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(s.kit.saw("tls", OLD), "{header}: the https hop had it");
        let plain = s.kit.requests("allowed");
        assert_eq!(plain.len(), 2, "{header}: both plain hops were made");
        assert!(!s.leaked_to("allowed"), "{header}: {plain:#?}");
    }
}

#[tokio::test]
async fn redirects_between_allowed_hosts_keep_it_and_a_third_hop_to_the_thief_drops_it() {
    for header in HEADERS {
        let s = Scene::new(header);
        s.kit.script(
            "allowed",
            "/start",
            vec![Answer::redirect(307, "http://{other}/hop")],
        );
        s.kit.script(
            "other",
            "/hop",
            vec![Answer::redirect(302, "http://{thief}/end")],
        );
        let response = s
            .client
            .post(format!("{}/start", s.kit.url("allowed")))
            .body("payload")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let other = s.kit.requests("other");
        assert_eq!(
            other[0].header(header),
            Some(s.value(OLD).as_str()),
            "{header}"
        );
        assert_eq!(other[0].method, "POST", "307 keeps the method");
        assert_eq!(s.kit.requests("thief").len(), 1);
        assert!(!s.leaked_to("thief"), "{header}");
    }
}

#[tokio::test]
async fn cookies_and_proxy_credentials_are_stripped_on_a_change_of_host() {
    let s = Scene::new("X-MLflow-Auth");
    s.kit.script(
        "allowed",
        "/start",
        vec![Answer::redirect(302, "http://{other}/next")],
    );
    s.client
        .get(format!("{}/start", s.kit.url("allowed")))
        .header("Cookie", "session=abc")
        .header("Authorization", "Basic dXNlcjpwdw==")
        .header("Proxy-Authorization", "Basic cHJveHk6cHc=")
        .send()
        .await
        .unwrap();
    let first = &s.kit.requests("allowed")[0];
    assert_eq!(first.header("cookie"), Some("session=abc"));
    let next = &s.kit.requests("other")[0];
    for name in ["cookie", "authorization", "proxy-authorization"] {
        assert_eq!(next.header(name), None, "{name}");
    }
    assert_eq!(
        next.header("x-mlflow-auth"),
        Some(OLD),
        "allowed: re-attached"
    );
}

#[tokio::test]
async fn rotation_recovers_with_exactly_one_refetch() {
    for header in HEADERS {
        let s = Scene::new(header);
        s.rotate_behind_the_cache().await;
        s.kit.script(
            "allowed",
            "/api",
            vec![Answer::status(401).pass_if(header, &s.value(NEW))],
        );
        let response = s
            .get(&format!("{}/api", s.kit.url("allowed")))
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{header}");
        assert_eq!(s.auth.stats().fetches, 2, "{header}");
        assert_eq!(s.kit.requests("allowed").len(), 2);
    }
}

#[tokio::test]
async fn twenty_refusals_of_a_valid_credential_cause_at_most_two_backend_fetches() {
    let Some(backend) = common::backend("refusal_storm", "mlflow/token", OLD) else {
        return;
    };
    for header in HEADERS {
        let before = backend.proxy.forwarded();
        let kit = HostileKit::start();
        let (_, client) = moto_client(&backend, header);
        kit.script("allowed", "/forbidden", vec![Answer::status(403)]);
        for _ in 0..20 {
            let response = client
                .get(format!("{}/forbidden", kit.url("allowed")))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 403);
        }
        let fetches = backend.proxy.forwarded() - before;
        println!("{header}: 20 consecutive 403s → {fetches} backend fetches");
        assert!(fetches <= 2, "{header}: {fetches} fetches");
        assert_eq!(
            kit.requests("allowed").len(),
            20,
            "{header}: the same credential is never resent"
        );
    }
}

#[tokio::test]
async fn a_refusal_during_an_outage_keeps_serving_the_previous_credential() {
    let Some(backend) = common::backend("refusal_outage", "mlflow/token", OLD) else {
        return;
    };
    let kit = HostileKit::start();
    let (auth, client) = moto_client(&backend, "Authorization");
    kit.script("allowed", "/forbidden", vec![Answer::status(403)]);
    auth.warm().await.unwrap();
    backend.go_down();
    let response = client
        .get(format!("{}/forbidden", kit.url("allowed")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let response = client
        .get(format!("{}/ok", kit.url("allowed")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let last = kit.requests("allowed").pop().unwrap();
    assert_eq!(
        last.header("authorization"),
        Some(format!("Bearer {OLD}").as_str()),
        "the stale fallback survived the invalidation"
    );
}

#[tokio::test]
async fn a_streamed_body_is_never_resent_and_nothing_hangs() {
    for header in HEADERS {
        let s = Scene::new(header);
        s.rotate_behind_the_cache().await;
        s.kit
            .script("allowed", "/upload", vec![Answer::status(401)]);
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            vec![Ok(vec![7; 4096]), Ok(vec![8; 4096])];
        let body = reqwest::Body::wrap_stream(futures_stream(chunks));
        let started = Instant::now();
        let response = s
            .client
            .put(format!("{}/upload", s.kit.url("allowed")))
            .body(body)
            .send()
            .await
            .unwrap();
        let took = started.elapsed();
        println!("{header}: streamed PUT answered 401 in {took:?}");
        assert_eq!(
            response.status(),
            401,
            "{header}: the refusal comes back as is"
        );
        let seen = s.kit.requests("allowed");
        assert_eq!(seen.len(), 1, "{header}: not resent");
        assert!(
            seen[0].body_complete && seen[0].body_len == 8192,
            "{seen:?}"
        );
    }
}

/// A stream of `chunks` (without pulling in a stream crate).
fn futures_stream(
    chunks: Vec<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + Sync + 'static {
    struct Chunks(std::vec::IntoIter<Result<Vec<u8>, std::io::Error>>);
    impl futures_core::Stream for Chunks {
        type Item = Result<Vec<u8>, std::io::Error>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            std::task::Poll::Ready(self.0.next())
        }
    }
    Chunks(chunks.into_iter())
}

#[test]
fn the_path_that_does_not_wait_never_answers_for_the_thief() {
    // `header_for_cached` (taken first by the blocking face and the Python
    // plugin) answers from remembered verdicts of plain origins and a fresh
    // entry. Every URL a client could be pointed at is asked through it and
    // through the blocking face once the allowed origin is warm; whatever
    // comes back is sent, as a client would, to that URL (no redirects
    // followed). Oracle: the thief's own record of what it received.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for header in HEADERS {
        // The kit's servers run on this runtime; the blocking face must be
        // called outside it.
        let s = {
            let _inside = runtime.enter();
            Scene::new(header)
        };
        let sync = mlflow_secrets_auth::blocking::SecretsAuth::new(s.auth.clone()).unwrap();
        let allowed = format!("{}/api", s.kit.url("allowed"));
        assert!(sync.header_for(&allowed).unwrap().is_some());
        let warm = s.auth.header_for_cached(&allowed);
        assert!(matches!(warm, Some(Some(_))), "{header}: warm and judged");

        let thief = format!("{}/steal", s.kit.url("thief"));
        let mut urls = s.kit.tricks();
        urls.push(thief.clone());
        // The thief's plain origin judged once, then asked again from memory.
        assert!(sync.header_for(&thief).unwrap().is_none(), "{header}");
        assert!(
            matches!(s.auth.header_for_cached(&thief), Some(None)),
            "{header}: remembered as refused"
        );
        let ca = reqwest::Certificate::from_pem(s.kit.ca_pem().as_bytes()).unwrap();
        let plain = reqwest::Client::builder()
            .add_root_certificate(ca)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let mut sent = 0;
        for url in &urls {
            let cached = s.auth.header_for_cached(url).flatten();
            let blocking = sync.header_for(url).unwrap();
            for got in [cached, blocking].into_iter().flatten() {
                sent += 1;
                let name = got.name().as_str().to_owned();
                let value = mlflow_secrets_auth::secrecy::ExposeSecret::expose_secret(got.value())
                    .to_owned();
                let _ = runtime.block_on(async { plain.get(url).header(name, value).send().await });
            }
        }
        assert!(
            !s.leaked_to("thief"),
            "{header}: the thief saw the credential"
        );
        // Control: the same sending does reach an allowed host.
        let got = sync.header_for(&allowed).unwrap().unwrap();
        let value =
            mlflow_secrets_auth::secrecy::ExposeSecret::expose_secret(got.value()).to_owned();
        let name = got.name().as_str();
        runtime
            .block_on(async { plain.get(&allowed).header(name, value).send().await })
            .unwrap();
        assert!(s.kit.saw("allowed", &s.value(OLD)), "{header}: control");
        println!(
            "{header}: {} tricky URLs asked, {sent} answered with a credential",
            urls.len()
        );
    }
}

#[tokio::test]
async fn an_oauth_token_keeps_to_the_same_hops_and_a_refusal_brings_a_new_one() {
    use mlflow_secrets_auth::providers::oauth::{Endpoint, OAuthConfig, OAuthProvider};
    use secrets_testkit::fault::FaultProxy;
    use secrets_testkit::oidc::{OidcClient, OidcServer};

    let client = OidcClient::new(
        "hostile-client",
        "hostile-client-secret-4",
        "client_secret_basic",
    );
    let Some(idp) =
        OidcServer::start_one("hostile: OAuth2 token", &client, Duration::from_secs(600))
    else {
        return;
    };
    let counted = FaultProxy::start(idp.addr());
    let dir = tempfile::tempdir().unwrap();
    let stored = client.store_in(dir.path());
    let endpoint = mlflow_secrets_auth::Url::parse(&format!("{}/token", counted.url())).unwrap();
    for header in HEADERS {
        let kit = HostileKit::start();
        let mut config = Config::default();
        config.allowlist = HostAllowlist::parse("127.0.0.1, localhost, 127.0.0.3").unwrap();
        config.header_name = HeaderName::new(header).unwrap();
        let tokens = OAuthProvider::new(
            FileProvider::new(&stored),
            OAuthConfig::new(Endpoint::TokenUrl(endpoint.clone())),
        )
        .unwrap();
        let auth = SecretsAuth::builder()
            .config(config)
            .provider(
                tokens,
                ProviderSettings {
                    auth_mode: AuthMode::Bearer,
                    ttl: Duration::from_secs(300),
                },
            )
            .build();
        let ca = reqwest::Certificate::from_pem(kit.ca_pem().as_bytes()).unwrap();
        let client = client_from(
            reqwest::Client::builder()
                .add_root_certificate(ca)
                .timeout(Duration::from_secs(10)),
            auth.clone(),
        )
        .unwrap();
        let token_in = |value: &str| value.trim_start_matches("Bearer ").to_owned();
        let requested = counted.forwarded();

        // Refused: resent once with a new token from the IdP, then a
        // redirect to the thief, which gets nothing.
        kit.script(
            "allowed",
            "/refuse",
            vec![
                Answer::status(401),
                Answer::redirect(302, "http://{thief}/steal"),
            ],
        );
        let refused = format!("{}/refuse", kit.url("allowed"));
        assert_eq!(client.get(&refused).send().await.unwrap().status(), 200);
        let seen = kit.requests("allowed");
        assert_eq!(seen.len(), 2, "{header}: sent, resent once");
        let first = token_in(seen[0].header(header).expect("the first had a token"));
        let second = token_in(seen[1].header(header).expect("the resend had one"));
        assert_ne!(first, second, "{header}: the resend carries a new token");
        for token in [&first, &second] {
            assert!(idp.issued_to(token, "hostile-client"), "{header}");
        }
        assert_eq!(
            counted.forwarded() - requested,
            2,
            "{header}: two exchanges"
        );

        // An https→http downgrade, and every redirect trick.
        let port = kit.port("allowed");
        kit.script(
            "tls",
            "/down",
            vec![Answer::redirect(
                302,
                &format!("http://localhost:{port}/landing"),
            )],
        );
        let down = client.get(format!("{}/down", kit.url("tls"))).send().await;
        assert_eq!(down.unwrap().status(), 200, "{header}");
        assert!(kit.saw("tls", &second), "{header}: the https hop had it");
        for (i, location) in kit.tricks().iter().enumerate() {
            kit.script(
                "allowed",
                &format!("/trick{i}/"),
                vec![Answer::redirect(302, location)],
            );
            let _ = client
                .get(format!("{}/trick{i}/", kit.url("allowed")))
                .send()
                .await;
        }
        for token in [&first, &second] {
            assert!(
                !kit.saw("thief", token),
                "{header}: {:#?}",
                kit.requests("thief")
            );
        }
        let landed: Vec<_> = kit
            .requests("allowed")
            .into_iter()
            .filter(|r| r.target == "/landing")
            .collect();
        assert_eq!(landed.len(), 1, "{header}");
        assert_eq!(
            landed[0].header(header),
            None,
            "{header}: no token after a downgrade"
        );
        assert!(
            kit.requests("thief")
                .iter()
                .all(|r| r.header(header).is_none()),
            "{header}"
        );
    }
}
