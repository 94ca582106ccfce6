//! OAuth2 client credentials against a real OpenID provider (panva's
//! `oidc-provider` on loopback): the stored client is exchanged for an
//! access token, which the IdP itself confirms (introspection); requests to
//! the IdP are counted by a proxy in front of it, not by the code under test.

use std::time::Duration;

use mlflow_secrets_auth::secrecy::ExposeSecret;
use mlflow_secrets_auth::{Env, ErrorKind, SecretsAuth};
use secrets_testkit::fault::FaultProxy;
use secrets_testkit::hostile::{Answer, HostileKit};
use secrets_testkit::oidc::{OidcClient, OidcServer};

const URL: &str = "http://127.0.0.1:5000/api/2.0/mlflow/experiments/search";

/// A client id and secret holding what hand-written Basic encoders get
/// wrong: `:`, `%`, `+`, `&`, `=` and spaces (RFC 6749 allows printable ASCII only).
const AWKWARD_ID: &str = "mlflow ci:runner%1+x";
const AWKWARD_SECRET: &str = "s3cr:t %25 +plus ~&x=1";

fn idp(test: &str) -> Option<OidcServer> {
    OidcServer::start(
        test,
        &[
            OidcClient::new(AWKWARD_ID, AWKWARD_SECRET, "client_secret_basic"),
            OidcClient::new("posting-client", AWKWARD_SECRET, "client_secret_post"),
            OidcClient::new("plain-client", "plain-secret-1", "client_secret_basic"),
            keyed(),
        ],
        Duration::from_secs(600),
    )
}

/// The `private_key_jwt` client: the same key in every call, so the IdP
/// started with it verifies the assertions signed with it.
fn keyed() -> OidcClient {
    static CLIENT: std::sync::OnceLock<OidcClient> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| OidcClient::with_key("keyed-client", "key-1"))
        .clone()
}

/// A file holding `secret`, and the variables of the file provider with the
/// OAuth2 exchange at `token_url`.
fn vars(
    dir: &tempfile::TempDir,
    secret: &str,
    endpoint: (&'static str, String),
    extra: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    let path = dir.path().join("client.json");
    std::fs::write(&path, secret).unwrap();
    let mut vars = vec![
        ("MLFLOW_SECRETS_AUTH_ENABLE", "file".to_owned()),
        ("MLFLOW_SECRETS_FILE_PATH", path.display().to_string()),
        ("MLFLOW_SECRETS_ALLOWED_HOSTS", "127.0.0.1".to_owned()),
        // A retry would make a refused request count twice.
        ("MLFLOW_SECRETS_BASE_DELAY", "0.01".to_owned()),
        endpoint,
    ];
    vars.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    vars
}

/// The IdP behind a proxy that counts the requests reaching it.
struct Counted {
    idp: OidcServer,
    proxy: FaultProxy,
    dir: tempfile::TempDir,
}

impl Counted {
    fn start(test: &str) -> Option<Self> {
        let idp = idp(test)?;
        let proxy = FaultProxy::start(idp.addr());
        let dir = tempfile::tempdir().unwrap();
        Some(Self { idp, proxy, dir })
    }

    /// The variables for the client `secret`, its token requests counted.
    fn vars(&self, secret: &str, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        let endpoint = format!("{}/token", self.proxy.url());
        vars(
            &self.dir,
            secret,
            ("MLFLOW_SECRETS_OAUTH_TOKEN_URL", endpoint),
            extra,
        )
    }
}

fn auth(vars: &[(&'static str, String)]) -> SecretsAuth {
    let borrowed: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    SecretsAuth::from_source(&Env::new(&borrowed.as_slice())).unwrap()
}

fn client_json(id: &str, secret: &str) -> String {
    serde_json::json!({"client_id": id, "client_secret": secret}).to_string()
}

/// The token in a `Bearer` header value.
fn bearer(value: &str) -> &str {
    value.strip_prefix("Bearer ").expect("a Bearer header")
}

#[tokio::test]
async fn each_client_auth_method_gets_a_token_the_idp_issued() {
    let Some(idp) = idp("oauth: client auth methods") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let keyed = keyed();
    for (id, method, stored) in [
        (
            AWKWARD_ID,
            "client_secret_basic",
            client_json(AWKWARD_ID, AWKWARD_SECRET),
        ),
        (
            "posting-client",
            "client_secret_post",
            client_json("posting-client", AWKWARD_SECRET),
        ),
        // Twice: each assertion has its own jti (the IdP refuses a replay).
        (&keyed.id, "private_key_jwt", keyed.stored()),
        (&keyed.id, "private_key_jwt", keyed.stored()),
    ] {
        let vars = vars(
            &dir,
            &stored,
            ("MLFLOW_SECRETS_OAUTH_TOKEN_URL", idp.token_url()),
            &[
                ("MLFLOW_SECRETS_OAUTH_CLIENT_AUTH", method),
                ("MLFLOW_SECRETS_OAUTH_SCOPE", "mlflow"),
            ],
        );
        let header = auth(&vars).header_for(URL).await.unwrap().unwrap();
        let token = bearer(header.value().expose_secret()).to_owned();
        assert!(
            idp.issued_to(&token, id),
            "{method}: the IdP does not know the token"
        );
    }
    // The bare secret with the client id in its variable; the issuer's
    // discovery document names the token endpoint.
    let vars = vars(
        &dir,
        "plain-secret-1\n",
        ("MLFLOW_SECRETS_OAUTH_ISSUER", idp.issuer()),
        &[("MLFLOW_SECRETS_OAUTH_CLIENT_ID", "plain-client")],
    );
    let header = auth(&vars).header_for(URL).await.unwrap().unwrap();
    assert!(idp.issued_to(bearer(header.value().expose_secret()), "plain-client"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_callers_with_an_empty_cache_make_one_token_request() {
    let Some(counted) = Counted::start("oauth: one token request") else {
        return;
    };
    let vars = counted.vars(&client_json("plain-client", "plain-secret-1"), &[]);
    let auth = auth(&vars);
    let calls: Vec<_> = (0..200)
        .map(|_| {
            let auth = auth.clone();
            tokio::spawn(async move { auth.header_for(URL).await })
        })
        .collect();
    let mut tokens = std::collections::HashSet::new();
    for call in calls {
        let header = call.await.unwrap().unwrap().unwrap();
        tokens.insert(header.value().expose_secret().to_owned());
    }
    assert_eq!(tokens.len(), 1, "every caller got the one token");
    assert_eq!(
        counted.proxy.forwarded(),
        1,
        "one token request for 200 callers"
    );
}

#[tokio::test]
async fn a_refused_scope_is_a_config_error_after_one_request() {
    let Some(counted) = Counted::start("oauth: invalid scope") else {
        return;
    };
    let vars = counted.vars(
        &client_json("plain-client", "plain-secret-1"),
        &[("MLFLOW_SECRETS_OAUTH_SCOPE", "admin")],
    );
    let error = auth(&vars).header_for(URL).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Config, "{error}");
    let text = error.to_string();
    assert!(text.contains("MLFLOW_SECRETS_OAUTH_SCOPE"), "{text}");
    assert!(text.contains("invalid_scope"), "{text}");
    assert!(!text.contains("plain-secret-1"), "{text}");
    assert_eq!(counted.proxy.forwarded(), 1, "no retries of a config error");
}

#[tokio::test]
async fn a_wrong_secret_names_the_client_and_its_provider_never_the_secret() {
    let Some(idp) = idp("oauth: invalid client") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let wrong = vars(
        &dir,
        &client_json("plain-client", "not-the-secret-77"),
        ("MLFLOW_SECRETS_OAUTH_TOKEN_URL", idp.token_url()),
        &[],
    );
    let error = auth(&wrong).header_for(URL).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::PermissionDenied, "{error}");
    let text = error.to_string();
    assert!(
        text.contains("`plain-client`") && text.contains("`file`"),
        "{text}"
    );
    assert!(!text.contains("not-the-secret-77"), "{text}");
    // A key the IdP does not know for the client: the IdP checks the
    // signature, so the assertion is refused the same way.
    let stranger = OidcClient::with_key(&keyed().id, "key-1");
    let unknown_key = vars(
        &dir,
        &stranger.stored(),
        ("MLFLOW_SECRETS_OAUTH_TOKEN_URL", idp.token_url()),
        &[("MLFLOW_SECRETS_OAUTH_CLIENT_AUTH", "private_key_jwt")],
    );
    let error = auth(&unknown_key).header_for(URL).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::PermissionDenied, "{error}");
    let text = error.to_string();
    assert!(text.contains("`keyed-client`"), "{text}");
    assert!(!text.contains("PRIVATE KEY"), "{text}");
}

#[tokio::test]
async fn discovery_sends_nothing_to_a_plain_http_endpoint_or_for_another_issuer() {
    let kit = HostileKit::start();
    let issuer = kit.url("allowed");
    let dir = tempfile::tempdir().unwrap();
    for (document, says) in [
        (
            serde_json::json!({"issuer": issuer, "token_endpoint": "http://idp.example.com/token"}),
            "must be https",
        ),
        (
            serde_json::json!({"issuer": "https://elsewhere.example", "token_endpoint": format!("{issuer}/token")}),
            "names the issuer",
        ),
    ] {
        kit.reset();
        kit.script(
            "allowed",
            "/.well-known/openid-configuration",
            vec![Answer {
                body: document.to_string(),
                ..Answer::status(200).header("Content-Type", "application/json")
            }],
        );
        let vars = vars(
            &dir,
            &client_json("plain-client", "plain-secret-1"),
            ("MLFLOW_SECRETS_OAUTH_ISSUER", issuer.clone()),
            &[],
        );
        let error = auth(&vars).header_for(URL).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Config, "{error}");
        let text = error.to_string();
        assert!(
            text.contains("MLFLOW_SECRETS_OAUTH_ISSUER") && text.contains(says),
            "{text}"
        );
        let seen = kit.requests("allowed");
        assert!(
            seen.iter().all(|r| r.method == "GET"),
            "only the discovery document was asked for: {seen:?}"
        );
        assert!(!kit.saw("allowed", "plain-secret-1"));
    }
}

#[tokio::test]
async fn a_rotated_client_secret_is_read_again_once_when_the_idp_refuses_it() {
    let Some(counted) = Counted::start("oauth: rotated client secret") else {
        return;
    };
    // The provider still holds the secret the IdP no longer accepts.
    let vars = counted.vars(
        &client_json("plain-client", "plain-secret-0-old"),
        &[("MLFLOW_SECRETS_MAX_RETRIES", "0")],
    );
    let auth = auth(&vars);
    let error = auth.header_for(URL).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::PermissionDenied, "{error}");
    // Refused, read again, the same: no second request with it.
    assert_eq!(counted.proxy.forwarded(), 1);
    // Rotated in the provider: the client kept is refused once, read again,
    // and the new one gets the token; no caller sees an error.
    std::fs::write(
        counted.dir.path().join("client.json"),
        client_json("plain-client", "plain-secret-1"),
    )
    .unwrap();
    let header = auth.header_for(URL).await.unwrap().unwrap();
    assert!(
        counted
            .idp
            .issued_to(bearer(header.value().expose_secret()), "plain-client")
    );
    assert_eq!(
        counted.proxy.forwarded(),
        3,
        "one refusal, then the new secret"
    );
    assert_eq!(counted.proxy.relayed(400) + counted.proxy.relayed(401), 2);
}

#[tokio::test]
async fn with_the_idp_down_a_token_serves_until_its_expiry_and_never_after() {
    use std::sync::Arc;

    use mlflow_secrets_auth::providers::oauth::{OAuthConfig, OAuthProvider};
    use mlflow_secrets_auth::{
        AuthMode, Config, FileProvider, HostAllowlist, ProviderSettings, Url,
    };
    use mlflow_secrets_auth_cache::ManualClock;
    use secrets_testkit::fault::Fault;

    let Some(Counted { idp, proxy, dir }) = Counted::start("oauth: IdP down") else {
        return;
    };
    let path = dir.path().join("client.json");
    std::fs::write(&path, client_json("plain-client", "plain-secret-1")).unwrap();
    let endpoint = Url::parse(&format!("{}/token", proxy.url())).unwrap();
    let tokens = OAuthProvider::new(
        FileProvider::new(&path),
        OAuthConfig::new(mlflow_secrets_auth::providers::oauth::Endpoint::TokenUrl(
            endpoint,
        )),
    )
    .unwrap();
    let mut config = Config::default();
    config.allowlist = HostAllowlist::parse("127.0.0.1").unwrap();
    config.max_retries = 0;
    config.breaker_threshold = 1000;
    // Stale answers for an hour — but never for a token past its expiry.
    config.stale_if_error = Some(Duration::from_secs(3600));
    let clock = Arc::new(ManualClock::new());
    let auth = SecretsAuth::builder()
        .config(config)
        .provider(
            tokens,
            ProviderSettings {
                auth_mode: AuthMode::Basic,
                ttl: Duration::from_secs(3600),
            },
        )
        .clock(clock.clone())
        .build();
    let first = auth.header_for(URL).await.unwrap().unwrap();
    let first = first.value().expose_secret().to_owned();
    assert!(
        first.starts_with("Bearer "),
        "a token is Bearer whatever the mode"
    );

    // The IdP goes down. The token lives 600 s and is kept 570 s (a tenth
    // off, at most 30 s): the refreshes ahead fail, callers keep the token.
    proxy.inject(Fault::new(
        "/token",
        503,
        r#"{"error":"temporarily_unavailable"}"#,
    ));
    clock.advance(Duration::from_secs(500));
    let kept = auth.header_for(URL).await.unwrap().unwrap();
    assert_eq!(kept.value().expose_secret(), first);
    // Past its expiry: an error that says why, not the expired token.
    clock.advance(Duration::from_secs(71));
    let error = auth.header_for(URL).await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(error.to_string().contains("503"), "{error}");
    // The IdP is back: a new token, no restart.
    proxy.clear();
    let again = auth.header_for(URL).await.unwrap().unwrap();
    let again = bearer(again.value().expose_secret());
    assert_ne!(again, bearer(&first));
    assert!(idp.issued_to(again, "plain-client"));
}

#[tokio::test]
async fn an_idp_answering_429_is_asked_again_after_its_retry_after() {
    use secrets_testkit::fault::Fault;

    let Some(counted) = Counted::start("oauth: 429 Retry-After") else {
        return;
    };
    counted.proxy.inject(
        Fault::new("/token", 429, r#"{"error":"slow_down"}"#)
            .with_header("Retry-After", "1")
            .times(1),
    );
    let vars = counted.vars(&client_json("plain-client", "plain-secret-1"), &[]);
    let started = std::time::Instant::now();
    let header = auth(&vars).header_for(URL).await.unwrap().unwrap();
    // A lower bound only: the retry waited what the IdP asked, not the
    // 10 ms base delay (a loaded machine can only make it longer).
    assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After");
    assert_eq!(counted.proxy.answered(), 1, "one 429");
    assert_eq!(
        counted.proxy.forwarded(),
        1,
        "then one request reached the IdP"
    );
    assert!(
        counted
            .idp
            .issued_to(bearer(header.value().expose_secret()), "plain-client")
    );
}

/// A run lasting five token lifetimes, logged through the middleware to a
/// real MLflow behind a gateway that lets only tokens the IdP signed through
/// (`jose` checks signature, audience and expiry — the oracle): no request
/// is refused anywhere, and the IdP is asked about once per 80 % of a
/// lifetime, never once per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_lasting_five_token_lifetimes_meets_no_refusal() {
    use secrets_testkit::mlflow::MlflowServer;
    use secrets_testkit::oidc::OidcGateway;

    const TEST: &str = "oauth: five token lifetimes";
    const LIFETIME: Duration = Duration::from_secs(4);
    const AUDIENCE: &str = "https://mlflow.example.test";
    let client = OidcClient::new("long-run", "long-run-secret", "client_secret_basic");
    let Some(idp) = OidcServer::start_one(TEST, &client, LIFETIME) else {
        return;
    };
    let Some(mlflow) = MlflowServer::start(TEST) else {
        return;
    };
    let Some(gateway) = OidcGateway::start(TEST, &idp, AUDIENCE, &mlflow) else {
        return;
    };
    let counter = FaultProxy::start(idp.addr());
    let dir = tempfile::tempdir().unwrap();
    let vars = vars(
        &dir,
        &client.stored(),
        (
            "MLFLOW_SECRETS_OAUTH_TOKEN_URL",
            format!("{}/token", counter.url()),
        ),
        &[("MLFLOW_SECRETS_OAUTH_RESOURCE", AUDIENCE)],
    );
    let http = mlflow_secrets_auth::middleware::client(auth(&vars)).unwrap();
    let api = |path: &str| format!("{}/api/2.0/mlflow/{path}", gateway.url());
    let post = |path: &str, body: serde_json::Value| {
        let request = http.post(api(path)).json(&body);
        let path = path.to_owned();
        async move {
            let answer = request.send().await.unwrap();
            let status = answer.status();
            let body = answer.text().await.unwrap();
            assert_eq!(status, 200, "{path}: {body}");
            serde_json::from_str::<serde_json::Value>(&body).unwrap()
        }
    };

    let started = std::time::Instant::now();
    let experiment = post(
        "experiments/create",
        serde_json::json!({"name": "long-run"}),
    )
    .await;
    let run = post(
        "runs/create",
        serde_json::json!({"experiment_id": experiment["experiment_id"]}),
    )
    .await;
    let run_id = run["run"]["info"]["run_id"].as_str().unwrap().to_owned();
    let mut logged = 0u64;
    while started.elapsed() < 5 * LIFETIME {
        let metric = serde_json::json!({
            "run_id": run_id, "key": "loss", "value": logged, "step": logged, "timestamp": 0,
        });
        post("runs/log-metric", metric).await;
        logged += 1;
    }
    let runtime = started.elapsed();

    let stats = gateway.stats();
    stats.assert_none_refused();
    // The oracle refuses what the IdP did not sign.
    let unsigned = reqwest::Client::builder().no_proxy().build().unwrap();
    let unsigned = unsigned
        .get(api("experiments/search?max_results=1"))
        .bearer_auth("eyJhbGciOiJub25lIn0.eyJhdWQiOiJodHRwczovL21sZmxvdy5leGFtcGxlLnRlc3QifQ.")
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401, "the gateway checks tokens");
    assert_eq!(
        stats.accepted,
        logged + 2,
        "every request passed the gateway"
    );
    let history = http
        .get(format!(
            "{}?run_id={run_id}&metric_key=loss",
            api("metrics/get-history")
        ))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(history["metrics"].as_array().unwrap().len() as u64, logged);
    // The IdP's requests, counted in front of it: the tokens rotated, about
    // once per 80 % of a lifetime.
    let token_requests = counter.forwarded();
    secrets_testkit::oidc::assert_rotated(token_requests, runtime, LIFETIME);
    // Tokens were reused: fewer token requests than requests. (How many
    // requests a token serves depends on the machine's speed — MLflow checks
    // its admin's password hash at every request — so no more is asserted;
    // the rotation bound above already caps the token requests by time.)
    assert!(
        logged > token_requests as u64,
        "{logged} requests, {token_requests} token requests: a token per request"
    );
}
