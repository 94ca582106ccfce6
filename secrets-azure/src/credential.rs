//! Which Entra ID credential reads the vault. The official SDK has no
//! `DefaultAzureCredential`; the choice is made here, once, from the
//! environment, in the documented order, and reported by `describe()`.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::ClientOptions;
use azure_identity::{
    AzureCliCredential, AzureCliCredentialOptions, ClientAssertionCredentialOptions,
    ClientSecretCredential, ClientSecretCredentialOptions, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, UserAssignedId, WorkloadIdentityCredential,
    WorkloadIdentityCredentialOptions,
};
use mlflow_secrets_auth_core::secrecy::{ExposeSecret, SecretString};
use mlflow_secrets_auth_core::{Env, ErrorKind, Result, SecretError};

use crate::NAME;

const TENANT: &str = "AZURE_TENANT_ID";
const CLIENT: &str = "AZURE_CLIENT_ID";
const CLIENT_SECRET: &str = "AZURE_CLIENT_SECRET";
const TOKEN_FILE: &str = "AZURE_FEDERATED_TOKEN_FILE";
const IDENTITY_ENDPOINTS: [&str; 2] = ["IDENTITY_ENDPOINT", "MSI_ENDPOINT"];

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
    /// The managed identity of the Azure resource this runs on (App Service,
    /// Functions, Container Apps through `IDENTITY_ENDPOINT`; VMs through IMDS).
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
    /// endpoint (`IDENTITY_ENDPOINT`/`MSI_ENDPOINT`) → the Azure CLI when
    /// `az` is on `PATH` → managed identity through IMDS (an Azure VM).
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
        if env
            .string(&IDENTITY_ENDPOINTS)
            .map_err(with_provider)?
            .is_some()
        {
            return Ok(Self::ManagedIdentity { client_id: client });
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
            Self::ManagedIdentity { .. } => "ManagedIdentityCredential",
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

    /// The SDK credential, its token requests sent with `options`.
    pub(crate) fn build(&self, options: &ClientOptions) -> Result<Arc<dyn TokenCredential>> {
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
            } => WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                credential_options: ClientAssertionCredentialOptions {
                    client_options: options.clone(),
                },
                client_id: Some(client_id.clone()),
                tenant_id: Some(tenant_id.clone()),
                token_file_path: Some(token_file.clone()),
            }))
            .map(|c| c as Arc<dyn TokenCredential>),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn chosen(vars: &[(&str, &str)]) -> Result<AzureCredential> {
        AzureCredential::from_env(&Env::new(&vars))
    }

    const FULL: [(&str, &str); 7] = [
        ("AZURE_TENANT_ID", "tenant-1"),
        ("AZURE_CLIENT_ID", "client-1"),
        ("AZURE_CLIENT_SECRET", "secret-value-1"),
        ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/secrets/token"),
        ("IDENTITY_ENDPOINT", "http://127.0.0.1:41000/msi/token"),
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
            "managed identity (user-assigned, client client-1)"
        );

        vars.retain(|(k, _)| *k != "IDENTITY_ENDPOINT" && *k != "AZURE_CLIENT_ID");
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
        let managed = chosen(&[("PATH", &path), ("MSI_ENDPOINT", "http://127.0.0.1:1/")]).unwrap();
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
    fn debug_never_shows_the_client_secret() {
        let credential = chosen(&FULL).unwrap();
        assert!(!format!("{credential:?}").contains("secret-value-1"));
    }
}
