//! AWS SDK errors → [`mlflow_secrets_auth_core::ErrorKind`]s, keeping AWS's code and message
//! (which name the secret, never its value).

use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
use mlflow_secrets_auth_core::{ErrorKind, SecretError, classify, source_chain};

/// Error codes that mean our identity was refused.
const DENIED: &[&str] = &[
    "AccessDeniedException",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "InvalidClientTokenId",
    "ExpiredTokenException",
    "ExpiredToken",
    "MissingAuthenticationToken",
    "NotAuthorized",
];

/// Error codes that mean "slow down".
const THROTTLED: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "LimitExceededException",
];

/// Maps the error of a `GetSecretValue` call on `secret_id`, sent to
/// `endpoint` (`None`: the SDK's regional endpoint).
pub(crate) fn map(
    error: SdkError<GetSecretValueError, HttpResponse>,
    secret_id: &str,
    endpoint: Option<&str>,
) -> SecretError {
    let context = source_chain(&error);
    let at = endpoint.map_or_else(|| "its regional endpoint".to_owned(), |e| format!("`{e}`"));
    match &error {
        SdkError::ServiceError(service) => {
            let (err, raw) = (service.err(), service.raw());
            let code = classify::server_said(err.code().unwrap_or("unknown error"));
            let message = classify::server_said(err.message().unwrap_or("no message"));
            let status = raw.status().as_u16();
            let kind = service_kind(err, &code, status);
            let described = match kind {
                ErrorKind::NotFound => format!("secret `{secret_id}` not found: {code}: {message}"),
                ErrorKind::PermissionDenied => format!(
                    "access to secret `{secret_id}` denied (check the AWS identity and its policy): {code}: {message}"
                ),
                _ => format!(
                    "reading secret `{secret_id}` failed (HTTP {status}): {code}: {message}"
                ),
            };
            let retry_after = (kind == ErrorKind::Throttled)
                .then(|| {
                    let value = raw.headers().get("retry-after")?;
                    classify::retry_after(value, std::time::SystemTime::now())
                })
                .flatten();
            SecretError::new(kind, described).with_retry_after(retry_after)
        }
        SdkError::TimeoutError(_) => SecretError::new(
            ErrorKind::Timeout,
            format!("AWS Secrets Manager at {at} did not answer in time: {context}"),
        ),
        SdkError::DispatchFailure(dispatch) if dispatch.is_timeout() => SecretError::new(
            ErrorKind::Timeout,
            format!("AWS Secrets Manager at {at} did not answer in time: {context}"),
        ),
        SdkError::DispatchFailure(dispatch) if dispatch.is_io() => SecretError::new(
            ErrorKind::Transient,
            format!("cannot reach AWS Secrets Manager at {at}: {context}"),
        ),
        SdkError::DispatchFailure(_) if context.contains("credentials") => SecretError::new(
            ErrorKind::PermissionDenied,
            format!(
                "no AWS credentials (environment, profile, web identity, container or instance metadata): {context}"
            ),
        ),
        SdkError::ConstructionFailure(_) => SecretError::new(
            ErrorKind::Config,
            format!("cannot build the AWS request: {context}"),
        ),
        _ => SecretError::new(
            ErrorKind::Transient,
            format!("AWS Secrets Manager call failed: {context}"),
        ),
    }
}

fn service_kind(err: &GetSecretValueError, code: &str, status: u16) -> ErrorKind {
    match err {
        GetSecretValueError::ResourceNotFoundException(_) => ErrorKind::NotFound,
        GetSecretValueError::DecryptionFailure(_)
        | GetSecretValueError::InvalidRequestException(_) => ErrorKind::Rejected,
        GetSecretValueError::InvalidParameterException(_) => ErrorKind::Config,
        GetSecretValueError::InternalServiceError(_) => ErrorKind::Transient,
        _ if DENIED.contains(&code) => ErrorKind::PermissionDenied,
        _ if THROTTLED.contains(&code) => ErrorKind::Throttled,
        _ => classify::status_kind(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_secretsmanager::error::ErrorMetadata;
    use aws_smithy_types::body::SdkBody;
    use std::time::Duration;

    fn service_error(code: &str, status: u16, headers: &[(&str, &str)]) -> SecretError {
        let meta = ErrorMetadata::builder()
            .code(code)
            .message("the service's message")
            .build();
        let mut raw = HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
        for (name, value) in headers {
            raw.headers_mut()
                .insert(name.to_string(), value.to_string());
        }
        let err = GetSecretValueError::generic(meta);
        map(SdkError::service_error(err, raw), "prod/mlflow", None)
    }

    #[test]
    fn denied_codes_are_permission_denied() {
        for code in [
            "AccessDeniedException",
            "UnrecognizedClientException",
            "InvalidSignatureException",
        ] {
            let err = service_error(code, 400, &[]);
            assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{code}");
            assert!(err.to_string().contains("prod/mlflow"), "{err}");
            assert!(err.to_string().contains(code), "{err}");
        }
    }

    #[test]
    fn throttling_carries_retry_after() {
        let err = service_error("ThrottlingException", 400, &[("retry-after", "7")]);
        assert_eq!(err.kind(), ErrorKind::Throttled);
        assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
        let err = service_error("SlowDown", 429, &[]);
        assert_eq!(
            (err.kind(), err.retry_after()),
            (ErrorKind::Throttled, None)
        );
    }

    #[test]
    fn unknown_codes_fall_back_on_the_status() {
        assert_eq!(service_error("Boom", 503, &[]).kind(), ErrorKind::Transient);
        assert_eq!(
            service_error("Nope", 403, &[]).kind(),
            ErrorKind::PermissionDenied
        );
        assert_eq!(service_error("Odd", 400, &[]).kind(), ErrorKind::Rejected);
    }
}
