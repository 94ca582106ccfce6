//! The built-in file provider passes the whole suite: secrets are files in
//! a temporary directory, written as a secret mount would hold them.

use std::path::PathBuf;

use async_trait::async_trait;
use mlflow_secrets_auth_conformance::SecretStore;
use mlflow_secrets_auth_core::{FileProvider, SecretProvider};

struct FileStore {
    dir: tempfile::TempDir,
}

impl FileStore {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, bytes: &[u8]) {
        let path = self.path(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("the secret's directory");
        }
        std::fs::write(path, bytes).expect("the secret file");
    }
}

#[async_trait]
impl SecretStore for FileStore {
    async fn put_text(&self, name: &str, text: &str) {
        self.write(name, text.as_bytes());
    }

    async fn put_binary(&self, name: &str, bytes: &[u8]) {
        self.write(name, bytes);
    }

    fn provider(&self, name: &str) -> Box<dyn SecretProvider> {
        Box::new(FileProvider::new(self.path(name)))
    }
}

async fn file_store(_case: &'static str) -> Option<FileStore> {
    Some(FileStore {
        dir: tempfile::tempdir().expect("a temporary directory"),
    })
}

mlflow_secrets_auth_conformance::conformance_suite!(file_store);
