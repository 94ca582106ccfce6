//! `doctor`: numbered checks of the chain, each with a one-line fix when it
//! fails; with `--dry-run URL`, an authenticated MLflow API call too.

use crate::{FAILURE, SUCCESS};
use std::time::{Duration, Instant};

use mlflow_secrets_auth::is_loopback;
use mlflow_secrets_auth::secrecy::ExposeSecret;
use mlflow_secrets_auth::{
    Credential, ErrorKind, ProviderKind, SecretError, SecretsAuth, mask, mask_password,
    source_chain,
};
use serde_json::json;
use url::Url;

use crate::output::{mark, redacted, redacted_json};

struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
    fix: Option<String>,
}

impl Check {
    fn pass(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            ok: true,
            detail: detail.into(),
            fix: None,
        }
    }

    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            ok: false,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// The fix for `error`, about the provider it came from and its variables.
fn fix_for(error: &SecretError) -> String {
    let provider = error
        .provider()
        .and_then(|p| p.parse::<ProviderKind>().ok());
    if let Some(var) = TOKEN_FILE_VARS
        .iter()
        .find(|var| error.message().starts_with(&format!("{var}:")))
    {
        return format!(
            "mount the platform's token where {var} points (a projected service-account token, or the CI job's OIDC token), or point {var} at it"
        );
    }
    match (error.kind(), provider) {
        (ErrorKind::Config, _) => "set or correct the variable named above".to_owned(),
        (ErrorKind::NotFound, Some(ProviderKind::File)) => {
            "create the file MLFLOW_SECRETS_FILE_PATH names, or point it at the file holding the secret".to_owned()
        }
        (ErrorKind::NotFound, Some(ProviderKind::Vault)) => {
            "check MLFLOW_VAULT_SECRET_PATH (mount and path) and that the secret exists".to_owned()
        }
        (ErrorKind::NotFound, Some(ProviderKind::AwsSecretsManager)) => {
            "check MLFLOW_AWS_SECRET_NAME and AWS_REGION, and that the secret exists".to_owned()
        }
        (ErrorKind::NotFound, Some(ProviderKind::AzureKeyVault)) => {
            "check MLFLOW_AZURE_SECRET_NAME and MLFLOW_AZURE_KEY_VAULT_URL, and that the secret exists".to_owned()
        }
        (ErrorKind::NotFound, _) => "check the secret's name or path, and that it exists".to_owned(),
        (ErrorKind::PermissionDenied, Some(ProviderKind::File)) => {
            "make the file MLFLOW_SECRETS_FILE_PATH names readable by this user, or point it at one that is".to_owned()
        }
        (ErrorKind::PermissionDenied, Some(ProviderKind::Vault)) if error.message().contains("login") => {
            "check that the role MLFLOW_VAULT_AUTH_ROLE exists on MLFLOW_VAULT_AUTH_MOUNT and binds this identity: for kubernetes, its bound_service_account_names and namespaces; for jwt, its bound_audiences (the token's `aud`), bound_claims and user_claim".to_owned()
        }
        (ErrorKind::PermissionDenied, Some(ProviderKind::Vault)) => {
            "check VAULT_TOKEN (or VAULT_ROLE_ID and VAULT_SECRET_ID, or the role MLFLOW_VAULT_AUTH_ROLE) and that its policy may read MLFLOW_VAULT_SECRET_PATH".to_owned()
        }
        (ErrorKind::PermissionDenied, Some(ProviderKind::AwsSecretsManager)) => {
            "check the AWS identity (profile, keys, or the role AWS_ROLE_ARN and its trust policy for the web identity token's issuer and audience) and its secretsmanager:GetSecretValue permission on MLFLOW_AWS_SECRET_NAME".to_owned()
        }
        (ErrorKind::PermissionDenied, Some(ProviderKind::AzureKeyVault)) => {
            "check the Azure identity (AZURE_CLIENT_ID and its secret; for workload identity, a federated credential whose issuer, subject and audience match the token in AZURE_FEDERATED_TOKEN_FILE; or the managed identity) and its permission to get secrets".to_owned()
        }
        (ErrorKind::PermissionDenied, _) => {
            "check the identity used (token, role, keys) and its access policy".to_owned()
        }
        (ErrorKind::InvalidSecret, provider) => format!(
            "store the secret as {{\"token\": ...}} or {{\"username\": ..., \"password\": ...}}, in the form {} wants",
            provider.map_or("the auth mode", ProviderKind::auth_mode_var)
        ),
        (ErrorKind::Rejected, _) => {
            "the backend refuses to serve this secret; see its message".to_owned()
        }
        (ErrorKind::Throttled, _) => "the backend is rate-limiting this client; retry later".to_owned(),
        (ErrorKind::CircuitOpen, _) => {
            "the backend failed repeatedly; wait for the breaker to close".to_owned()
        }
        (_, Some(ProviderKind::File)) => {
            "check that the file MLFLOW_SECRETS_FILE_PATH names can be read".to_owned()
        }
        _ => "check that the backend is running and reachable at the address above".to_owned(),
    }
}

/// The variables naming a platform token file (Vault JWT/Kubernetes login,
/// Azure workload identity, AWS web identity).
const TOKEN_FILE_VARS: [&str; 3] = [
    "MLFLOW_VAULT_JWT_FILE",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
];

/// The fields of a provider's description that say who it is to its
/// backend and how long that session stays valid (never a token).
const IDENTITY_FIELDS: [&str; 4] = ["auth", "session", "credential", "credentials"];

/// Each configured backend's identity, as its provider describes it after a
/// fetch; `None` when no provider has one (a file).
fn identities(auth: &SecretsAuth) -> Option<String> {
    let shown: Vec<String> = auth
        .status()
        .iter()
        .filter(|s| s.configured)
        .filter_map(|s| {
            let description = s.description.as_ref()?;
            let fields: Vec<String> = description
                .fields
                .iter()
                .filter(|(key, _)| IDENTITY_FIELDS.contains(key))
                .map(|(key, value)| format!("{key}={value}"))
                .collect();
            (!fields.is_empty()).then(|| format!("{}: {}", s.name, fields.join(", ")))
        })
        .collect();
    (!shown.is_empty()).then(|| shown.join("; "))
}

/// Whether the backend answered (the secret is missing, malformed or
/// refused) rather than being unreachable or refusing the identity. The
/// file provider's backend is the file: a file that is missing or cannot be
/// read is its backend not answering.
fn answered(error: &SecretError) -> bool {
    match error
        .provider()
        .and_then(|p| p.parse::<ProviderKind>().ok())
    {
        Some(ProviderKind::File) => error.kind() == ErrorKind::InvalidSecret,
        _ => matches!(
            error.kind(),
            ErrorKind::NotFound | ErrorKind::InvalidSecret | ErrorKind::Rejected
        ),
    }
}

/// A fix, followed by the set names that nothing reads (a misspelt variable
/// is the usual cause of a missing one).
fn fix_with_unread(fix: &str, auth: &SecretsAuth) -> String {
    let unread = crate::run::unread(auth);
    if unread.is_empty() {
        fix.to_owned()
    } else {
        format!("{fix}; {unread}")
    }
}

/// The credential's fields, values masked.
fn fields(credential: &Credential) -> String {
    match credential {
        Credential::Token(token) => format!("token {}", mask(token.expose_secret())),
        Credential::UserPassword { username, password } => format!(
            "username {}, password {}",
            mask(username.expose_secret()),
            mask_password(password.expose_secret())
        ),
    }
}

/// With the OAuth2 exchange on: how long the token obtained stays valid
/// and, for a JWT, what it says of itself (`iss`, `aud`, `scope`, `exp`) —
/// an `aud` the gateway does not expect shows here; never the token.
fn oauth_token(auth: &SecretsAuth, credential: &Credential) -> Option<String> {
    use mlflow_secrets_auth::providers::oauth;
    let on = [oauth::TOKEN_URL, oauth::ISSUER]
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
    let Credential::Token(token) = credential else {
        return None;
    };
    if !on {
        return None;
    }
    let valid = auth.entry().map_or_else(
        || "not cached".to_owned(),
        |entry| format!("valid for {} s more", entry.remaining.as_secs()),
    );
    let Some(claims) = oauth::claims(token.expose_secret()) else {
        return Some(format!("{valid}; opaque (not a JWT)"));
    };
    let said = |v: &str| mlflow_secrets_auth::classify::server_said(v);
    let mut parts = Vec::new();
    if let Some(issuer) = &claims.issuer {
        parts.push(format!("iss {}", said(issuer)));
    }
    if !claims.audience.is_empty() {
        parts.push(format!("aud {}", said(&claims.audience.join(", "))));
    }
    if let Some(scope) = &claims.scope {
        parts.push(format!("scope {}", said(scope)));
    }
    if let Some(expires) = claims.expires {
        let left = expires
            .duration_since(std::time::SystemTime::now())
            .map_or_else(|_| "passed".to_owned(), |d| format!("in {} s", d.as_secs()));
        parts.push(format!("exp {left}"));
    }
    Some(format!("{valid}; a JWT: {}", parts.join(", ")))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

pub fn run(dry_run: Option<&str>, json_output: bool) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let checks = runtime.block_on(checks(dry_run));
    let passed = checks.iter().all(|c| c.ok);
    if json_output {
        let list: Vec<_> = checks
            .iter()
            .enumerate()
            .map(|(i, c)| json!({"number": i + 1, "check": c.name, "ok": c.ok, "detail": c.detail, "fix": c.fix}))
            .collect();
        println!(
            "{}",
            redacted_json(&json!({ "passed": passed, "checks": list }))?
        );
    } else {
        for (i, check) in checks.iter().enumerate() {
            println!(
                "{}",
                redacted(format!(
                    "{:>2}. {} {:<24}{}",
                    i + 1,
                    mark(check.ok),
                    check.name,
                    check.detail
                ))
            );
            if let Some(fix) = &check.fix {
                println!("{}", redacted(format!("       fix: {fix}")));
            }
        }
    }
    Ok(if passed { SUCCESS } else { FAILURE })
}

async fn checks(dry_run: Option<&str>) -> Vec<Check> {
    let mut checks = Vec::new();
    let auth = match SecretsAuth::from_env() {
        Ok(auth) => auth,
        Err(e) => {
            checks.push(Check::fail("configuration", e.to_string(), fix_for(&e)));
            return checks;
        }
    };
    let status = auth.status();
    let configured: Vec<&str> = status
        .iter()
        .filter(|s| s.configured)
        .map(|s| s.name)
        .collect();
    if configured.is_empty() {
        let why = status
            .iter()
            .find_map(|s| s.problem.clone())
            .unwrap_or_else(|| "no provider is enabled".to_owned());
        let fix = if status.iter().any(|s| s.problem.is_some()) {
            "set or correct the variables named above"
        } else {
            "set MLFLOW_SECRETS_AUTH_ENABLE (vault, aws-secrets-manager, azure-key-vault or file) and that provider's variables"
        };
        checks.push(Check::fail(
            "provider resolution",
            why,
            fix_with_unread(fix, &auth),
        ));
        return checks;
    }
    checks.push(Check::pass("provider resolution", configured.join(" → ")));
    if let Some((address, answered)) = crate::cache::probe().await {
        checks.push(match answered {
            Ok(status) => Check::pass(
                "agent reachable",
                format!("{address} answered: {}", crate::cache::serves(&status)),
            ),
            Err(error) => Check::fail(
                "agent reachable",
                error,
                "start the agent (mlflow-secrets-auth agent) or unset MLFLOW_SECRETS_AGENT; until then the other providers serve",
            ),
        });
    }
    let problems: Vec<String> = status.iter().filter_map(|s| s.problem.clone()).collect();
    checks.push(if problems.is_empty() {
        let warnings = auth.warnings().len();
        Check::pass(
            "configuration",
            if warnings == 0 {
                "no warnings".to_owned()
            } else {
                format!(
                    "{warnings} warning(s): {}",
                    auth.warnings()
                        .iter()
                        .map(|w| w.message())
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            },
        )
    } else {
        Check::fail(
            "configuration",
            problems.join("; "),
            fix_with_unread(
                "fix the variables named above, or disable that provider",
                &auth,
            ),
        )
    });

    let start = Instant::now();
    let warmed = auth.warm().await;
    let took = ms(start.elapsed());
    let providers = configured.join(", ");
    match &warmed {
        Ok(served) => {
            checks.push(Check::pass(
                "backend reachable",
                format!("{served} answered in {took}"),
            ));
            if let Some(identity) = identities(&auth) {
                checks.push(Check::pass("identity", identity));
            }
        }
        // The backend answered, but not with a usable secret: reachability
        // and auth are fine, the next check says what is wrong.
        Err(e) if answered(e) => checks.push(Check::pass(
            "backend reachable",
            format!("{providers} answered in {took}"),
        )),
        Err(e) => {
            checks.push(Check::fail("backend reachable", e.to_string(), fix_for(e)));
            return checks;
        }
    }
    match auth.credential_unchecked().await {
        Ok(credential) => {
            checks.push(Check::pass("secret parsed", fields(&credential)));
            if let Some(detail) = oauth_token(&auth, &credential) {
                checks.push(Check::pass("oauth token", detail));
            }
        }
        Err(e) => {
            checks.push(Check::fail("secret parsed", e.to_string(), fix_for(&e)));
            return checks;
        }
    }
    match auth.header_unchecked().await {
        Ok(header) => checks.push(Check::pass("build header", header.to_string())),
        Err(e) => {
            checks.push(Check::fail("build header", e.to_string(), fix_for(&e)));
            return checks;
        }
    }
    let hits = auth.stats().hits;
    let start = Instant::now();
    let _ = auth.header_unchecked().await;
    let again = start.elapsed();
    checks.push(if auth.stats().hits > hits {
        Check::pass(
            "cache",
            format!("second fetch was a cache hit ({})", ms(again)),
        )
    } else {
        Check::fail(
            "cache",
            format!("second fetch went to the backend ({})", ms(again)),
            "unset MLFLOW_SECRETS_CACHE_DISABLED unless you mean it",
        )
    });

    if let Some(target) = dry_run {
        dry_run_checks(&auth, target, &mut checks).await;
    }
    checks
}

async fn dry_run_checks(auth: &SecretsAuth, target: &str, checks: &mut Vec<Check>) {
    let Ok(base) = Url::parse(target) else {
        checks.push(Check::fail(
            "host allowed",
            format!("`{target}` is not a URL"),
            "pass the tracking server's URL, e.g. https://mlflow.example.com",
        ));
        return;
    };
    let api = match base.join("api/2.0/mlflow/experiments/search?max_results=1") {
        Ok(url) => url,
        Err(e) => {
            checks.push(Check::fail(
                "host allowed",
                e.to_string(),
                "pass the server's base URL",
            ));
            return;
        }
    };
    // Decided on the URL the call goes to, exactly as it is sent.
    let header = match auth.header_for_url(&api).await {
        Ok(Some(header)) => {
            let host = api.host_str().unwrap_or_default();
            let plain = if api.scheme() == "http" && !is_loopback(&api) {
                " (warning: plain http, the credential travels unencrypted; MLFLOW_SECRETS_REQUIRE_TLS=true refuses this)"
            } else {
                ""
            };
            checks.push(Check::pass(
                "host allowed",
                format!("{host} may receive the credential{plain}"),
            ));
            header
        }
        Ok(None) => {
            checks.push(Check::fail(
                "host allowed",
                format!(
                    "{} is not in the allowlist ({})",
                    api.host_str().unwrap_or_default(),
                    auth.config().allowlist
                ),
                "add the host to MLFLOW_SECRETS_ALLOWED_HOSTS",
            ));
            return;
        }
        Err(e) => {
            checks.push(Check::fail("host allowed", e.to_string(), fix_for(&e)));
            return;
        }
    };
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(auth.config().request_timeout);
    if api.scheme() == "http" {
        // Never through a proxy from HTTP_PROXY: it would read the credential.
        builder = builder.no_proxy();
    }
    let client = match builder.build() {
        Ok(client) => client,
        Err(e) => {
            checks.push(Check::fail("MLflow API call", e.to_string(), "report this"));
            return;
        }
    };
    let start = Instant::now();
    let with = client
        .get(api.clone())
        .header(header.name().as_str(), header.value().expose_secret())
        .send()
        .await;
    let took = start.elapsed();
    let without = client.get(api.clone()).send().await;
    let demands = match &without {
        Ok(r) if matches!(r.status().as_u16(), 401 | 403) => "the server demands auth",
        Ok(_) => "the server answers without auth too",
        Err(_) => "unknown whether the server demands auth",
    };
    checks.push(match with {
        Ok(r) if r.status().is_success() => Check::pass(
            "MLflow API call",
            format!("GET {} → {} in {}; {demands}", api.path(), r.status().as_u16(), ms(took)),
        ),
        Ok(r) if matches!(r.status().as_u16(), 401 | 403) => Check::fail(
            "MLflow API call",
            format!("GET {} → {} with the credential; {demands}", api.path(), r.status().as_u16()),
            "the server refuses this credential: check the stored user/password or token, and the auth mode",
        ),
        Ok(r) => Check::fail(
            "MLflow API call",
            format!("GET {} → {}", api.path(), r.status().as_u16()),
            "check that the URL points at an MLflow tracking server",
        ),
        Err(e) => Check::fail(
            "MLflow API call",
            format!("GET {}: {}", api.as_str(), source_chain(&e)),
            "check that the MLflow server is running and reachable",
        ),
    });
}
