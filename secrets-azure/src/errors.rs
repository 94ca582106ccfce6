//! Azure SDK errors → [`mlflow_secrets_auth_core::ErrorKind`]s, with the service's error
//! code in the message and never a secret.

use std::time::Duration;

use azure_core::error::ErrorKind as AzureKind;
use azure_core::http::RawResponse;
use azure_core::http::headers::HeaderName;
use mlflow_secrets_auth_core::{ErrorKind, SecretError, classify, source_chain};
use serde_json::Value;

/// What the failed call was about, for the message.
pub(crate) struct Context<'a> {
    pub secret: &'a str,
    pub vault_url: &'a str,
    pub credential: &'a str,
}

/// `error.code`, `error.message` and `error.innererror.code` of a Key Vault
/// error body.
fn service_error(raw: Option<&RawResponse>) -> (Option<String>, Option<String>, Option<String>) {
    let Some(body) = raw.and_then(|r| serde_json::from_slice::<Value>(r.body().as_ref()).ok())
    else {
        return (None, None, None);
    };
    let error = &body["error"];
    let text = |v: &Value| v.as_str().map(classify::server_said);
    (
        text(&error["code"]),
        text(&error["message"]),
        text(&error["innererror"]["code"]),
    )
}

fn retry_after(raw: Option<&RawResponse>) -> Option<Duration> {
    let value = raw?
        .headers()
        .get_optional_str(&HeaderName::from_static("retry-after"))?;
    classify::retry_after(value, std::time::SystemTime::now())
}

/// Maps the error of a `get_secret` call.
pub(crate) fn map(error: &azure_core::Error, at: &Context<'_>) -> SecretError {
    let Context {
        secret,
        vault_url,
        credential,
    } = *at;
    match error.kind() {
        AzureKind::HttpResponse {
            status,
            error_code,
            raw_response,
        } => {
            let status = u16::from(*status);
            let raw = raw_response.as_deref();
            let (code, message, inner) = service_error(raw);
            let code = code.or_else(|| error_code.clone()).unwrap_or_default();
            let message = message.unwrap_or_else(|| error.to_string());
            let said = format!("HTTP {status} {code}: {message}");
            if status == 403 && inner.as_deref() == Some("SecretDisabled") {
                return SecretError::new(
                    ErrorKind::Rejected,
                    format!("secret `{secret}` is disabled in {vault_url}: {said}"),
                );
            }
            match classify::status_kind(status) {
                ErrorKind::NotFound => SecretError::new(
                    ErrorKind::NotFound,
                    format!("secret `{secret}` not found in {vault_url}: {said}"),
                ),
                ErrorKind::PermissionDenied => SecretError::new(
                    ErrorKind::PermissionDenied,
                    format!(
                        "access to secret `{secret}` in {vault_url} denied to the {credential}: {said}"
                    ),
                ),
                ErrorKind::Throttled => SecretError::throttled(
                    format!("Azure Key Vault is throttling reads of `{secret}`: {said}"),
                    retry_after(raw),
                ),
                ErrorKind::Transient => SecretError::new(
                    ErrorKind::Transient,
                    format!("Azure Key Vault at {vault_url} failed: {said}"),
                ),
                kind => SecretError::new(
                    kind,
                    format!("reading secret `{secret}` from {vault_url} failed: {said}"),
                ),
            }
        }
        AzureKind::Credential => credential_error(error, credential),
        AzureKind::Connection | AzureKind::Io => SecretError::new(
            ErrorKind::Transient,
            format!(
                "cannot reach Azure Key Vault at {vault_url}: {}",
                source_chain(error)
            ),
        ),
        AzureKind::DataConversion => SecretError::new(
            ErrorKind::Rejected,
            format!(
                "the answer of {vault_url} for `{secret}` could not be read: {}",
                source_chain(error)
            ),
        ),
        _ => SecretError::new(
            ErrorKind::Config,
            format!(
                "reading `{secret}` from {vault_url} failed: {}",
                source_chain(error)
            ),
        ),
    }
}

/// A failure to get a token: the identity service refused it (permission
/// denied, naming the credential) or could not be reached (transient).
fn credential_error(error: &azure_core::Error, credential: &str) -> SecretError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        // Ours, such as an unreadable federated token file: as it was.
        if let Some(ours) = current.downcast_ref::<SecretError>() {
            return ours.clone();
        }
        if let Some(inner) = current.downcast_ref::<azure_core::Error>() {
            let unreachable = match inner.kind() {
                AzureKind::Connection | AzureKind::Io => true,
                AzureKind::HttpResponse { status, .. } => {
                    let status = u16::from(*status);
                    status == 429 || status >= 500
                }
                _ => false,
            };
            if unreachable {
                return SecretError::new(
                    ErrorKind::Transient,
                    format!(
                        "the {credential} got no access token (identity service unavailable) — {}",
                        source_chain(error)
                    ),
                );
            }
        }
        cause = current.source();
    }
    SecretError::new(
        ErrorKind::PermissionDenied,
        format!(
            "the {credential} got no access token from the identity service — {}",
            source_chain(error)
        ),
    )
}
