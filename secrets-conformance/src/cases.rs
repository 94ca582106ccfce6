//! The cases: each one stores secrets through a [`SecretStore`] and reads
//! them back through the provider under test.

use mlflow_secrets_auth_core::{Credential, ErrorKind};

use crate::SecretStore;

fn token(text: &str) -> Credential {
    Credential::Token(text.into())
}

fn user_pass(user: &str, password: &str) -> Credential {
    Credential::UserPassword {
        username: user.into(),
        password: password.into(),
    }
}

/// Fetches `name` through the store's provider and parses it.
pub async fn fetch_credential(store: &dyn SecretStore, name: &str) -> Credential {
    let provider = store.provider(name);
    let fetched = provider
        .fetch()
        .await
        .unwrap_or_else(|e| panic!("fetching `{name}`: {e}"));
    fetched
        .credential()
        .unwrap_or_else(|e| panic!("parsing `{name}`: {e}"))
}

async fn stored_and_read(store: &dyn SecretStore, name: &str, text: &str, expected: Credential) {
    store.put_text(name, text).await;
    assert_eq!(
        fetch_credential(store, name).await,
        expected,
        "secret {text:?}"
    );
}

/// `{"token": …}` → token.
pub async fn json_token(store: &dyn SecretStore) {
    stored_and_read(
        store,
        "conf-json-token",
        r#"{"token": "tok-conf-1"}"#,
        token("tok-conf-1"),
    )
    .await;
}

/// `{"username": …, "password": …}` (extra fields allowed) → username + password.
pub async fn json_user_password(store: &dyn SecretStore) {
    stored_and_read(
        store,
        "conf-json-user",
        r#"{"username": "alice", "password": "pw-conf-2", "note": "extra"}"#,
        user_pass("alice", "pw-conf-2"),
    )
    .await;
}

/// Plain `user:password` → username + password.
pub async fn plain_user_password(store: &dyn SecretStore) {
    stored_and_read(
        store,
        "conf-plain-user",
        "bob:pw-conf-3",
        user_pass("bob", "pw-conf-3"),
    )
    .await;
}

/// Plain text → token, trimmed.
pub async fn plain_token(store: &dyn SecretStore) {
    stored_and_read(
        store,
        "conf-plain-token",
        " plain-tok-conf-4\n",
        token("plain-tok-conf-4"),
    )
    .await;
}

/// Binary content that is UTF-8 JSON is read as text (not base64 of it).
pub async fn binary_json(store: &dyn SecretStore) {
    store
        .put_binary("conf-binary", br#"{"token": "bin-tok-conf-5"}"#)
        .await;
    assert_eq!(
        fetch_credential(store, "conf-binary").await,
        token("bin-tok-conf-5")
    );
}

/// Binary content that is not UTF-8 is an invalid-secret error.
pub async fn binary_not_utf8(store: &dyn SecretStore) {
    store
        .put_binary("conf-binary-raw", &[0xff, 0xfe, 0x00, 0x01])
        .await;
    let err = store
        .provider("conf-binary-raw")
        .fetch()
        .await
        .and_then(|fetched| fetched.credential())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidSecret, "{err}");
}

/// A missing secret is a not-found error that names it.
pub async fn not_found(store: &dyn SecretStore) {
    let err = store
        .provider("conf-does-not-exist")
        .fetch()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("conf-does-not-exist"), "{err}");
    assert!(!err.is_transient());
}

/// Content that is no credential: fetched fine, refused by the parser, and
/// the error does not repeat it.
pub async fn malformed(store: &dyn SecretStore) {
    store
        .put_text(
            "conf-malformed",
            r#"{"token": 12345, "password": "pw-leak-6"}"#,
        )
        .await;
    let fetched = store.provider("conf-malformed").fetch().await.unwrap();
    let err = fetched.credential().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidSecret);
    assert!(err.to_string().contains("`token`"), "{err}");
    assert!(!err.to_string().contains("pw-leak-6"));
}

/// A new version is served once stored.
pub async fn rotation(store: &dyn SecretStore) {
    store
        .put_text("conf-rotation", r#"{"token": "tok-before-7"}"#)
        .await;
    assert_eq!(
        fetch_credential(store, "conf-rotation").await,
        token("tok-before-7")
    );
    store
        .put_text("conf-rotation", r#"{"token": "tok-after-7"}"#)
        .await;
    assert_eq!(
        fetch_credential(store, "conf-rotation").await,
        token("tok-after-7")
    );
}

/// A name with `/` in it.
pub async fn name_with_slashes(store: &dyn SecretStore) {
    stored_and_read(
        store,
        "team/mlflow/auth-8",
        r#"{"token": "tok-slash-8"}"#,
        token("tok-slash-8"),
    )
    .await;
}
