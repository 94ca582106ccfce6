//! What the harness's programs share: the backend both face (moto, AWS
//! Secrets Manager, behind the testkit's fault proxy) and how they are
//! configured for it.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::error::Error;

use secrets_testkit::moto;

/// The harness's result type.
pub type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// The AWS provider's variables for the secret `secret_id` (basic auth) in
/// a backend at `endpoint`, with moto's test keys and no instance metadata.
pub fn aws_env(endpoint: &str, secret_id: &str) -> HashMap<String, String> {
    [
        ("MLFLOW_SECRETS_AUTH_ENABLE", "aws-secrets-manager"),
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_REGION", moto::REGION),
        ("AWS_DEFAULT_REGION", moto::REGION),
        ("AWS_ACCESS_KEY_ID", moto::ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", moto::SECRET_KEY),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("MLFLOW_AWS_SECRET_ID", secret_id),
        ("MLFLOW_AWS_AUTH_MODE", "basic"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// A memory figure of process `pid` from `/proc/PID/status` (`VmRSS`,
/// `VmHWM`), in MB.
pub fn memory_mb(pid: u32, field: &str) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim_start_matches(':')
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .ok_or("no such field in /proc/PID/status")?;
    Ok(kb / 1024.0)
}
