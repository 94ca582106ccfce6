//! The Vault provider against a real OpenBao dev server on loopback: the
//! conformance cases on KV v2 and KV v1 mounts, AppRole (login, wrong secret
//! id, denied path, a token revoked or expired between fetches), KV version
//! detection and its fallback, leases, namespaces, and failures (sealed,
//! down, a server that never answers); JWT login with the token file read
//! at every login, and the token lifecycle (renewal, `max_ttl`, a token the
//! user gave) counted at a proxy in front of the server.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use mlflow_secrets_auth_conformance::SecretStore;
use mlflow_secrets_auth_conformance::cases::fetch_credential;
use mlflow_secrets_auth_core::{Credential, ErrorKind, SecretProvider};
use mlflow_secrets_auth_vault::{VaultProvider, VaultProviderBuilder};
use secrets_testkit::fault::{Fault, FaultProxy};
use secrets_testkit::net::{Blackhole, closed_port};
use secrets_testkit::openbao::{OpenBao, ROOT_TOKEN};
use secrets_testkit::or_hang;
use serde_json::Value;

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Fetches and parses through `vault`, which must succeed.
async fn read(vault: &VaultProvider) -> Credential {
    vault.fetch().await.unwrap().credential().unwrap()
}

fn token(text: &str) -> Credential {
    Credential::Token(text.into())
}

/// A provider builder for `path` on `url` with the root token.
fn provider(url: &str, path: &str) -> VaultProviderBuilder {
    VaultProvider::builder()
        .address(url)
        .path(path)
        .token(ROOT_TOKEN)
        .request_timeout(Duration::from_secs(5))
}

/// A KV mount on a running server, as the conformance suite's store.
struct KvStore {
    bao: OpenBao,
    mount: &'static str,
    version: u8,
}

impl KvStore {
    fn write(&self, name: &str, data: &str) {
        let path = format!("{}/{name}", self.mount);
        if self.version == 2 {
            let body = format!(r#"{{"data": {data}}}"#);
            self.bao
                .admin("POST", &path.replacen('/', "/data/", 1), &body);
        } else {
            self.bao.admin("POST", &path, data);
        }
    }
}

#[async_trait]
impl SecretStore for KvStore {
    async fn put_text(&self, name: &str, text: &str) {
        assert!(
            json(text).is_object(),
            "Vault holds key/value maps; {text:?} is not one"
        );
        self.write(name, text);
    }

    async fn put_binary(&self, _name: &str, _bytes: &[u8]) {
        panic!("Vault has no binary secrets");
    }

    fn provider(&self, name: &str) -> Box<dyn SecretProvider> {
        let path = format!("{}/{name}", self.mount);
        Box::new(provider(&self.bao.url(), &path).build().unwrap())
    }
}

async fn kv2_store(test: &str) -> Option<KvStore> {
    let bao = OpenBao::start(test)?;
    Some(KvStore {
        bao,
        mount: "secret",
        version: 2,
    })
}

async fn kv1_store(test: &str) -> Option<KvStore> {
    let bao = OpenBao::start(test)?;
    bao.admin(
        "POST",
        "sys/mounts/kv1",
        r#"{"type": "kv", "options": {"version": "1"}}"#,
    );
    Some(KvStore {
        bao,
        mount: "kv1",
        version: 1,
    })
}

mod kv2 {
    use super::*;
    mlflow_secrets_auth_conformance::conformance_suite!(
        kv2_store;
        plain_text: "a Vault KV secret is a map of fields, never plain text";
        binary: "a Vault KV secret holds JSON values, not bytes"
    );
}

mod kv1 {
    use super::*;
    mlflow_secrets_auth_conformance::conformance_suite!(
        kv1_store;
        plain_text: "a Vault KV secret is a map of fields, never plain text";
        binary: "a Vault KV secret holds JSON values, not bytes"
    );
}

#[tokio::test]
async fn kv2_reads_by_logical_and_data_path_and_detects_the_mount() {
    let Some(store) = kv2_store("kv2_paths").await else {
        return;
    };
    store.write("mlflow/auth", r#"{"token": "tok-kv2"}"#);
    for path in ["secret/mlflow/auth", "secret/data/mlflow/auth"] {
        let vault = provider(&store.bao.url(), path).build().unwrap();
        let fetched = vault.fetch().await.unwrap();
        assert_eq!(fetched.credential().unwrap(), token("tok-kv2"), "{path}");
        let mount = vault.kv_mount().unwrap();
        assert_eq!((mount.mount.as_str(), mount.version), ("secret", 2));
        assert!(
            vault
                .describe()
                .to_string()
                .contains("kv=v2 (mount secret)")
        );
    }
}

#[tokio::test]
async fn kv1_lease_becomes_the_validity() {
    let Some(store) = kv1_store("kv1_lease").await else {
        return;
    };
    store.write("leased", r#"{"token": "tok-lease", "ttl": "30s"}"#);
    let fetched = store.provider("leased").fetch().await.unwrap();
    assert_eq!(fetched.meta.valid_for, Some(Duration::from_secs(30)));
    assert_eq!(fetched.credential().unwrap(), token("tok-lease"));
}

#[tokio::test]
async fn a_soft_deleted_kv2_secret_is_not_found() {
    let Some(store) = kv2_store("soft_deleted").await else {
        return;
    };
    store.write("gone", r#"{"token": "tok-gone"}"#);
    store.bao.admin("DELETE", "secret/data/gone", "");
    let err = store.provider("gone").fetch().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

/// A renewable token living `ttl` with the policy `mlflow-read`, as a user
/// would be given one.
fn renewable_token(bao: &OpenBao, ttl: &str) -> String {
    let body = serde_json::json!({"policies": ["mlflow-read"], "ttl": ttl, "renewable": true});
    json(
        &bao.admin("POST", "auth/token/create", &body.to_string())
            .body,
    )["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Enables AppRole with a role whose tokens may read `allowed` only.
fn approle(bao: &OpenBao, allowed: &str, token_ttl: &str) -> (String, String) {
    bao.admin("POST", "sys/auth/approle", r#"{"type": "approle"}"#);
    bao.read_policy(allowed);
    bao.admin(
        "POST",
        "auth/approle/role/mlflow",
        &serde_json::json!({
            "token_policies": ["mlflow-read"],
            "token_ttl": token_ttl,
            "token_max_ttl": token_ttl,
        })
        .to_string(),
    );
    let role_id = json(
        &bao.admin("GET", "auth/approle/role/mlflow/role-id", "")
            .body,
    )["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret_id = json(
        &bao.admin("POST", "auth/approle/role/mlflow/secret-id", "")
            .body,
    )["data"]["secret_id"]
        .as_str()
        .unwrap()
        .to_owned();
    (role_id, secret_id)
}

fn approle_provider(bao: &OpenBao, path: &str, role_id: &str, secret_id: &str) -> VaultProvider {
    VaultProvider::builder()
        .address(bao.url())
        .path(path)
        .approle(role_id, secret_id, "approle")
        .request_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

#[tokio::test]
async fn approle_end_to_end() {
    let Some(store) = kv2_store("approle").await else {
        return;
    };
    store.write(
        "mlflow/auth",
        r#"{"username": "ml", "password": "pw-approle"}"#,
    );
    store.write("other/team", r#"{"token": "tok-other"}"#);
    let (role_id, secret_id) = approle(&store.bao, "secret/data/mlflow/auth", "1h");

    let allowed = approle_provider(&store.bao, "secret/mlflow/auth", &role_id, &secret_id);
    assert_eq!(
        allowed.fetch().await.unwrap().credential().unwrap(),
        Credential::UserPassword {
            username: "ml".into(),
            password: "pw-approle".into()
        }
    );

    let denied_path = approle_provider(&store.bao, "secret/other/team", &role_id, &secret_id);
    let err = denied_path.fetch().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(err.to_string().contains("secret/other/team"), "{err}");

    let wrong_secret = approle_provider(
        &store.bao,
        "secret/mlflow/auth",
        &role_id,
        "00000000-0000-0000-0000-000000000000",
    );
    let err = wrong_secret.fetch().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(err.to_string().contains("AppRole login"), "{err}");
    assert!(!err.to_string().contains(&secret_id));
}

/// Revokes every token made by logins at `path` (`auth/approle/login`); how many.
fn revoke_tokens_of(bao: &OpenBao, path: &str) -> usize {
    let accessors = json(&bao.admin("LIST", "auth/token/accessors", "").body);
    let mut revoked = 0;
    for accessor in accessors["data"]["keys"].as_array().unwrap() {
        let lookup = bao.admin(
            "POST",
            "auth/token/lookup-accessor",
            &serde_json::json!({ "accessor": accessor }).to_string(),
        );
        if json(&lookup.body)["data"]["path"] == path {
            bao.admin(
                "POST",
                "auth/token/revoke-accessor",
                &serde_json::json!({ "accessor": accessor }).to_string(),
            );
            revoked += 1;
        }
    }
    revoked
}

/// An AppRole provider (tokens living `ttl`) of `secret/mlflow/auth` holding
/// `value`, after one successful fetch.
async fn approle_reader(store: &KvStore, value: &str, ttl: &str) -> VaultProvider {
    store.write("mlflow/auth", &format!(r#"{{"token": "{value}"}}"#));
    let (role_id, secret_id) = approle(&store.bao, "secret/data/mlflow/auth", ttl);
    let vault = approle_provider(&store.bao, "secret/mlflow/auth", &role_id, &secret_id);
    assert_eq!(read(&vault).await, token(value));
    vault
}

#[tokio::test]
async fn approle_logs_in_again_after_its_token_is_revoked() {
    let Some(store) = kv2_store("approle_revoked").await else {
        return;
    };
    let vault = approle_reader(&store, "tok-relogin", "1h").await;

    // Revoke every token the role has issued: the provider's token now gets 403.
    let revoked = revoke_tokens_of(&store.bao, "auth/approle/login");
    assert_eq!(revoked, 1, "the provider's token was revoked");
    assert_eq!(read(&vault).await, token("tok-relogin"));
}

#[tokio::test]
async fn approle_logs_in_again_when_its_token_expires() {
    let Some(store) = kv2_store("approle_expiry").await else {
        return;
    };
    let vault = approle_reader(&store, "tok-expiry", "1s").await;
    // The 1 s token expires (renewal is due after 0.8 s).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(read(&vault).await, token("tok-expiry"));
}

#[tokio::test]
async fn without_the_mounts_endpoint_kv2_and_kv1_are_found_by_trying() {
    let Some(store) = kv1_store("fallback").await else {
        return;
    };
    store.bao.admin(
        "POST",
        "secret/data/fb",
        r#"{"data": {"token": "tok-fb2"}}"#,
    );
    store.bao.admin("POST", "kv1/fb", r#"{"token": "tok-fb1"}"#);
    // A server (or policy) that refuses the mounts lookup.
    let proxy = FaultProxy::start(store.bao.addr());
    proxy.inject(Fault::new(
        "/v1/sys/internal/ui/mounts/",
        403,
        r#"{"errors": ["permission denied"]}"#,
    ));
    for (path, expected, version) in [("secret/fb", "tok-fb2", 2), ("kv1/fb", "tok-fb1", 1)] {
        let vault = provider(&proxy.url(), path).build().unwrap();
        assert_eq!(read(&vault).await, token(expected), "{path}");
        assert_eq!(vault.kv_mount().map(|m| m.version), Some(version), "{path}");
        // Remembered: the next fetch reads directly.
        let before = proxy.answered();
        vault.fetch().await.unwrap();
        assert_eq!(proxy.answered(), before, "no second lookup");
    }
    assert!(proxy.answered() >= 2, "the lookups were refused");
}

#[tokio::test]
async fn namespaces_are_honoured() {
    let Some(bao) = OpenBao::start("namespaces") else {
        return;
    };
    bao.admin("POST", "sys/namespaces/team-a", "");
    let in_ns = |method, path, body| {
        let response = bao.call(ROOT_TOKEN, Some("team-a"), method, path, body);
        assert!(response.status < 300, "{path}: {}", response.body);
    };
    in_ns(
        "POST",
        "sys/mounts/kv",
        r#"{"type": "kv", "options": {"version": "2"}}"#,
    );
    in_ns("POST", "kv/data/mlflow", r#"{"data": {"token": "tok-ns"}}"#);
    let vault = provider(&bao.url(), "kv/mlflow")
        .namespace("team-a")
        .build()
        .unwrap();
    assert_eq!(
        vault.secret_ref(),
        format!("vault:{}:team-a:kv/mlflow", bao.url())
    );
    assert_eq!(read(&vault).await, token("tok-ns"));
    let outside = provider(&bao.url(), "kv/mlflow").build().unwrap();
    assert!(
        outside.fetch().await.is_err(),
        "the secret exists only in team-a"
    );
}

#[tokio::test]
async fn a_sealed_server_is_transient() {
    let Some(store) = kv2_store("sealed").await else {
        return;
    };
    store.write("x", r#"{"token": "tok-sealed"}"#);
    store.bao.admin("PUT", "sys/seal", "");
    let err = store.provider("x").fetch().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert!(err.to_string().contains("503"), "{err}");
}

#[tokio::test]
async fn a_wrong_scheme_in_the_address_is_named_with_the_right_one() {
    let Some(plain) = OpenBao::start("plain-scheme") else {
        return;
    };
    let Some(tls) = OpenBao::start_tls("tls-scheme") else {
        return;
    };
    let swapped = |url: &str| {
        if let Some(rest) = url.strip_prefix("https://") {
            format!("http://{rest}")
        } else {
            format!("https://{}", url.trim_start_matches("http://"))
        }
    };
    for (server, ca) in [(&plain, None), (&tls, tls.ca_cert())] {
        let wrong = swapped(&server.url());
        let mut builder = provider(&wrong, "secret/x");
        if let Some(ca) = &ca {
            builder = builder.ca_cert(ca);
        }
        let err = builder.build().unwrap().fetch().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{wrong}: {err}");
        let right = server.url();
        assert!(
            err.to_string().starts_with("VAULT_ADDR: says ")
                && err
                    .to_string()
                    .contains(&format!("write {}", right.trim_end_matches('/'))),
            "{wrong}: {err}"
        );
    }
}

#[tokio::test]
async fn a_down_server_is_transient() {
    let vault = provider(&format!("http://{}", closed_port()), "secret/x")
        .build()
        .unwrap();
    let err = vault.fetch().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert_eq!(err.provider(), Some("vault"));
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_within_the_request_timeout() {
    let hole = Blackhole::start();
    let vault = provider(&hole.url(), "secret/x")
        .request_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    // The server never answers: the call ends only by its own timeout,
    // and not before it.
    let start = Instant::now();
    let err = or_hang("a fetch from a silent Vault", vault.fetch())
        .await
        .unwrap_err();
    let took = start.elapsed();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(took >= Duration::from_millis(400), "gave up after {took:?}");
}

#[tokio::test]
async fn fetch_credential_helper_reads_through_the_store() {
    let Some(store) = kv2_store("helper").await else {
        return;
    };
    store.put_text("h", r#"{"token": "tok-h"}"#).await;
    assert_eq!(fetch_credential(&store, "h").await, token("tok-h"));
}

#[tokio::test]
async fn tls_with_the_ca_certificate_and_without() {
    let Some(bao) = OpenBao::start_tls("tls") else {
        return;
    };
    let ca = bao.ca_cert().unwrap();
    let trusted = provider(&bao.url(), "secret/none")
        .ca_cert(&ca)
        .build()
        .unwrap();
    // The secret does not exist: reaching "not found" proves the TLS handshake.
    let err = trusted.fetch().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");

    let untrusted = provider(&bao.url(), "secret/none").build().unwrap();
    let err = untrusted.fetch().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("VAULT_CACERT"), "{err}");

    let unchecked = provider(&bao.url(), "secret/none")
        .skip_verify(true)
        .build()
        .unwrap();
    assert!(unchecked.warnings()[0].contains("VAULT_SKIP_VERIFY"));
    let err = unchecked.fetch().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");

    let missing_ca = provider(&bao.url(), "secret/none")
        .ca_cert("/nonexistent/ca.pem")
        .build()
        .unwrap();
    let err = missing_ca.fetch().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("VAULT_CACERT"), "{err}");
}

/// The suite's declared incapability holds on the real server: a KV secret
/// is a map of fields, and OpenBao refuses plain text in either version.
#[tokio::test]
async fn plain_text_is_refused_by_both_kv_versions() {
    for store in [kv2_store("plain-kv2").await, kv1_store("plain-kv1").await]
        .into_iter()
        .flatten()
    {
        let path = if store.version == 2 {
            format!("{}/data/conf-plain", store.mount)
        } else {
            format!("{}/conf-plain", store.mount)
        };
        let body = if store.version == 2 {
            r#"{"data": "bob:pw-conf-3"}"#
        } else {
            r#""bob:pw-conf-3""#
        };
        let refused = store.bao.root("POST", &path, body);
        assert_eq!(
            refused.status, 400,
            "KV v{}: {}",
            store.version, refused.body
        );
    }
}

/// A JWT issuer of the tests: an EC P-256 key whose public half OpenBao's
/// JWT auth trusts.
struct Issuer {
    key: rcgen::KeyPair,
}

impl Issuer {
    fn new() -> Self {
        Self {
            key: rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
        }
    }

    /// A JWT for `sub`, audience `vault`, valid ten minutes.
    fn jwt(&self, sub: &str) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = serde_json::json!({
            "iss": "https://ci.example.test", "sub": sub, "aud": "vault",
            "iat": now, "nbf": now - 5, "exp": now + 600,
        });
        let key =
            jsonwebtoken::EncodingKey::from_ec_pem(self.key.serialize_pem().as_bytes()).unwrap();
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
            &claims,
            &key,
        )
        .unwrap()
    }
}

/// JWT auth on `jwt` trusting `issuer`, a role `mlflow` for tokens with
/// audience `vault` and subject `job`, whose Vault tokens read
/// `secret/mlflow/auth` and live `ttl`, at most `max_ttl`.
fn jwt_auth(bao: &OpenBao, issuer: &Issuer, ttl: &str, max_ttl: &str) {
    bao.admin("POST", "sys/auth/jwt", r#"{"type": "jwt"}"#);
    bao.admin(
        "POST",
        "auth/jwt/config",
        &serde_json::json!({
            "jwt_validation_pubkeys": [issuer.key.public_key_pem()],
            "bound_issuer": "https://ci.example.test",
        })
        .to_string(),
    );
    bao.read_policy("secret/data/mlflow/auth");
    bao.admin(
        "POST",
        "auth/jwt/role/mlflow",
        &secrets_testkit::openbao::jwt_role(ttl, max_ttl).to_string(),
    );
}

/// OpenBao with JWT auth ([`jwt_auth`]), `secret/{name}` holding `value`, a
/// counting proxy in front, and a token file holding a JWT for `job`.
struct JwtBao {
    store: KvStore,
    issuer: Issuer,
    counter: FaultProxy,
    file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl JwtBao {
    async fn start(test: &str, name: &str, value: &str, ttl: &str, max_ttl: &str) -> Option<Self> {
        let store = kv2_store(test).await?;
        store.write(name, &format!(r#"{{"token": "{value}"}}"#));
        let issuer = Issuer::new();
        jwt_auth(&store.bao, &issuer, ttl, max_ttl);
        let counter = FaultProxy::start(store.bao.addr());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, issuer.jwt("job")).unwrap();
        Some(Self {
            store,
            issuer,
            counter,
            file,
            _dir: dir,
        })
    }

    /// A JWT-login provider of `secret/{name}` through the counting proxy.
    fn provider(&self, name: &str) -> VaultProvider {
        VaultProvider::builder()
            .address(self.counter.url())
            .path(format!("secret/{name}"))
            .jwt_login(
                mlflow_secrets_auth_vault::JwtMethod::Jwt,
                Some("mlflow".into()),
                None,
                &self.file,
            )
            .request_timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    }
}

#[tokio::test]
async fn jwt_login_reads_the_token_file_at_every_login_and_backs_off_when_refused() {
    let Some(bao) = JwtBao::start("jwt login", "mlflow/auth", "tok-by-jwt", "1h", "1h").await
    else {
        return;
    };
    let (store, issuer, counter, file) = (&bao.store, &bao.issuer, &bao.counter, &bao.file);
    std::fs::remove_file(file).unwrap();

    // No file yet, then an empty one: a config error naming it.
    let vault = bao.provider("mlflow/auth");
    for _ in 0..2 {
        let error = vault.fetch().await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Config, "{error}");
        let text = error.to_string();
        assert!(text.contains("MLFLOW_VAULT_JWT_FILE"), "{text}");
        assert!(text.contains(&file.display().to_string()), "{text}");
        std::fs::write(file, "\n").unwrap();
    }
    assert_eq!(counter.forwarded(), 0, "nothing sent without a token");

    std::fs::write(file, issuer.jwt("job")).unwrap();
    assert_eq!(read(&vault).await, token("tok-by-jwt"));
    assert_eq!(counter.forwarded_to("/v1/auth/jwt/login"), 1);

    // The platform rotates the file (here: to a subject the role does not
    // take) and Vault revokes the token: the next login reads the new file.
    std::fs::write(file, issuer.jwt("someone-else")).unwrap();
    assert_eq!(revoke_tokens_of(&store.bao, "auth/jwt/login"), 1);
    let error = vault.fetch().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::PermissionDenied, "{error}");
    let text = error.to_string();
    assert!(text.contains("JWT login on mount `jwt` refused"), "{text}");
    assert!(text.contains("MLFLOW_VAULT_AUTH_ROLE"), "{text}");
    assert_eq!(counter.forwarded_to("/v1/auth/jwt/login"), 2);
    // Refused: the next fetches back off instead of asking again at once.
    for _ in 0..5 {
        assert!(vault.fetch().await.is_err());
    }
    assert_eq!(counter.forwarded_to("/v1/auth/jwt/login"), 2, "backed off");
}

/// Three tokens through a few seconds of reads, counted at the proxy: a JWT
/// login whose 2 s tokens may live 4 s at most (renewed, then replaced by a
/// new login when the renewals stop growing them), and a renewable 2 s
/// token the user gave (renewed, never replaced). No read fails.
#[tokio::test]
async fn tokens_are_renewed_replaced_at_max_ttl_and_never_used_past_expiry() {
    let Some(bao) = JwtBao::start(
        "token lifecycle",
        "mlflow/auth",
        "tok-lifecycle",
        "2s",
        "4s",
    )
    .await
    else {
        return;
    };
    let (store, jwt_counter) = (&bao.store, &bao.counter);
    let by_jwt = bao.provider("mlflow/auth");

    let given = renewable_token(&store.bao, "2s");
    let given_counter = FaultProxy::start(store.bao.addr());
    let by_token = VaultProvider::builder()
        .address(given_counter.url())
        .path("secret/mlflow/auth")
        .token(given)
        .request_timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    let started = Instant::now();
    let mut reads = 0;
    while started.elapsed() < Duration::from_secs(6) {
        assert_eq!(read(&by_jwt).await, token("tok-lifecycle"), "read {reads}");
        assert_eq!(
            read(&by_token).await,
            token("tok-lifecycle"),
            "read {reads}"
        );
        reads += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let renewals = jwt_counter.forwarded_to("/v1/auth/token/renew-self");
    let logins = jwt_counter.forwarded_to("/v1/auth/jwt/login");
    assert!(renewals >= 1, "{renewals} renewals, {logins} logins");
    assert!(
        logins >= 2,
        "max_ttl reached: {renewals} renewals, {logins} logins"
    );
    assert!(
        logins <= 4,
        "a login per token, not per read: {logins} in {reads} reads"
    );
    assert!(
        given_counter.forwarded_to("/v1/auth/token/renew-self") >= 2,
        "the user's token is renewed"
    );
    assert_eq!(
        given_counter.forwarded_to("/v1/auth/"),
        given_counter.forwarded_to("/v1/auth/token/"),
        "and never replaced"
    );
}

/// Kubernetes auth: OpenBao asks the cluster's TokenReview endpoint (the
/// testkit's, on loopback) who a service-account token belongs to, and logs
/// in only the account its role is bound to.
#[tokio::test]
async fn kubernetes_login_as_the_bound_service_account_only() {
    use secrets_testkit::kubernetes::{ServiceAccount, TokenReviewApi};
    let Some(store) = kv2_store("kubernetes login").await else {
        return;
    };
    store.write("mlflow/auth", r#"{"token": "tok-by-k8s"}"#);
    let cluster = TokenReviewApi::start();
    let account = ServiceAccount::new("ml", "trainer");
    let trainer = cluster.admit(&account);
    let intruder = cluster.admit(&ServiceAccount::new("ml", "notebook"));
    store.bao.read_policy("secret/data/mlflow/auth");
    store.bao.kubernetes_auth(&cluster, "trainer", &account);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    let provider = || {
        VaultProvider::builder()
            .address(store.bao.url())
            .path("secret/mlflow/auth")
            .jwt_login(
                mlflow_secrets_auth_vault::JwtMethod::Kubernetes,
                Some("trainer".into()),
                None,
                &file,
            )
            .request_timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    };

    std::fs::write(&file, &trainer).unwrap();
    assert_eq!(read(&provider()).await, token("tok-by-k8s"));
    assert_eq!(cluster.reviews(), 1, "OpenBao asked the cluster");

    // Another service account of the same cluster: valid, but not bound.
    std::fs::write(&file, &intruder).unwrap();
    let error = provider().fetch().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::PermissionDenied, "{error}");
    let text = error.to_string();
    assert!(
        text.contains("Kubernetes login on mount `kubernetes` refused"),
        "{text}"
    );
    assert!(text.contains("bound to this service account"), "{text}");
    assert!(!text.contains(&intruder), "{text}");
}

/// A login that works for a token whose policy does not cover the path:
/// one new login on the first 403, then no login per request.
#[tokio::test]
async fn a_path_the_policy_denies_does_not_bring_a_login_per_request() {
    let Some(bao) = JwtBao::start("jwt denied path", "other/team", "tok-other", "1h", "1h").await
    else {
        return;
    };
    let vault = bao.provider("other/team");
    for _ in 0..6 {
        let error = vault.fetch().await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::PermissionDenied, "{error}");
    }
    assert_eq!(
        bao.counter.forwarded_to("/v1/auth/jwt/login"),
        2,
        "the first login, and one more on the first 403"
    );
}

/// A renewable 6 s token the user gave, whose first two renewals Vault
/// answers with 500: renewed after all, before it ends (not given up after
/// one failure), and no read fails.
#[tokio::test]
async fn a_users_token_is_renewed_after_failed_renewals() {
    let Some(store) = kv2_store("renewal failures").await else {
        return;
    };
    store.write("mlflow/auth", r#"{"token": "tok-renewed"}"#);
    store.bao.read_policy("secret/data/mlflow/auth");
    let given = renewable_token(&store.bao, "6s");
    let counter = FaultProxy::start(store.bao.addr());
    counter.inject(
        Fault::new(
            "/v1/auth/token/renew-self",
            500,
            r#"{"errors":["internal error"]}"#,
        )
        .times(2),
    );
    let vault = VaultProvider::builder()
        .address(counter.url())
        .path("secret/mlflow/auth")
        .token(given)
        .build()
        .unwrap();
    // Reads until well past the token's first end (6 s); the renewals
    // fall between 4 and 6 s, held off at most half of what is left, so a
    // loaded machine has seconds to spare.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(8) {
        assert_eq!(read(&vault).await, token("tok-renewed"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(counter.answered(), 2, "two renewals failed");
    assert!(
        counter.forwarded_to("/v1/auth/token/renew-self") >= 1,
        "then one went through"
    );
}

/// OpenBao's rate-limit quota on the KV mount, with the response headers
/// on: the 429's `Retry-After` reaches the retry layer as the error's
/// `retry_after` (vaultrs keeps no header; the read is the provider's own).
#[tokio::test]
async fn a_rate_limited_read_carries_vaults_retry_after() {
    let Some(store) = kv2_store("rate_limit").await else {
        return;
    };
    store.write("limited", r#"{"token": "tok-limited"}"#);
    let quota = |path: &str, body: &str| {
        let answer = store.bao.admin("POST", path, body);
        assert!(answer.status < 300, "{path}: {}", answer.body);
    };
    quota(
        "sys/quotas/config",
        r#"{"enable_rate_limit_response_headers": true}"#,
    );
    quota(
        "sys/quotas/rate-limit/mlflow-read",
        r#"{"path": "secret/", "rate": 1, "interval": "2s"}"#,
    );
    let vault = store.provider("limited");
    let mut throttled = None;
    // The first read takes the one allowed; one of the next is refused.
    for _ in 0..5 {
        match vault.fetch().await {
            Ok(fetched) => assert_eq!(fetched.credential().unwrap(), token("tok-limited")),
            Err(e) => {
                throttled = Some(e);
                break;
            }
        }
    }
    let err = throttled.expect("the quota refused a read");
    assert_eq!(err.kind(), ErrorKind::Throttled, "{err}");
    let wait = err.retry_after().expect("Retry-After kept");
    assert!(
        (Duration::from_secs(1)..=Duration::from_secs(2)).contains(&wait),
        "{wait:?}"
    );
    assert!(err.to_string().contains("HTTP 429"), "{err}");
    // Waited for, the read is served again (OpenBao writes the wait in
    // whole seconds, rounded down: one more second covers the fraction).
    tokio::time::sleep(wait + Duration::from_secs(1)).await;
    assert_eq!(
        vault.fetch().await.unwrap().credential().unwrap(),
        token("tok-limited")
    );
}
