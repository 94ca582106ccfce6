//! End-to-end demo on the file provider: a secret file → credential → auth
//! header, sent only to allowed hosts: `cargo run -p mlflow-secrets-auth --example file_provider`.
#![allow(clippy::print_stdout)]

use std::error::Error;

use mlflow_secrets_auth::{
    AuthHeader, AuthMode, FileProvider, HeaderName, HostAllowlist, SecretProvider, redact,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    let dir = std::env::temp_dir().join(format!("mlflow-secrets-auth-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("mlflow-credential.json");
    std::fs::write(
        &path,
        r#"{"username": "mlflow-admin", "password": "correct-horse-battery"}"#,
    )?;

    let provider = FileProvider::new(&path);
    println!("provider      {}", provider.describe());
    println!("secret ref    {}", provider.secret_ref());

    let credential = provider.fetch().await?.credential()?;
    println!("secret shape  {}", credential.shape());

    let header = AuthHeader::build(&credential, AuthMode::Basic, &HeaderName::authorization())?;
    println!("header        {header}");
    match AuthHeader::build(&credential, AuthMode::Bearer, &HeaderName::authorization()) {
        Ok(_) => println!("bearer mode   unexpectedly accepted username/password"),
        Err(e) => println!("bearer mode   refused: {e}"),
    }

    let allowlist = HostAllowlist::parse("mlflow.example.com, *.mlflow.internal")?;
    println!("allowlist     {allowlist}");
    for url in [
        "https://mlflow.example.com/api/2.0/mlflow/experiments/search",
        "https://MLFLOW.example.com.:8443/",
        "https://team-a.mlflow.internal/",
        "https://mlflow.example.com@evil.test/",
        "https://mlflow.example.com.evil.test/",
        "not a url",
    ] {
        let verdict = if allowlist.permits(url) {
            "attach"
        } else {
            "refuse"
        };
        println!("  {verdict:<6}  {url}");
    }

    let log_line = r#"GET https://bob:pw@mlflow.example.com {"password": "correct-horse-battery"}"#;
    println!("log redaction {}", redact(log_line));

    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
