//! Golden transcripts of `info` and `doctor` (human and `--json`) for each
//! situation a person meets: nothing configured, each provider configured and
//! reachable, backend down, secret malformed, host not allowed, credential
//! refused by MLflow. Each transcript (`golden/<case>.txt`) records the
//! environment, every command, its exit code and its output, with what varies
//! between runs (ports, temporary paths, timings, version) replaced by
//! placeholders. `UPDATE_GOLDEN=1 cargo test -p mlflow-secrets-auth-cli` rewrites them;
//! review the diff.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use regex::Regex;
use secrets_testkit::mlflow::MlflowServer;
use secrets_testkit::moto::{self, MotoServer};
use secrets_testkit::net::closed_port;
use secrets_testkit::openbao::{OpenBao, ROOT_TOKEN};
use serde_json::Value;

use super::{cli, stderr, stdout};

/// The MLflow user every golden case authenticates as (READ on everything).
pub const USER: &str = "golden-user";
/// Its password, which no output may contain.
pub const PASSWORD: &str = "golden-password-7c1d";

/// Variables whose values are secrets: shown as `***` in transcripts.
const SECRET_VARS: &[&str] = &[
    "VAULT_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AZURE_CLIENT_SECRET",
];

/// The shared MLflow server, with [`USER`] created once.
pub fn mlflow() -> Option<&'static MlflowServer> {
    static USER_CREATED: OnceLock<()> = OnceLock::new();
    let server = MlflowServer::shared("golden")?;
    USER_CREATED.get_or_init(|| server.create_user(USER, PASSWORD));
    Some(server)
}

/// The credential as the backends store it.
pub fn secret_json(password: &str) -> String {
    format!(r#"{{"username": "{USER}", "password": "{password}"}}"#)
}

/// One situation: its variables, the commands to run, and the strings that
/// vary between runs with their placeholders.
#[derive(Debug, Default)]
pub struct Case {
    name: &'static str,
    vars: Vec<(String, String)>,
    placeholders: Vec<(String, &'static str)>,
    commands: Vec<Vec<String>>,
}

impl Case {
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            ..Self::default()
        }
    }

    pub fn var(mut self, name: &str, value: impl Into<String>) -> Self {
        self.vars.push((name.to_owned(), value.into()));
        self
    }

    /// Replace `text` by `placeholder` in the transcript.
    pub fn placeholder(mut self, text: impl Into<String>, placeholder: &'static str) -> Self {
        self.placeholders.push((text.into(), placeholder));
        self
    }

    /// Adds `info`, `info --json`, `doctor [--dry-run URL]` and its `--json`.
    pub fn info_and_doctor(mut self, dry_run: Option<&str>) -> Self {
        let mut doctor = vec!["doctor".to_owned()];
        if let Some(url) = dry_run {
            doctor.extend(["--dry-run".to_owned(), url.to_owned()]);
        }
        let mut doctor_json = doctor.clone();
        doctor_json.push("--json".to_owned());
        self.commands.extend([
            vec!["info".to_owned()],
            vec!["info".to_owned(), "--json".to_owned()],
            doctor,
            doctor_json,
        ]);
        self
    }

    /// Adds `info` and `info --json` only (no network).
    pub fn info(mut self) -> Self {
        self.commands.extend([
            vec!["info".to_owned()],
            vec!["info".to_owned(), "--json".to_owned()],
        ]);
        self
    }

    /// Adds one command.
    pub fn command(mut self, args: &[&str]) -> Self {
        self.commands
            .push(args.iter().map(|a| (*a).to_owned()).collect());
        self
    }

    fn normalise(&self, text: &str) -> String {
        static MILLIS: OnceLock<Regex> = OnceLock::new();
        let mut text = text.replace(env!("CARGO_PKG_VERSION"), "<version>");
        for (value, placeholder) in &self.placeholders {
            text = text.replace(value.as_str(), placeholder);
        }
        MILLIS
            .get_or_init(|| Regex::new(r"\d+\.\d ms").unwrap())
            .replace_all(&text, "<t> ms")
            .into_owned()
    }

    /// Runs every command, checks what must hold whatever the transcript
    /// says (no secret printed, `--json` parses), and compares the transcript
    /// with the golden file. Returns the exit codes.
    pub fn check(self) -> Vec<Option<i32>> {
        let vars: Vec<(&str, &str)> = self
            .vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut transcript = String::from("# environment\n");
        for (name, value) in &vars {
            let shown = if SECRET_VARS.contains(name) {
                "***".to_owned()
            } else {
                self.normalise(value)
            };
            transcript.push_str(&format!("{name}={shown}\n"));
        }
        let mut codes = Vec::new();
        for args in &self.commands {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let output = cli(&vars, &args);
            let (out, err) = (stdout(&output), stderr(&output));
            for secret in [PASSWORD, ROOT_TOKEN, moto::SECRET_KEY] {
                assert!(
                    !out.contains(secret) && !err.contains(secret),
                    "{}: `{}` printed a secret:\n{out}{err}",
                    self.name,
                    args.join(" ")
                );
            }
            if args.contains(&"--json") {
                serde_json::from_str::<Value>(&out).unwrap_or_else(|e| {
                    panic!(
                        "{}: `{}` is not JSON: {e}\n{out}",
                        self.name,
                        args.join(" ")
                    )
                });
            }
            transcript.push_str(&format!(
                "\n$ mlflow-secrets-auth {}\n[exit {}]\n{}",
                self.normalise(&args.join(" ")),
                output
                    .status
                    .code()
                    .map_or("signal".to_owned(), |c| c.to_string()),
                self.normalise(&out)
            ));
            if !err.is_empty() {
                transcript.push_str(&format!("[stderr]\n{}", self.normalise(&err)));
            }
            codes.push(output.status.code());
        }
        compare(&golden_path(self.name), &transcript);
        codes
    }
}

fn golden_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/cli/golden")
        .join(format!("{name}.txt"))
}

fn compare(path: &Path, actual: &str) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        // Rewriting makes every comparison pass: never where the servers are
        // required (CI).
        assert!(
            std::env::var_os("SECRETS_REQUIRE_SERVERS").is_none(),
            "UPDATE_GOLDEN and SECRETS_REQUIRE_SERVERS are both set: golden files are rewritten by hand, not in CI"
        );
        std::fs::write(path, actual).expect("write the golden file");
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with UPDATE_GOLDEN=1 to create it\n--- actual ---\n{actual}",
            path.display()
        )
    });
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(e, a)| e != a)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs from the output, first at line {}\n--- expected ---\n{expected}\n--- actual ---\n{actual}\n(UPDATE_GOLDEN=1 rewrites it)",
            path.display(),
            first + 1
        );
    }
}

/// The file provider reading `path`, for hosts `hosts`.
pub fn file_case(name: &'static str, dir: &Path, path: &Path, hosts: &str) -> Case {
    Case::new(name)
        .placeholder(dir.display().to_string(), "<dir>")
        .var("MLFLOW_SECRETS_AUTH_ENABLE", "file")
        .var("MLFLOW_SECRETS_FILE_PATH", path.display().to_string())
        .var("MLFLOW_FILE_AUTH_MODE", "basic")
        .var("MLFLOW_SECRETS_ALLOWED_HOSTS", hosts)
}

/// The vault provider reading `secret/mlflow` at `addr`.
pub fn vault_case(name: &'static str, addr: &str) -> Case {
    Case::new(name)
        .placeholder(addr, "<vault>")
        .var("MLFLOW_SECRETS_AUTH_ENABLE", "vault")
        .var("VAULT_ADDR", addr)
        .var("VAULT_TOKEN", ROOT_TOKEN)
        .var("MLFLOW_VAULT_SECRET_PATH", "secret/mlflow")
        .var("MLFLOW_VAULT_AUTH_MODE", "basic")
        .var("MLFLOW_SECRETS_ALLOWED_HOSTS", "127.0.0.1")
        .var("MLFLOW_SECRETS_MAX_RETRIES", "0")
}

/// The AWS provider reading secret `mlflow` from moto at `endpoint`.
pub fn aws_case(name: &'static str, endpoint: &str) -> Case {
    Case::new(name)
        .placeholder(endpoint, "<moto>")
        .var("MLFLOW_SECRETS_AUTH_ENABLE", "aws-secrets-manager")
        .var("AWS_ENDPOINT_URL", endpoint)
        .var("AWS_REGION", moto::REGION)
        .var("AWS_ACCESS_KEY_ID", moto::ACCESS_KEY)
        .var("AWS_SECRET_ACCESS_KEY", moto::SECRET_KEY)
        .var("AWS_EC2_METADATA_DISABLED", "true")
        .var("MLFLOW_AWS_SECRET_NAME", "mlflow")
        .var("MLFLOW_AWS_AUTH_MODE", "basic")
        .var("MLFLOW_SECRETS_ALLOWED_HOSTS", "127.0.0.1")
        .var("MLFLOW_SECRETS_MAX_RETRIES", "0")
}

/// A secret file holding `text` in a new temporary folder.
pub fn secret_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret.json");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn nothing_configured() {
    let codes = Case::new("nothing-configured")
        .info_and_doctor(None)
        .check();
    assert_eq!(codes, [Some(1); 4]);
}

#[test]
fn a_misspelt_variable_is_named_with_the_one_meant() {
    // The file's path is set under a near-miss name: every face says which
    // variable is not set, once, and which name was probably meant.
    let codes = Case::new("variable-misspelt")
        .var("MLFLOW_SECRETS_AUTH_ENABLE", "file")
        .var("MLFLOW_SECRETS_FILE_PAHT", "/run/secrets/mlflow.json")
        .var("MLFLOW_SECRETS_ALLOWED_HOSTS", "127.0.0.1")
        .info_and_doctor(None)
        .command(&["header", "--url", "http://127.0.0.1:5000"])
        .check();
    assert_eq!(codes, [Some(1); 5]);
}

#[test]
fn file_configured_and_reachable() {
    let Some(mlflow) = mlflow() else { return };
    let (dir, path) = secret_file(&secret_json(PASSWORD));
    let codes = file_case("file-reachable", dir.path(), &path, "127.0.0.1")
        .placeholder(mlflow.url(), "<mlflow>")
        .info_and_doctor(Some(&mlflow.url()))
        .check();
    assert_eq!(codes, [Some(0); 4]);
}

#[test]
fn vault_configured_and_reachable() {
    let Some(mlflow) = mlflow() else { return };
    let Some(bao) = OpenBao::start("golden vault") else {
        return;
    };
    bao.admin(
        "POST",
        "secret/data/mlflow",
        &format!(r#"{{"data": {}}}"#, secret_json(PASSWORD)),
    );
    let codes = vault_case("vault-reachable", &bao.url())
        .placeholder(mlflow.url(), "<mlflow>")
        .info_and_doctor(Some(&mlflow.url()))
        .check();
    assert_eq!(codes, [Some(0); 4]);
}

#[test]
fn aws_configured_and_reachable() {
    let Some(mlflow) = mlflow() else { return };
    let Some(moto) = MotoServer::start("golden aws") else {
        return;
    };
    moto.create_secret("mlflow", &secret_json(PASSWORD));
    let codes = aws_case("aws-reachable", &moto.url())
        .placeholder(mlflow.url(), "<mlflow>")
        .info_and_doctor(Some(&mlflow.url()))
        .check();
    assert_eq!(codes, [Some(0); 4]);
}

#[test]
fn backend_down() {
    let addr = format!("http://{}", closed_port());
    let codes = vault_case("backend-down", &addr)
        .info_and_doctor(None)
        .check();
    // Configured (info passes), unreachable (doctor fails).
    assert_eq!(codes, [Some(0), Some(0), Some(1), Some(1)]);
}

#[test]
fn secret_malformed() {
    let Some(bao) = OpenBao::start("golden malformed") else {
        return;
    };
    bao.admin(
        "POST",
        "secret/data/mlflow",
        &format!(r#"{{"data": {{"username": "{USER}", "passwd": "{PASSWORD}"}}}}"#),
    );
    let codes = vault_case("secret-malformed", &bao.url())
        .info_and_doctor(None)
        .check();
    assert_eq!(codes, [Some(0), Some(0), Some(1), Some(1)]);
}

#[test]
fn host_not_allowed() {
    let Some(mlflow) = mlflow() else { return };
    let (dir, path) = secret_file(&secret_json(PASSWORD));
    let codes = file_case("host-not-allowed", dir.path(), &path, "mlflow.example.com")
        .placeholder(mlflow.url(), "<mlflow>")
        .info_and_doctor(Some(&mlflow.url()))
        .check();
    assert_eq!(codes, [Some(0), Some(0), Some(1), Some(1)]);
}

#[test]
fn credential_refused_by_mlflow() {
    let Some(mlflow) = mlflow() else { return };
    let (dir, path) = secret_file(&secret_json("not-the-password-1"));
    let codes = file_case("credential-refused", dir.path(), &path, "127.0.0.1")
        .placeholder(mlflow.url(), "<mlflow>")
        .info_and_doctor(Some(&mlflow.url()))
        .check();
    assert_eq!(codes, [Some(0), Some(0), Some(1), Some(1)]);
}

#[test]
fn azure_configured() {
    // `info` only: no network, so a real vault name is safe here.
    let codes = Case::new("azure-configured")
        .var("MLFLOW_SECRETS_AUTH_ENABLE", "azure-key-vault")
        .var("AZURE_KEY_VAULT_URL", "https://mlflow-prod.vault.azure.net")
        .var("MLFLOW_AZURE_SECRET_NAME", "mlflow-credential")
        .var("AZURE_TENANT_ID", "72f988bf-86f1-41af-91ab-2d7cd011db47")
        .var("AZURE_CLIENT_ID", "3f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b")
        .var("AZURE_CLIENT_SECRET", PASSWORD)
        .var("MLFLOW_AZURE_AUTH_MODE", "bearer")
        .var("MLFLOW_SECRETS_ALLOWED_HOSTS", "mlflow.example.com")
        .info()
        .check();
    assert_eq!(codes, [Some(0); 2]);
}
