//! Reading the secret from a KV mount: which mount and engine version hold the
//! path (asked of Vault once, then remembered), and the read itself.

use std::collections::HashMap;
use std::time::Duration;

use mlflow_secrets_auth_core::{
    ErrorKind, FetchedSecret, MAX_SECRET_BYTES, Result, SecretError, SecretMeta,
};
use rustify_derive::Endpoint;
use serde::Deserialize;
use serde_json::Value;
use url::Url;
use vaultrs::client::VaultClient;

use crate::VaultProvider;
use crate::errors::{self, Action};

/// The KV mount holding the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KvMount {
    /// The mount path, without slashes (`secret`).
    pub mount: String,
    /// The KV engine version, 1 or 2.
    pub version: u8,
}

/// `GET /v1/sys/internal/ui/mounts/<path>`: the mount that serves a path.
#[derive(Debug, Endpoint)]
#[endpoint(path = "sys/internal/ui/mounts/{self.path}", response = "MountInfo")]
struct ReadMountInfo {
    #[endpoint(skip)]
    path: String,
}

#[derive(Debug, Deserialize)]
struct MountInfo {
    path: String,
    #[serde(default)]
    options: Option<HashMap<String, String>>,
}

impl KvMount {
    /// The path of the secret inside this mount (`secret/data/x` → `x` on KV v2).
    fn relative<'p>(&self, path: &'p str) -> &'p str {
        let inside = path
            .strip_prefix(self.mount.as_str())
            .map_or(path, |rest| rest.trim_start_matches('/'));
        if self.version == 2 {
            inside.strip_prefix("data/").unwrap_or(inside)
        } else {
            inside
        }
    }
}

/// Reads the provider's secret, finding its mount first if not yet known.
pub(crate) async fn read(provider: &VaultProvider, client: &VaultClient) -> Result<FetchedSecret> {
    let known = provider.kv_mount();
    if let Some(mount) = known {
        return read_at(provider, client, &mount).await;
    }
    let mount = match detect(provider, client).await? {
        Some(mount) => mount,
        None => return read_by_trying(provider, client).await,
    };
    remember(provider, &mount);
    read_at(provider, client, &mount).await
}

fn remember(provider: &VaultProvider, mount: &KvMount) {
    *provider.mount.lock().unwrap_or_else(|e| e.into_inner()) = Some(mount.clone());
}

/// Asks Vault which mount serves the path; `None` when the token may not ask.
async fn detect(provider: &VaultProvider, client: &VaultClient) -> Result<Option<KvMount>> {
    let endpoint = ReadMountInfo {
        path: provider.path.clone(),
    };
    match vaultrs::api::exec_with_result(client, endpoint).await {
        Ok(info) => {
            let version = info
                .options
                .as_ref()
                .and_then(|o| o.get("version"))
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            Ok(Some(KvMount {
                mount: info.path.trim_matches('/').to_owned(),
                version,
            }))
        }
        Err(e) if matches!(errors::status(&e), Some(400 | 403 | 404 | 405)) => Ok(None),
        Err(e) => Err(errors::map(
            &e,
            Action::Detect(&provider.path),
            &provider.address,
        )),
    }
}

/// Without mount information: the first path segment is the mount; KV v2 is
/// tried, then KV v1. The version that answers is remembered.
async fn read_by_trying(provider: &VaultProvider, client: &VaultClient) -> Result<FetchedSecret> {
    let first = provider
        .path
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut last = None;
    for version in [2, 1] {
        let mount = KvMount {
            mount: first.clone(),
            version,
        };
        match read_at(provider, client, &mount).await {
            Ok(fetched) => {
                remember(provider, &mount);
                return Ok(fetched);
            }
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::PermissionDenied) => {
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("both KV versions were tried"))
}

async fn read_at(
    provider: &VaultProvider,
    client: &VaultClient,
    mount: &KvMount,
) -> Result<FetchedSecret> {
    let path = mount.relative(&provider.path);
    let (data, meta) = if mount.version == 2 {
        let answer = get(provider, client, &[&mount.mount, "data", path]).await?;
        (data_of(answer, 2), SecretMeta::default())
    } else {
        let answer = get(provider, client, &[&mount.mount, path]).await?;
        let mut meta = SecretMeta::default();
        if let Some(lease) = answer["lease_duration"].as_u64()
            && lease > 0
        {
            meta =
                meta.with_valid_for(mlflow_secrets_auth_core::capped(Duration::from_secs(lease)));
        }
        (data_of(answer, 1), meta)
    };
    if !data.is_object() {
        return Err(SecretError::invalid_secret(format!(
            "secret `{}` holds no key/value data",
            provider.path
        )));
    }
    Ok(FetchedSecret::new(data.to_string().into()).with_meta(meta))
}

/// The largest answer read for the secret: the secret's own bound, with
/// room for Vault's envelope and metadata.
const MAX_ANSWER: usize = 2 * MAX_SECRET_BYTES;

/// `GET /v1/<segments>` with the session's token, read with the provider's
/// own HTTP client (no redirects, no proxy for plain http) rather than
/// through vaultrs, which keeps no response header: a 429's `Retry-After`
/// is kept, and the answer is bounded. Errors are shaped as vaultrs shapes
/// them, so they read as every other Vault call's.
async fn get(provider: &VaultProvider, client: &VaultClient, segments: &[&str]) -> Result<Value> {
    let read = Action::Read(&provider.path);
    let segments: Vec<&str> = segments
        .iter()
        .flat_map(|s| s.split('/'))
        .filter(|s| !s.is_empty())
        .collect();
    // The mount comes from Vault: no segment the URL parser would drop or
    // climb with (`.`, `..`, or one that becomes them without its tabs).
    if let Some(odd) = segments
        .iter()
        .find(|s| s.chars().any(char::is_control) || matches!(**s, "." | ".."))
    {
        return Err(SecretError::new(
            ErrorKind::Rejected,
            format!(
                "the path of `{}` has the segment {odd:?}, which is not read",
                provider.path
            ),
        ));
    }
    let mut url = Url::parse(&provider.address)
        .map_err(|e| SecretError::config("VAULT_ADDR", format!("is not usable: {e}")))?;
    url.path_segments_mut()
        .map_err(|()| SecretError::config("VAULT_ADDR", "is not a base URL"))?
        .pop_if_empty()
        .push("v1")
        .extend(
            segments
                .iter()
                .flat_map(|s| s.split('/'))
                .filter(|s| !s.is_empty()),
        );
    let mut request = client
        .http
        .http
        .get(url.clone())
        .header("X-Vault-Request", "true")
        .header("X-Vault-Token", &client.settings.token);
    if let Some(namespace) = &provider.namespace {
        request = request.header("X-Vault-Namespace", namespace);
    }
    let response = request.send().await.map_err(|e| {
        let failed = vaultrs::error::ClientError::RestClientError {
            source: rustify::errors::ClientError::RequestError {
                source: e.into(),
                url: url.to_string(),
                method: "GET".to_owned(),
            },
        };
        errors::map(&failed, read, &provider.address)
    })?;
    let status = response.status().as_u16();
    let retry_after = mlflow_secrets_auth_core::http::retry_after(&response);
    let body = mlflow_secrets_auth_core::http::bounded_body(response, MAX_ANSWER, "Vault").await?;
    if !(200..=208).contains(&status) {
        let text = String::from_utf8_lossy(&body).into_owned();
        let failed = match serde_json::from_str::<VaultErrors>(&text) {
            Ok(said) => vaultrs::error::ClientError::APIError {
                code: status,
                errors: said.errors,
            },
            Err(_) => vaultrs::error::ClientError::RestClientError {
                source: rustify::errors::ClientError::ServerResponseError {
                    code: status,
                    content: Some(text),
                },
            },
        };
        return Err(errors::map(&failed, read, &provider.address).with_retry_after(retry_after));
    }
    serde_json::from_slice(&body).map_err(|e| {
        SecretError::new(
            ErrorKind::Rejected,
            format!(
                "the answer of Vault for `{}` is not JSON: {e}",
                provider.path
            ),
        )
    })
}

/// The secret's fields in a KV `version` answer (`data.data` on v2, `data`
/// on v1); `null` when the answer has another shape. Taken, never indexed
/// mutably: the answer is Vault's input, not a reason to panic.
fn data_of(mut answer: Value, version: u8) -> Value {
    let at = if version == 2 { "/data/data" } else { "/data" };
    answer.pointer_mut(at).map(Value::take).unwrap_or_default()
}

/// Vault's error body.
#[derive(Deserialize)]
struct VaultErrors {
    #[serde(default)]
    errors: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_of_another_shape_has_no_data() {
        for answer in [
            serde_json::json!({"data": "x"}),
            serde_json::json!([]),
            serde_json::json!("x"),
            serde_json::json!({"data": {"data": null}}),
            serde_json::json!(null),
        ] {
            assert!(!data_of(answer.clone(), 2).is_object(), "{answer}");
        }
        assert!(!data_of(serde_json::json!([1]), 1).is_object());
        let v2 = serde_json::json!({"data": {"data": {"token": "t"}, "metadata": {}}});
        assert_eq!(data_of(v2, 2), serde_json::json!({"token": "t"}));
        let v1 = serde_json::json!({"data": {"token": "t"}, "lease_duration": 30});
        assert_eq!(data_of(v1, 1), serde_json::json!({"token": "t"}));
    }

    #[test]
    fn relative_paths() {
        let v2 = KvMount {
            mount: "secret".into(),
            version: 2,
        };
        assert_eq!(v2.relative("secret/mlflow/auth"), "mlflow/auth");
        assert_eq!(v2.relative("secret/data/mlflow/auth"), "mlflow/auth");
        let v1 = KvMount {
            mount: "team/kv1".into(),
            version: 1,
        };
        assert_eq!(v1.relative("team/kv1/data/x"), "data/x");
    }
}
