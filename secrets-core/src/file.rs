//! [`FileProvider`]: the built-in provider that reads the secret from a file
//! (Kubernetes secret mounts, Docker secrets). No network; the file is read
//! again each time the cache asks, so a rotated mount is picked up.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use zeroize::Zeroizing;

use crate::credential::MAX_SECRET_BYTES;
use crate::env::Env;
use crate::error::{ErrorKind, Result, SecretError};
use crate::provider::{FetchedSecret, ProviderDescription, SecretProvider};

/// The most a token file ([`read_token_file`]) may hold.
pub const TOKEN_FILE_LIMIT: u64 = 64 * 1024;

/// A platform token (a projected service-account token, a CI job's OIDC
/// token) read from `file` for one login, trimmed. A missing, unreadable,
/// empty or larger than [`TOKEN_FILE_LIMIT`] file is a `config` error naming
/// `variable` and the path. The token is hidden from logs and errors while it
/// is the current one (`label` names it there).
pub fn read_token_file(
    variable: &str,
    file: &Path,
    label: &'static str,
) -> Result<Zeroizing<String>> {
    let unreadable =
        |what: String| SecretError::config(variable, format!("{}: {what}", file.display()));
    // A FIFO or a device would block the read (and the task) or never end.
    let kind = std::fs::metadata(file).map_err(|e| unreadable(format!("cannot be read ({e})")))?;
    if !kind.is_file() {
        return Err(unreadable("is not a regular file".to_owned()));
    }
    let opened = File::open(file).map_err(|e| unreadable(format!("cannot be read ({e})")))?;
    let mut text = Zeroizing::new(String::new());
    opened
        .take(TOKEN_FILE_LIMIT + 1)
        .read_to_string(&mut text)
        .map_err(|e| unreadable(format!("cannot be read ({e})")))?;
    if text.len() as u64 > TOKEN_FILE_LIMIT {
        return Err(unreadable(format!(
            "is larger than {TOKEN_FILE_LIMIT} bytes"
        )));
    }
    let token = Zeroizing::new(text.trim().to_owned());
    if token.is_empty() {
        return Err(unreadable("is empty".to_owned()));
    }
    crate::redact::hide_while_current(label, &token);
    Ok(token)
}

/// Reads the secret text from a file.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use mlflow_secrets_auth_core::{FileProvider, SecretProvider};
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("mlflow-token");
/// # std::fs::write(&path, "{\"token\": \"abc\"}\n")?;
/// let provider = FileProvider::new(&path);
/// let credential = provider.fetch().await?.credential()?;
/// assert_eq!(credential.shape(), "token");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct FileProvider {
    path: PathBuf,
}

impl FileProvider {
    /// Where the secret lives — provider, location, name, version — as one
    /// string for logs, status and tests (never the secret itself).
    pub fn secret_ref(&self) -> String {
        format!("file:{}", self.path.display())
    }

    /// The provider's name.
    pub const NAME: &'static str = "file";
    /// The variable holding the path.
    pub const PATH_VAR: &'static str = "MLFLOW_SECRETS_FILE_PATH";

    /// A provider reading `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Reads `MLFLOW_SECRETS_FILE_PATH`; unset is a config error naming it.
    pub fn from_env(env: &Env<'_>) -> Result<Self> {
        env.string(&[Self::PATH_VAR])?
            .map(Self::new)
            .ok_or_else(|| {
                SecretError::unset(Self::PATH_VAR, "the file holding the secret")
                    .with_provider(Self::NAME)
            })
    }

    /// The file read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<FetchedSecret> {
        let path = self.path.display();
        let io_error = |e: io::Error| {
            let kind = match e.kind() {
                io::ErrorKind::NotFound => ErrorKind::NotFound,
                io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
                _ => ErrorKind::Transient,
            };
            SecretError::new(kind, format!("cannot read secret file {path}: {e}")).with_source(e)
        };
        let file = File::open(&self.path).map_err(io_error)?;
        if file.metadata().map_err(io_error)?.is_dir() {
            return Err(SecretError::config(
                Self::PATH_VAR,
                format!("{path} is a directory, expected a file"),
            ));
        }
        let mut bytes = Zeroizing::new(Vec::new());
        file.take(MAX_SECRET_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(io_error)?;
        if bytes.len() > MAX_SECRET_BYTES {
            return Err(SecretError::invalid_secret(format!(
                "secret file {path} is larger than the {MAX_SECRET_BYTES}-byte limit"
            )));
        }
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            SecretError::invalid_secret(format!(
                "secret file {path} is not UTF-8 text (invalid byte at offset {})",
                e.valid_up_to()
            ))
        })?;
        Ok(FetchedSecret::new(text.into()))
    }
}

#[async_trait]
impl SecretProvider for FileProvider {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    /// Reads the file. The read is synchronous: the file is small (at most
    /// 1 MiB is accepted) and local.
    async fn fetch(&self) -> Result<FetchedSecret> {
        self.read().map_err(|e| e.with_provider(Self::NAME))
    }

    fn describe(&self) -> ProviderDescription {
        ProviderDescription::new(Self::NAME).field("path", self.path.display().to_string())
    }
}
