//! The file provider against real files: found, missing, unreadable, malformed.

use std::fs;

use mlflow_secrets_auth_core::{
    Credential, Env, ErrorKind, FileProvider, MAX_SECRET_BYTES, SecretProvider,
};
use secrecy::ExposeSecret;

#[tokio::test]
async fn reads_and_parses_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    fs::write(&path, "{\"username\": \"alice\", \"password\": \"pw\"}\n").unwrap();
    let provider = FileProvider::new(&path);
    let fetched = provider.fetch().await.unwrap();
    assert_eq!(
        fetched.credential().unwrap(),
        Credential::parse("alice:pw").unwrap()
    );
    assert_eq!(provider.name(), "file");
    assert_eq!(provider.secret_ref(), format!("file:{}", path.display()));
}

#[tokio::test]
async fn rereads_a_rotated_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    fs::write(&path, "first-token").unwrap();
    let provider = FileProvider::new(&path);
    assert_eq!(
        provider.fetch().await.unwrap().text.expose_secret(),
        "first-token"
    );
    fs::write(&path, "second-token").unwrap();
    assert_eq!(
        provider.fetch().await.unwrap().text.expose_secret(),
        "second-token"
    );
}

#[tokio::test]
async fn missing_file_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent");
    let err = FileProvider::new(&path).fetch().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(err.provider(), Some("file"));
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn unreadable_file_is_permission_denied() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mut path = dir.path().join("locked");
    fs::write(&path, "tok").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o000)).unwrap();
    if fs::read(&path).is_ok() {
        // Root reads files whatever their mode; a write-only sysctl it cannot read.
        path = "/proc/sys/vm/compact_memory".into();
    }
    let err = FileProvider::new(&path).fetch().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
}

#[tokio::test]
async fn directory_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = FileProvider::new(dir.path()).fetch().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(
        err.to_string().contains("MLFLOW_SECRETS_FILE_PATH"),
        "{err}"
    );
}

#[tokio::test]
async fn bad_content_is_invalid_secret() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8]); 4] = [
        ("empty", b""),
        ("binary", b"\xff\xfe\x00tok-binary"),
        ("json", b"{\"token\": 5}"),
        ("truncated", b"{\"token\": \"tok-trunc"),
    ];
    for (name, bytes) in cases {
        let path = dir.path().join(name);
        fs::write(&path, bytes).unwrap();
        let err = match FileProvider::new(&path).fetch().await {
            Ok(fetched) => fetched.credential().unwrap_err(),
            Err(err) => err,
        };
        assert_eq!(err.kind(), ErrorKind::InvalidSecret, "{name}: {err}");
        assert!(!err.to_string().contains("tok-"), "{err}");
    }
}

#[tokio::test]
async fn oversized_file_is_refused_without_reading_it_all() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge");
    fs::write(&path, vec![b'x'; 2 * MAX_SECRET_BYTES]).unwrap();
    let err = FileProvider::new(&path).fetch().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidSecret);
    assert!(err.to_string().contains("limit"), "{err}");
}

#[test]
fn from_env_needs_the_path_variable() {
    let none: [(&str, &str); 0] = [];
    let err = FileProvider::from_env(&Env::new(&none)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("MLFLOW_SECRETS_FILE_PATH"));

    let set = [("MLFLOW_SECRETS_FILE_PATH", " /run/secrets/mlflow ")];
    let provider = FileProvider::from_env(&Env::new(&set)).unwrap();
    assert_eq!(provider.path(), std::path::Path::new("/run/secrets/mlflow"));
    assert_eq!(
        provider.describe().to_string(),
        "file: path=/run/secrets/mlflow"
    );
}

#[test]
fn a_token_file_that_is_no_regular_file_is_refused_without_blocking() {
    use mlflow_secrets_auth_core::read_token_file;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("token");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo");
    let err = read_token_file("MLFLOW_VAULT_JWT_FILE", &fifo, "test token").unwrap_err();
    assert!(err.to_string().contains("is not a regular file"), "{err}");
    let err = read_token_file("MLFLOW_VAULT_JWT_FILE", dir.path(), "test token").unwrap_err();
    assert!(
        err.to_string().starts_with("MLFLOW_VAULT_JWT_FILE: "),
        "{err}"
    );
}
