//! vaultrs errors → [`mlflow_secrets_auth_core::ErrorKind`]s, keeping Vault's own messages
//! (which name paths and reasons, never secret values).

use mlflow_secrets_auth_core::{ErrorKind, SecretError, classify};
use vaultrs::error::ClientError;

/// What was being done when the error happened, for the message.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Action<'a> {
    /// Reading the secret at this path.
    Read(&'a str),
    /// Logging in: the method (`AppRole`, `JWT`, `Kubernetes`), its mount,
    /// and what to check when Vault refuses it.
    Login {
        /// The method's name.
        method: &'a str,
        /// The auth mount.
        mount: &'a str,
        /// What to check when refused.
        check: &'a str,
    },
    /// Renewing the token (renew-self).
    Renew,
    /// Looking up the mount of this path.
    Detect(&'a str),
}

/// The HTTP status of an error Vault answered with, if it is one.
pub(crate) fn status(error: &ClientError) -> Option<u16> {
    match error {
        ClientError::APIError { code, .. } => Some(*code),
        ClientError::RestClientError {
            source: rustify::errors::ClientError::ServerResponseError { code, .. },
        } => Some(*code),
        _ => None,
    }
}

pub(crate) fn map(error: &ClientError, action: Action<'_>, address: &str) -> SecretError {
    if let Some(mistake) = scheme_mistake(error, address) {
        return mistake;
    }
    let vault_says = match error {
        ClientError::APIError { errors, .. } if !errors.is_empty() => {
            classify::server_said(&errors.join("; "))
        }
        _ => String::new(),
    };
    if let Some(code) = status(error) {
        let kind = match (code, action) {
            // A login Vault cannot match (wrong role or secret id).
            (400, Action::Login { .. }) => ErrorKind::PermissionDenied,
            _ => classify::status_kind(code),
        };
        let what = match (kind, action) {
            (ErrorKind::NotFound, Action::Read(path)) => {
                format!("secret `{path}` not found (or its current version is deleted)")
            }
            (ErrorKind::PermissionDenied, Action::Read(path)) => {
                format!("Vault denied reading `{path}` (check the token's policies)")
            }
            (
                ErrorKind::PermissionDenied,
                Action::Login {
                    method,
                    mount,
                    check,
                },
            ) => format!("{method} login on mount `{mount}` refused ({check})"),
            (_, Action::Read(path)) => format!("reading `{path}` failed"),
            (_, Action::Login { method, mount, .. }) => {
                format!("{method} login on mount `{mount}` failed")
            }
            (_, Action::Renew) => "renewing the Vault token failed".to_owned(),
            (_, Action::Detect(path)) => format!("looking up the mount of `{path}` failed"),
        };
        let sealed = if code == 503 {
            " (sealed or standby)"
        } else {
            ""
        };
        let detail = if vault_says.is_empty() {
            String::new()
        } else {
            format!(": {vault_says}")
        };
        return SecretError::new(
            kind,
            format!("{what}: HTTP {code}{sealed} from {address}{detail}"),
        );
    }
    match error {
        ClientError::RestClientError { source } if chain(source).contains("certificate") => {
            SecretError::config(
                "VAULT_CACERT",
                format!(
                    "the TLS certificate of {address} is not trusted (set VAULT_CACERT to its CA): {}",
                    transport_cause(source)
                ),
            )
        }
        ClientError::RestClientError { source } => {
            let (kind, what) = if chain_has(source, |e| e.is_timeout()) {
                (ErrorKind::Timeout, "did not answer in time")
            } else {
                (ErrorKind::Transient, "cannot be reached")
            };
            SecretError::new(
                kind,
                format!("Vault at {address} {what}: {}", transport_cause(source)),
            )
        }
        ClientError::FileReadError { path, .. }
        | ClientError::ParseCertificateError { path, .. } => SecretError::config(
            "VAULT_CACERT",
            format!("cannot use the CA certificate {path}: {}", chain(error)),
        ),
        ClientError::RestClientBuildError { .. } => SecretError::config(
            "VAULT_ADDR",
            format!("cannot build the Vault client: {}", chain(error)),
        ),
        ClientError::ResponseDataEmptyError | ClientError::ResponseEmptyError => {
            let path = match action {
                Action::Read(path) | Action::Detect(path) | Action::Login { mount: path, .. } => {
                    path
                }
                Action::Renew => "auth/token/renew-self",
            };
            SecretError::new(
                ErrorKind::NotFound,
                format!("Vault returned no data for `{path}`"),
            )
        }
        _ => SecretError::new(
            ErrorKind::Transient,
            format!("Vault call to {address} failed: {}", chain(error)),
        ),
    }
}

/// `https` to a server that speaks plain HTTP (TLS reads its answer as a
/// corrupt record), or `http` to one that speaks TLS (Go's server answers
/// 400 "Client sent an HTTP request to an HTTPS server"): a wrong scheme in
/// `VAULT_ADDR`, said as such instead of as a TLS or HTTP failure.
fn scheme_mistake(error: &ClientError, address: &str) -> Option<SecretError> {
    let (scheme, rest) = address.split_once("://")?;
    let other = match error {
        ClientError::RestClientError {
            source: rustify::errors::ClientError::ServerResponseError { code: 400, content },
        } if scheme == "http"
            && content
                .as_deref()
                .is_some_and(|c| c.contains("HTTP request to an HTTPS server")) =>
        {
            "https"
        }
        ClientError::RestClientError { source }
            if scheme == "https" && chain(source).contains("InvalidContentType") =>
        {
            "http"
        }
        _ => return None,
    };
    Some(SecretError::config(
        "VAULT_ADDR",
        format!(
            "says {scheme}, but the server at {rest} speaks {}: write {other}://{rest}",
            if other == "https" {
                "TLS"
            } else {
                "plain HTTP"
            }
        ),
    ))
}

/// Whether any error in the source chain is a reqwest error matching `test`.
fn chain_has(
    error: &(dyn std::error::Error + 'static),
    test: impl Fn(&reqwest::Error) -> bool,
) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(reqwest) = e.downcast_ref::<reqwest::Error>()
            && test(reqwest)
        {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        current = e.source();
    }
    false
}

/// What went wrong below the HTTP client's own wrappers ("Error sending HTTP
/// request", "error sending request for url (…)"), which only repeat the
/// address the message names already.
fn transport_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.downcast_ref::<reqwest::Error>().is_some() {
            return e.source().map_or_else(|| e.to_string(), chain);
        }
        current = e.source();
    }
    chain(error)
}

/// The messages of an error and its sources, joined.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut current = error.source();
    while let Some(e) = current {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, errors: &[&str]) -> ClientError {
        ClientError::APIError {
            code,
            errors: errors.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn statuses_map_to_kinds() {
        let read = Action::Read("secret/mlflow");
        let cases = [
            (404, ErrorKind::NotFound),
            (403, ErrorKind::PermissionDenied),
            (503, ErrorKind::Transient),
            (500, ErrorKind::Transient),
            (429, ErrorKind::Throttled),
            (408, ErrorKind::Transient),
            (400, ErrorKind::Rejected),
        ];
        for (code, kind) in cases {
            assert_eq!(
                map(&api(code, &[]), read, "http://v").kind(),
                kind,
                "{code}"
            );
        }
    }

    #[test]
    fn bad_approle_login_is_permission_denied_with_vaults_message() {
        let err = map(
            &api(400, &["invalid role or secret ID"]),
            Action::Login {
                method: "AppRole",
                mount: "approle",
                check: "check VAULT_ROLE_ID and VAULT_SECRET_ID",
            },
            "http://127.0.0.1:8200",
        );
        assert_eq!(err.kind(), ErrorKind::PermissionDenied);
        assert!(
            err.to_string().contains("invalid role or secret ID"),
            "{err}"
        );
        assert!(err.to_string().contains("VAULT_SECRET_ID"), "{err}");
    }

    #[test]
    fn sealed_is_transient_and_says_so() {
        let err = map(
            &api(503, &["Vault is sealed"]),
            Action::Read("p"),
            "http://v",
        );
        assert!(err.is_transient());
        assert!(err.to_string().contains("sealed"), "{err}");
    }
}
