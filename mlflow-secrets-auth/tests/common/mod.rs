//! A moto server holding one secret, behind a proxy that counts the
//! provider's requests and can make them fail.

use std::time::Duration;

use mlflow_secrets_auth::{AuthMode, Config, HostAllowlist, ProviderSettings};
use mlflow_secrets_auth_aws::AwsSecretsManagerProvider;
use secrets_testkit::fault::{Fault, FaultProxy};
use secrets_testkit::moto::{ACCESS_KEY, MotoServer, REGION, SECRET_KEY};

/// The URL the tests ask a header for (its host is allowed by [`config`]).
pub const URL: &str = "https://mlflow.example.com/api/2.0/mlflow/experiments/search";

/// Bearer mode with a TTL in seconds.
pub fn settings(ttl: u64) -> ProviderSettings {
    ProviderSettings {
        auth_mode: AuthMode::Bearer,
        ttl: Duration::from_secs(ttl),
    }
}

/// Fast retries for tests: 1 retry, 20 ms backoff, 1 s per attempt, 5 s per fetch.
pub fn config() -> Config {
    let mut config = Config::default();
    config.allowlist = HostAllowlist::parse("mlflow.example.com").unwrap();
    config.max_retries = 1;
    config.base_delay = Duration::from_millis(20);
    config.max_delay = Duration::from_millis(100);
    config.request_timeout = Duration::from_secs(1);
    config.fetch_deadline = Duration::from_secs(5);
    config
}

pub struct Backend {
    pub moto: MotoServer,
    pub proxy: FaultProxy,
}

/// moto with secret `name` holding `value`; `None` when moto is missing.
pub fn backend(test: &str, name: &str, value: &str) -> Option<Backend> {
    let moto = MotoServer::start(test)?;
    moto.create_secret(name, value);
    let proxy = FaultProxy::start(moto.url().trim_start_matches("http://").parse().unwrap());
    Some(Backend { moto, proxy })
}

impl Backend {
    /// A provider of `name` that goes through the proxy.
    pub fn provider(&self, name: &str) -> AwsSecretsManagerProvider {
        self.provider_timing_out_after(name, Duration::from_secs(5))
    }

    /// [`Self::provider`] whose calls time out after `timeout`.
    pub fn provider_timing_out_after(
        &self,
        name: &str,
        timeout: Duration,
    ) -> AwsSecretsManagerProvider {
        AwsSecretsManagerProvider::builder()
            .secret_id(name)
            .region(REGION)
            .endpoint_url(self.proxy.url())
            .static_credentials(ACCESS_KEY, SECRET_KEY)
            .request_timeout(timeout)
            .build()
            .unwrap()
    }

    /// Every request fails with a 503 from now on.
    pub fn go_down(&self) {
        self.proxy
            .inject(Fault::new("/", 503, r#"{"message": "down"}"#));
    }
}
