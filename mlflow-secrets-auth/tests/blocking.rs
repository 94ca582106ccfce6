//! The blocking face from many threads at once, on a real file provider.

use std::time::Duration;

use mlflow_secrets_auth::secrecy::ExposeSecret;
use mlflow_secrets_auth::{AuthMode, FileProvider, ProviderSettings, SecretsAuth, blocking};

#[test]
fn many_threads_share_one_fetch_and_get_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "user:pw-blocking-7").unwrap();
    let auth = SecretsAuth::builder()
        .provider(
            FileProvider::new(&path),
            ProviderSettings {
                auth_mode: AuthMode::Basic,
                ttl: Duration::from_secs(300),
            },
        )
        .build();
    let sync = blocking::SecretsAuth::new(auth).unwrap();
    std::thread::scope(|s| {
        for _ in 0..8 {
            let sync = sync.clone();
            s.spawn(move || {
                for _ in 0..100 {
                    let header = sync
                        .header_for("https://mlflow.example.com/")
                        .unwrap()
                        .unwrap();
                    assert_eq!(
                        header.value().expose_secret(),
                        "Basic dXNlcjpwdy1ibG9ja2luZy03"
                    );
                }
            });
        }
    });
    let stats = sync.inner().stats();
    assert_eq!(stats.fetches, 1);
    assert_eq!(stats.hits + stats.misses, 800);
}
