//! Logs at `trace` through a whole flow — fetch, hits, invalidation, stale
//! serving during an outage, a failing auth mode — contain neither the
//! secret nor its base64 form. Alone in its test binary: `tracing` caches
//! per-callsite interest, and concurrent tests without a subscriber could
//! race with the scoped one installed here.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use mlflow_secrets_auth::{AuthMode, LogLevel, ProviderSettings, SecretsAuth};
use secrets_cache::ManualClock;

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

#[test]
fn trace_logs_never_contain_the_secret() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = mlflow_secrets_auth::subscriber(LogLevel::Trace, move || writer.clone());
    let password = "pw-never-logged-93c1e";
    tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let Some(backend) = backend(
                "logs",
                "mlflow/basic",
                &format!(r#"{{"username": "mlflow-user", "password": "{password}"}}"#),
            ) else {
                return;
            };
            let clock = Arc::new(ManualClock::new());
            let auth = SecretsAuth::builder()
                .config(config())
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
    });
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("credential fetched"),
        "trace logs were captured:\n{text}"
    );
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("mlflow-user:{password}"));
    assert!(!text.contains(password), "{text}");
    assert!(!text.contains(&encoded), "{text}");
}
