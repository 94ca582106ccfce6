//! Which Entra ID credential reads the vault. The official SDK has no
//! `DefaultAzureCredential`; the choice is made here, once, from the
//! environment, in the documented order, and reported by `describe()`.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_core::error::ErrorKind as AzureKind;
use azure_core::http::{ClientMethodOptions, ClientOptions, StatusCode, Url};
use azure_core::time::OffsetDateTime;
use azure_identity::{
    AzureCliCredential, AzureCliCredentialOptions, ClientAssertion, ClientAssertionCredential,
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
};
use mlflow_secrets_auth_core::secrecy::{ExposeSecret, SecretString};
use mlflow_secrets_auth_core::{
    Env, ErrorKind, Result, SecretError, checked_endpoint, classify, read_token_file,
};

use crate::NAME;

const TENANT: &str = "AZURE_TENANT_ID";
const CLIENT: &str = "AZURE_CLIENT_ID";
const CLIENT_SECRET: &str = "AZURE_CLIENT_SECRET";
const TOKEN_FILE: &str = "AZURE_FEDERATED_TOKEN_FILE";
const IDENTITY_ENDPOINT: &str = "IDENTITY_ENDPOINT";
const IDENTITY_HEADER: &str = "IDENTITY_HEADER";
const MSI_ENDPOINT: &str = "MSI_ENDPOINT";
/// The identity endpoint's protocol version (App Service, Functions,
/// Container Apps).
const IDENTITY_API_VERSION: &str = "2019-08-01";
/// The largest answer read from an identity endpoint.
const MAX_IDENTITY_ANSWER: usize = 64 * 1024;

/// The credential used to get Key Vault tokens.
#[derive(Clone)]
#[non_exhaustive]
pub enum AzureCredential {
    /// An app registration's client secret (`AZURE_TENANT_ID`,
    /// `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`).
    ClientSecret {
        /// The tenant.
        tenant_id: String,
        /// The application (client) id.
        client_id: String,
        /// The client secret.
        secret: SecretString,
    },
    /// Workload identity federation (Kubernetes): a service account token in
    /// `AZURE_FEDERATED_TOKEN_FILE`, exchanged for the app's token.
    WorkloadIdentity {
        /// The tenant.
        tenant_id: String,
        /// The application (client) id.
        client_id: String,
        /// The file holding the service account token.
        token_file: PathBuf,
    },
    /// The managed identity of an App Service, Functions or Container Apps
    /// resource, from its local identity endpoint (`IDENTITY_ENDPOINT`, which
    /// must be answered with the `IDENTITY_HEADER` secret).
    IdentityEndpoint {
        /// The endpoint, e.g. `http://localhost:42356/msi/token`.
        endpoint: String,
        /// The `IDENTITY_HEADER` value the platform gives the process.
        header: SecretString,
        /// A user-assigned identity's client id (`AZURE_CLIENT_ID`); `None`
        /// for the system-assigned identity.
        client_id: Option<String>,
    },
    /// The managed identity of the Azure VM this runs on, through IMDS.
    ManagedIdentity {
        /// A user-assigned identity's client id (`AZURE_CLIENT_ID`); `None`
        /// for the system-assigned identity.
        client_id: Option<String>,
    },
    /// The account logged in with `az login`.
    AzureCli {
        /// The tenant to get tokens for (`AZURE_TENANT_ID`), else the CLI's default.
        tenant_id: Option<String>,
    },
}

impl fmt::Debug for AzureCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl AzureCredential {
    /// The first credential the environment configures, in this order:
    /// client secret → workload identity → managed identity with an identity
    /// endpoint (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`) → the Azure CLI when
    /// `az` is on `PATH` → managed identity through IMDS (an Azure VM).
    /// `MSI_ENDPOINT` (Cloud Shell, Azure ML) and an `IDENTITY_ENDPOINT`
    /// without `IDENTITY_HEADER` (Azure Arc) are not supported: an error, not
    /// a fall through to IMDS.
    ///
    /// A half-configured credential (e.g. a client secret without a tenant) is
    /// a configuration error naming the missing variable, not a silent fall
    /// through to the next one.
    pub fn from_env(env: &Env<'_>) -> Result<Self> {
        let with_provider = |e: SecretError| e.with_provider(NAME);
        let tenant = env.string(&[TENANT]).map_err(with_provider)?;
        let client = env.string(&[CLIENT]).map_err(with_provider)?;
        let require = |value: &Option<String>, name: &str, for_what: &str| {
            value.clone().ok_or_else(|| {
                SecretError::unset(name, format!("{for_what} needs it")).with_provider(NAME)
            })
        };
        if let Some(secret) = env.secret(&[CLIENT_SECRET]).map_err(with_provider)? {
            return Ok(Self::ClientSecret {
                tenant_id: require(&tenant, TENANT, CLIENT_SECRET)?,
                client_id: require(&client, CLIENT, CLIENT_SECRET)?,
                secret,
            });
        }
        if let Some(file) = env.string(&[TOKEN_FILE]).map_err(with_provider)? {
            return Ok(Self::WorkloadIdentity {
                tenant_id: require(&tenant, TENANT, TOKEN_FILE)?,
                client_id: require(&client, CLIENT, TOKEN_FILE)?,
                token_file: PathBuf::from(file),
            });
        }
        if let Some((var, endpoint)) = env.lookup(&[IDENTITY_ENDPOINT]).map_err(with_provider)? {
            let endpoint = checked_endpoint(
                &endpoint,
                var,
                &["http", "https"],
                "http://localhost:42356/msi/token",
            )
            .map_err(with_provider)?;
            let header = env.secret(&[IDENTITY_HEADER]).map_err(with_provider)?;
            let header = header.ok_or_else(|| {
                SecretError::unset(
                    IDENTITY_HEADER,
                    format!(
                        "{IDENTITY_ENDPOINT} is; the identity endpoint needs both (Azure Arc's form is not supported)"
                    ),
                )
                .with_provider(NAME)
            })?;
            return Ok(Self::IdentityEndpoint {
                endpoint,
                header,
                client_id: client,
            });
        }
        if env
            .string(&[MSI_ENDPOINT])
            .map_err(with_provider)?
            .is_some()
        {
            return Err(SecretError::config(
                MSI_ENDPOINT,
                "is set: Cloud Shell's and Azure ML's managed identity is not supported; use a client secret or workload identity there",
            )
            .with_provider(NAME));
        }
        let path = env.string(&["PATH"]).map_err(with_provider)?;
        if path.is_some_and(|p| std::env::split_paths(&p).any(|dir| dir.join("az").is_file())) {
            return Ok(Self::AzureCli { tenant_id: tenant });
        }
        Ok(Self::ManagedIdentity { client_id: client })
    }

    /// The SDK type behind it, as its errors name it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::ClientSecret { .. } => "ClientSecretCredential",
            Self::WorkloadIdentity { .. } => "WorkloadIdentityCredential",
            Self::IdentityEndpoint { .. } | Self::ManagedIdentity { .. } => {
                "ManagedIdentityCredential"
            }
            Self::AzureCli { .. } => "AzureCliCredential",
        }
    }

    /// What it is, without secrets: `client secret (tenant …, client …)`.
    pub fn describe(&self) -> String {
        match self {
            Self::ClientSecret {
                tenant_id,
                client_id,
                ..
            } => format!("client secret (tenant {tenant_id}, client {client_id})"),
            Self::WorkloadIdentity {
                tenant_id,
                client_id,
                token_file,
            } => format!(
                "workload identity (tenant {tenant_id}, client {client_id}, token file {})",
                token_file.display()
            ),
            Self::IdentityEndpoint {
                endpoint,
                client_id,
                ..
            } => match client_id {
                None => format!("managed identity (system-assigned, endpoint {endpoint})"),
                Some(id) => {
                    format!("managed identity (user-assigned, client {id}, endpoint {endpoint})")
                }
            },
            Self::ManagedIdentity { client_id: None } => {
                "managed identity (system-assigned)".to_owned()
            }
            Self::ManagedIdentity {
                client_id: Some(id),
            } => format!("managed identity (user-assigned, client {id})"),
            Self::AzureCli { tenant_id: None } => "Azure CLI (default tenant)".to_owned(),
            Self::AzureCli {
                tenant_id: Some(tenant),
            } => format!("Azure CLI (tenant {tenant})"),
        }
    }

    /// The SDK credential, its token requests sent with `options` (`http`
    /// for an identity endpoint).
    pub(crate) fn build(
        &self,
        options: &ClientOptions,
        http: &reqwest::Client,
    ) -> Result<Arc<dyn TokenCredential>> {
        let built: azure_core::Result<Arc<dyn TokenCredential>> = match self {
            Self::ClientSecret {
                tenant_id,
                client_id,
                secret,
            } => ClientSecretCredential::new(
                tenant_id,
                client_id.clone(),
                Secret::new(secret.expose_secret().to_owned()),
                Some(ClientSecretCredentialOptions {
                    client_options: options.clone(),
                }),
            )
            .map(|c| c as Arc<dyn TokenCredential>),
            Self::WorkloadIdentity {
                tenant_id,
                client_id,
                token_file,
            } => ClientAssertionCredential::new(
                tenant_id.clone(),
                client_id.clone(),
                FederatedToken {
                    file: token_file.clone(),
                },
                Some(ClientAssertionCredentialOptions {
                    client_options: options.clone(),
                }),
            )
            .map(|c| c as Arc<dyn TokenCredential>),
            Self::IdentityEndpoint {
                endpoint,
                header,
                client_id,
            } => Url::parse(endpoint)
                .map_err(|e| azure_core::Error::new(AzureKind::Credential, e))
                .and_then(|endpoint| {
                    // The platform's endpoints are plain http on the machine:
                    // a client of their own, no proxy, no redirect (the
                    // header would follow one to another host).
                    let http = if endpoint.scheme() == "http" {
                        mlflow_secrets_auth_core::proxy::https_only(reqwest::Client::builder())
                            .redirect(reqwest::redirect::Policy::none())
                            .build()
                            .map_err(|e| azure_core::Error::new(AzureKind::Credential, e))?
                    } else {
                        http.clone()
                    };
                    Ok(Arc::new(IdentityEndpointCredential {
                        endpoint,
                        header: header.clone(),
                        client_id: client_id.clone(),
                        http,
                    }) as Arc<dyn TokenCredential>)
                }),
            Self::ManagedIdentity { client_id } => {
                ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                    user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                    client_options: options.clone(),
                }))
                .map(|c| c as Arc<dyn TokenCredential>)
            }
            Self::AzureCli { tenant_id } => {
                AzureCliCredential::new(Some(AzureCliCredentialOptions {
                    tenant_id: tenant_id.clone(),
                    ..Default::default()
                }))
                .map(|c| c as Arc<dyn TokenCredential>)
            }
        };
        built.map_err(|e| {
            SecretError::new(
                ErrorKind::Config,
                format!(
                    "the {} cannot be built (check {TENANT} and {CLIENT}): {e}",
                    self.type_name()
                ),
            )
            .with_provider(NAME)
        })
    }
}

/// The federated token, read from its file at every token request: Kubernetes
/// rotates a projected token every hour, and the SDK's own credential keeps
/// the first read for ten minutes.
#[derive(Debug)]
struct FederatedToken {
    file: PathBuf,
}

#[async_trait::async_trait]
impl ClientAssertion for FederatedToken {
    async fn secret(&self, _: Option<ClientMethodOptions<'_>>) -> azure_core::Result<String> {
        match read_token_file(TOKEN_FILE, &self.file, "azure federated token") {
            Ok(token) => Ok(token.as_str().to_owned()),
            Err(e) => {
                let message = e.to_string();
                Err(azure_core::Error::with_error(
                    AzureKind::Credential,
                    e.with_provider(NAME),
                    message,
                ))
            }
        }
    }
}

/// A managed identity's token from the identity endpoint of App Service,
/// Functions or Container Apps. The SDK's own reads the endpoint from the
/// process environment; this one from the [`Env`] the provider was
/// configured with, so what `describe()` reports is what is used.
struct IdentityEndpointCredential {
    endpoint: Url,
    header: SecretString,
    client_id: Option<String>,
    http: reqwest::Client,
}

impl fmt::Debug for IdentityEndpointCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityEndpointCredential")
            .field("endpoint", &self.endpoint.as_str())
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// An identity endpoint's answer: `expires_on` is Unix seconds, as a string
/// (App Service) or a number.
#[derive(serde::Deserialize)]
struct IdentityToken {
    access_token: String,
    expires_on: serde_json::Value,
}

fn credential_failure(message: String) -> azure_core::Error {
    azure_core::Error::with_message(AzureKind::Credential, message)
}

#[async_trait::async_trait]
impl TokenCredential for IdentityEndpointCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        _: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        // A credential's failure, with what the endpoint said as its cause
        // (as the SDK's own credentials report theirs).
        self.request(scopes).await.map_err(|e| {
            let message = e.to_string();
            azure_core::Error::with_error(AzureKind::Credential, e, message)
        })
    }
}

impl IdentityEndpointCredential {
    async fn request(&self, scopes: &[&str]) -> azure_core::Result<AccessToken> {
        let [scope] = scopes else {
            return Err(credential_failure(
                "the identity endpoint takes exactly one scope".to_owned(),
            ));
        };
        let mut url = self.endpoint.clone();
        url.query_pairs_mut()
            .append_pair("api-version", IDENTITY_API_VERSION)
            .append_pair("resource", scope.strip_suffix("/.default").unwrap_or(scope));
        if let Some(id) = &self.client_id {
            url.query_pairs_mut().append_pair("client_id", id);
        }
        let response = self
            .http
            .get(url)
            .header("X-IDENTITY-HEADER", self.header.expose_secret())
            .header("Metadata", "true")
            .send()
            .await
            .map_err(|e| azure_core::Error::new(AzureKind::Connection, e))?;
        let status = response.status().as_u16();
        if (300..400).contains(&status) {
            return Err(credential_failure(format!(
                "{IDENTITY_ENDPOINT} answered a redirect (HTTP {status}), which is not followed"
            )));
        }
        let body = mlflow_secrets_auth_core::http::bounded_body(
            response,
            MAX_IDENTITY_ANSWER,
            "the identity endpoint",
        )
        .await
        .map_err(|e| azure_core::Error::new(AzureKind::Io, e))?;
        if !(200..300).contains(&status) {
            let said = classify::server_said(&String::from_utf8_lossy(&body));
            return Err(azure_core::Error::with_message(
                AzureKind::HttpResponse {
                    status: StatusCode::from(status),
                    error_code: None,
                    raw_response: None,
                },
                format!("{IDENTITY_ENDPOINT} answered HTTP {status}: {said}"),
            ));
        }
        let token: IdentityToken = serde_json::from_slice(&body).map_err(|e| {
            credential_failure(format!(
                "the answer of {IDENTITY_ENDPOINT} holds no access token ({e})"
            ))
        })?;
        let expires_on = match &token.expires_on {
            serde_json::Value::String(s) => s.trim().parse::<i64>().ok(),
            serde_json::Value::Number(n) => n.as_i64(),
            _ => None,
        }
        .and_then(|at| OffsetDateTime::from_unix_timestamp(at).ok())
        .ok_or_else(|| {
            credential_failure(format!(
                "the answer of {IDENTITY_ENDPOINT} has no usable `expires_on`"
            ))
        })?;
        if token.access_token.is_empty() {
            return Err(credential_failure(format!(
                "the answer of {IDENTITY_ENDPOINT} has an empty `access_token`"
            )));
        }
        mlflow_secrets_auth_core::hide_while_current("azure access token", &token.access_token);
        Ok(AccessToken::new(
            Secret::new(token.access_token),
            expires_on,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chosen(vars: &[(&str, &str)]) -> Result<AzureCredential> {
        AzureCredential::from_env(&Env::new(&vars))
    }

    const FULL: [(&str, &str); 8] = [
        ("AZURE_TENANT_ID", "tenant-1"),
        ("AZURE_CLIENT_ID", "client-1"),
        ("AZURE_CLIENT_SECRET", "secret-value-1"),
        ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/secrets/token"),
        ("IDENTITY_ENDPOINT", "http://127.0.0.1:41000/msi/token"),
        ("IDENTITY_HEADER", "identity-header-value-1"),
        ("PATH", "/nonexistent"),
        ("UNRELATED", "x"),
    ];

    #[test]
    fn the_first_configured_credential_wins_in_the_documented_order() {
        let mut vars = FULL.to_vec();
        let described = chosen(&vars).unwrap().describe();
        assert_eq!(
            described,
            "client secret (tenant tenant-1, client client-1)"
        );

        vars.retain(|(k, _)| *k != "AZURE_CLIENT_SECRET");
        assert_eq!(
            chosen(&vars).unwrap().describe(),
            "workload identity (tenant tenant-1, client client-1, token file /var/run/secrets/token)"
        );

        vars.retain(|(k, _)| *k != "AZURE_FEDERATED_TOKEN_FILE");
        assert_eq!(
            chosen(&vars).unwrap().describe(),
            "managed identity (user-assigned, client client-1, endpoint http://127.0.0.1:41000/msi/token)"
        );

        vars.retain(|(k, _)| *k != "IDENTITY_ENDPOINT");
        assert_eq!(
            chosen(&vars).unwrap().describe(),
            "managed identity (user-assigned, client client-1)"
        );

        vars.retain(|(k, _)| *k != "AZURE_CLIENT_ID");
        assert_eq!(
            chosen(&vars).unwrap().describe(),
            "managed identity (system-assigned)",
            "no `az` on PATH: the VM's identity through IMDS"
        );
    }

    #[test]
    fn the_azure_cli_is_chosen_when_az_is_on_path_and_nothing_else_is_set() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("az"), "#!/bin/sh\n").unwrap();
        let path = dir.path().display().to_string();
        let cli = chosen(&[("PATH", &path), ("AZURE_TENANT_ID", "tenant-9")]).unwrap();
        assert_eq!(cli.describe(), "Azure CLI (tenant tenant-9)");
        assert_eq!(cli.type_name(), "AzureCliCredential");
        // An identity endpoint still comes first.
        let managed = chosen(&[
            ("PATH", &path),
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi/token"),
            ("IDENTITY_HEADER", "h"),
        ])
        .unwrap();
        assert_eq!(managed.type_name(), "ManagedIdentityCredential");
    }

    #[test]
    fn a_half_configured_credential_names_the_missing_variable() {
        let err = chosen(&[
            ("AZURE_CLIENT_SECRET", "s3cret-value"),
            ("AZURE_CLIENT_ID", "c"),
        ])
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("AZURE_TENANT_ID"), "{err}");
        assert!(!err.to_string().contains("s3cret-value"), "{err}");

        let err = chosen(&[
            ("AZURE_FEDERATED_TOKEN_FILE", "/token"),
            ("AZURE_TENANT_ID", "t"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("AZURE_CLIENT_ID"), "{err}");
    }

    #[test]
    fn an_identity_endpoint_form_we_cannot_serve_is_an_error_not_imds() {
        let arc = chosen(&[(
            "IDENTITY_ENDPOINT",
            "http://127.0.0.1:40342/metadata/identity/oauth2/token",
        )])
        .unwrap_err();
        assert_eq!(arc.kind(), ErrorKind::Config);
        assert!(arc.to_string().contains("IDENTITY_HEADER"), "{arc}");

        let shell = chosen(&[("MSI_ENDPOINT", "http://localhost:50342/oauth2/token")]).unwrap_err();
        assert_eq!(shell.kind(), ErrorKind::Config);
        assert!(shell.to_string().contains("MSI_ENDPOINT"), "{shell}");

        let bad = chosen(&[
            ("IDENTITY_ENDPOINT", "localhost:1"),
            ("IDENTITY_HEADER", "h"),
        ])
        .unwrap_err();
        assert!(bad.to_string().contains("IDENTITY_ENDPOINT"), "{bad}");
    }

    #[test]
    fn debug_never_shows_the_client_secret() {
        let credential = chosen(&FULL).unwrap();
        assert!(!format!("{credential:?}").contains("secret-value-1"));
    }
}
