//! The `mlflow-secrets-auth` binary, run as a person or a script would, with
//! only the variables each test sets: exit codes, what is printed, what is
//! never printed, `exec` with a real MLflow server and the Python client.

mod golden;
mod handed_on;
mod identity;
mod readme;

use std::path::Path;
use std::process::{Command, Output};

use secrets_testkit::hostile::{Answer, HostileKit};
use secrets_testkit::mlflow::{ADMIN_USER, MlflowServer};
use serde_json::Value;

const PASSWORD: &str = "pw-cli-test-4f1e9a";

fn cli(vars: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mlflow-secrets-auth"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(vars.iter().copied())
        .args(args)
        .output()
        .expect("run the CLI")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A file holding a username/password secret, and the variables using it.
fn file_secret(dir: &Path, user: &str, password: &str) -> String {
    let path = dir.join("secret.json");
    std::fs::write(
        &path,
        format!(r#"{{"username": "{user}", "password": "{password}"}}"#),
    )
    .unwrap();
    path.display().to_string()
}

/// The Vault provider's variables for `address` and `token`, the secret at
/// `secret/x`, 127.0.0.1 allowed.
fn vault_vars<'a>(address: &'a str, token: &'a str) -> [(&'a str, &'a str); 5] {
    [
        ("MLFLOW_SECRETS_AUTH_ENABLE", "vault"),
        ("VAULT_ADDR", address),
        ("VAULT_TOKEN", token),
        ("MLFLOW_VAULT_SECRET_PATH", "secret/x"),
        ("MLFLOW_SECRETS_ALLOWED_HOSTS", "127.0.0.1"),
    ]
}

fn file_vars<'a>(path: &'a str, hosts: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("MLFLOW_SECRETS_AUTH_ENABLE", "file"),
        ("MLFLOW_SECRETS_FILE_PATH", path),
        ("MLFLOW_FILE_AUTH_MODE", "basic"),
        ("MLFLOW_SECRETS_ALLOWED_HOSTS", hosts),
    ]
}

#[test]
fn info_with_nothing_configured_exits_1_and_says_what_to_set() {
    let output = cli(&[], &["info"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout(&output).contains("MLFLOW_SECRETS_AUTH_ENABLE"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn info_json_describes_the_configuration_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_secret(dir.path(), "alice", PASSWORD);
    let mut vars = file_vars(&path, "mlflow.example.com");
    vars.push(("MLFLOW_SECRETS_AUTH_ENABLE", "file,vault"));
    let output = cli(&vars, &["info", "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let info: Value = serde_json::from_str(&stdout(&output)).unwrap();
    let providers = info["providers"].as_array().unwrap();
    let file = providers.iter().find(|p| p["name"] == "file").unwrap();
    assert_eq!(file["configured"], true);
    assert_eq!(file["auth_mode"], "basic");
    assert_eq!(file["description"]["path"], path.as_str());
    let vault = providers.iter().find(|p| p["name"] == "vault").unwrap();
    assert_eq!(vault["configured"], false);
    assert!(vault["problem"].as_str().unwrap().contains("VAULT_ADDR"));
    assert_eq!(info["allowed_hosts"][0], "mlflow.example.com");
    assert_eq!(info["header"], "Authorization");
    assert!(!stdout(&output).contains(PASSWORD));

    let human = cli(&vars, &["info"]);
    assert_eq!(human.status.code(), Some(0));
    assert!(!stdout(&human).contains(PASSWORD));
    assert!(stdout(&human).contains("basic mode"), "{}", stdout(&human));
}

#[test]
fn header_prints_for_an_allowed_host_and_refuses_others() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_secret(dir.path(), "alice", PASSWORD);
    let vars = file_vars(&path, "mlflow.example.com");
    let output = cli(&vars, &["header", "--url", "https://mlflow.example.com/"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "Authorization: Basic YWxpY2U6cHctY2xpLXRlc3QtNGYxZTlh\n"
    );

    let refused = cli(&vars, &["header", "--url", "https://evil.example.com/"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("not in MLFLOW_SECRETS_ALLOWED_HOSTS"));
    assert!(stdout(&refused).is_empty());
}

#[test]
fn exec_passes_the_credential_and_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_secret(dir.path(), "alice", PASSWORD);
    let mut vars = file_vars(&path, "127.0.0.1");
    vars.push(("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000"));
    vars.push(("NO_PROXY", "corp.example"));
    let output = cli(
        &vars,
        &[
            "exec",
            "--",
            "sh",
            "-c",
            "echo \"$MLFLOW_TRACKING_USERNAME:$MLFLOW_TRACKING_PASSWORD:${MLFLOW_TRACKING_TOKEN:-none}\"; echo \"$NO_PROXY|$no_proxy\"; exit 7",
        ],
    );
    assert_eq!(output.status.code(), Some(7));
    // Over plain http the child reaches the server directly: a proxy from
    // HTTP_PROXY would read the credential.
    assert_eq!(
        stdout(&output),
        format!("alice:{PASSWORD}:none\ncorp.example,127.0.0.1|corp.example,127.0.0.1\n")
    );
}

#[test]
fn exec_refuses_a_disallowed_host_and_does_not_run_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_secret(dir.path(), "alice", PASSWORD);
    let marker = dir.path().join("ran");
    let vars = file_vars(&path, "127.0.0.1");
    let output = cli(
        &vars,
        &[
            "exec",
            "--url",
            "https://127.0.0.1@evil.example.com/",
            "--",
            "touch",
            marker.to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(1));
    // Userinfo makes it no plain URL: refused naming where it came from.
    assert!(
        stderr(&output).contains("--url: is not a plain"),
        "{}",
        stderr(&output)
    );
    assert!(!marker.exists(), "the command must not run");
    // A plain URL of a host not allowed: refused naming the allowlist.
    let output = cli(
        &vars,
        &[
            "exec",
            "--url",
            "https://evil.example.com/",
            "--",
            "touch",
            marker.to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("refusing"), "{}", stderr(&output));
    assert!(!marker.exists(), "the command must not run");
}

#[test]
fn exec_runs_the_python_mlflow_client_with_only_the_env_it_sets() {
    let Some(mlflow) = MlflowServer::shared("exec_python") else {
        return;
    };
    let python = secrets_testkit::venv_dir().join("bin/python");
    let dir = tempfile::tempdir().unwrap();
    let path = file_secret(dir.path(), ADMIN_USER, mlflow.admin_password());
    let script = "import mlflow\n\
                  mlflow.set_experiment('cli-exec')\n\
                  with mlflow.start_run() as run:\n    mlflow.log_metric('accuracy', 0.75)\n\
                  print(mlflow.get_run(run.info.run_id).data.metrics['accuracy'])";
    let url = mlflow.url();
    let output = cli(
        &file_vars(&path, "127.0.0.1"),
        &[
            "exec",
            "--url",
            &url,
            "--",
            python.to_str().unwrap(),
            "-c",
            script,
        ],
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    assert_eq!(stdout(&output).trim().lines().last(), Some("0.75"));
}

#[test]
fn completions_are_valid_scripts_naming_every_command() {
    let output = cli(&[], &["completions", "bash"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let script = stdout(&output);
    for command in [
        "info",
        "doctor",
        "exec",
        "header",
        "completions",
        "--dry-run",
    ] {
        assert!(script.contains(command), "bash completion lacks {command}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("completion.bash");
    std::fs::write(&path, &script).unwrap();
    let syntax = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(syntax.status.success(), "{}", stderr(&syntax));

    for shell in ["zsh", "fish"] {
        let output = cli(&[], &["completions", shell]);
        assert_eq!(output.status.code(), Some(0));
        assert!(stdout(&output).contains("doctor"));
    }
    let unknown = cli(&[], &["completions", "tcsh"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(stderr(&unknown).contains("possible values"));
}

#[test]
fn output_cut_short_ends_the_command_quietly() {
    // `completions bash | head -0`: the reader is gone before anything is written.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = Command::new(env!("CARGO_BIN_EXE_mlflow-secrets-auth"))
        .env_clear()
        .args(["completions", "bash"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run the CLI");
    assert_eq!(output.status.code(), Some(141), "{}", stderr(&output));
    assert_eq!(stderr(&output), "");
}

#[test]
fn version_and_usage_errors() {
    let output = cli(&[], &["--version"]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        stdout(&output),
        format!("mlflow-secrets-auth {}\n", env!("CARGO_PKG_VERSION"))
    );
    let output = cli(&[], &["exec"]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "a missing command is a usage error"
    );
    let output = cli(&[], &["--log-level", "loud", "info"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("--log-level"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_blank_allowlist_is_refused_by_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_secret(dir.path(), "alice", PASSWORD);
    let vars = file_vars(&path, "");
    for args in [
        &["info"][..],
        &["doctor"],
        &["header", "--url", "https://mlflow.example.com"],
        &["exec", "--url", "https://mlflow.example.com", "--", "true"],
    ] {
        let output = cli(&vars, args);
        assert_ne!(output.status.code(), Some(0), "{args:?}");
        let text = format!("{}{}", stdout(&output), stderr(&output));
        assert!(
            text.contains("MLFLOW_SECRETS_ALLOWED_HOSTS"),
            "{args:?}: {text}"
        );
        assert!(!text.contains(PASSWORD), "{args:?}");
    }
}

#[test]
fn doctor_judges_the_file_at_its_own_step_with_the_files_fix() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // A missing file: the backend (the file) is not there.
    let missing = dir.path().join("missing.json").display().to_string();
    let output = cli(&file_vars(&missing, "127.0.0.1"), &["doctor"]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("FAIL backend reachable"), "{text}");
    assert!(!text.contains("OK   backend reachable"), "{text}");
    assert!(
        text.contains("fix: create the file MLFLOW_SECRETS_FILE_PATH names"),
        "{text}"
    );
    assert!(!text.contains("token, role, keys"), "{text}");
    // A username/password secret under the bearer mode: the variable is named.
    let path = file_secret(dir.path(), "alice", PASSWORD);
    let mut vars = file_vars(&path, "127.0.0.1");
    vars.retain(|(name, _)| *name != "MLFLOW_FILE_AUTH_MODE");
    vars.push(("MLFLOW_FILE_AUTH_MODE", "bearer"));
    let output = cli(&vars, &["doctor"]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("MLFLOW_FILE_AUTH_MODE=bearer"), "{text}");
    assert!(
        text.contains("in the form MLFLOW_FILE_AUTH_MODE wants"),
        "{text}"
    );
    assert!(!text.contains(PASSWORD), "{text}");
    // A file this user may not read (root's, 0600, read as uid 65534).
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_mlflow-secrets-auth"))
        .arg("doctor")
        .env_clear()
        .envs(file_vars(&path, "127.0.0.1"))
        .output()
        .expect("run setpriv");
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}{}", stderr(&output));
    assert!(text.contains("FAIL backend reachable"), "{text}");
    assert!(text.contains("readable by this user"), "{text}");
}

#[test]
fn common_url_mistakes_get_a_sentence_saying_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_secret(dir.path(), "alice", PASSWORD);
    let vars = file_vars(&path, "127.0.0.1");
    // No URL at all.
    let output = cli(&vars, &["header"]);
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert!(
        text.contains("set MLFLOW_TRACKING_URI or pass --url"),
        "{text}"
    );
    assert!(!text.contains("environment variable not found"), "{text}");
    // A local file store needs no credential.
    let mut local = vars.clone();
    local.push(("MLFLOW_TRACKING_URI", "file:///tmp/mlruns"));
    let output = cli(&local, &["exec", "--", "true"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("local file store"),
        "{}",
        stderr(&output)
    );
    // A proxy upstream without a scheme.
    for upstream in [
        "127.0.0.1:5000",
        "mlflow.example.com:5000",
        "mlflow.example.com",
    ] {
        let output = cli(&vars, &["proxy", "--upstream", upstream]);
        assert_eq!(output.status.code(), Some(1), "{upstream}");
        let text = stderr(&output);
        assert!(
            text.contains(&format!("write http://{upstream} or https://{upstream}")),
            "{upstream}: {text}"
        );
    }
}

#[test]
fn no_face_prints_a_secret_held_in_an_address_variable() {
    // Tokens where an address was expected: in a query, a fragment, a path,
    // percent-encoded userinfo, or pasted in place of the address.
    const MARK: &str = "SECRETQ1x";
    let addresses = [
        format!("https://127.0.0.1:1/?token={MARK}"),
        format!("https://127.0.0.1:1/#{MARK}"),
        format!("https://127.0.0.1:1/a!{MARK}"),
        format!("https://u:{MARK}%40127.0.0.1:1"),
        format!("hvs.{MARK}"),
    ];
    let variables: [(&str, &[(&str, &str)]); 4] = [
        (
            "VAULT_ADDR",
            &[
                ("MLFLOW_SECRETS_AUTH_ENABLE", "vault"),
                ("VAULT_TOKEN", "t"),
                ("MLFLOW_VAULT_SECRET_PATH", "secret/x"),
            ],
        ),
        (
            "AWS_ENDPOINT_URL",
            &[
                ("MLFLOW_SECRETS_AUTH_ENABLE", "aws-secrets-manager"),
                ("MLFLOW_AWS_SECRET_NAME", "x"),
                ("AWS_REGION", "us-east-1"),
            ],
        ),
        (
            "AZURE_KEY_VAULT_URL",
            &[
                ("MLFLOW_SECRETS_AUTH_ENABLE", "azure-key-vault"),
                ("MLFLOW_AZURE_SECRET_NAME", "x"),
            ],
        ),
        ("MLFLOW_SECRETS_AGENT", &[]),
    ];
    for address in &addresses {
        for (variable, others) in variables {
            let mut vars: Vec<(&str, &str)> = others.to_vec();
            vars.push((variable, address));
            vars.push(("MLFLOW_SECRETS_ALLOWED_HOSTS", "127.0.0.1"));
            for args in [
                &["info"][..],
                &["info", "--json"],
                &["doctor"],
                &["doctor", "--json"],
                &["header", "--url", "http://127.0.0.1:1"],
            ] {
                let output = cli(&vars, args);
                let said = format!("{}{}", stdout(&output), stderr(&output));
                assert!(
                    !said.contains(MARK),
                    "{variable}={address} {args:?}:\n{said}"
                );
                assert!(said.contains(variable), "{variable} {args:?}:\n{said}");
            }
        }
    }
}

#[test]
fn a_backend_echoing_the_token_bare_never_gets_it_printed() {
    // Nothing marks the token as one (no `Bearer`, no `token:` or `=`), so
    // only the literal value the CLI read can hide it.
    const TOKEN: &str = "hvs.CAESIechoedBack42xyz";
    let kit = HostileKit::start();
    let body = format!(r#"{{"errors":["permission denied for {TOKEN} on secret/data/x"]}}"#);
    kit.script(
        "allowed",
        "/",
        vec![Answer {
            body,
            ..Answer::status(403)
        }],
    );
    let address = kit.url("allowed");
    let vars = vault_vars(&address, TOKEN);
    for args in [
        &["doctor"][..],
        &["doctor", "--json"],
        &[
            "header",
            "--url",
            "http://127.0.0.1:1",
            "--log-level",
            "trace",
        ],
    ] {
        let output = cli(&vars, args);
        let said = format!("{}{}", stdout(&output), stderr(&output));
        assert!(!said.contains("CAESIechoed"), "{args:?}:\n{said}");
        // The server's words still come through, the token hidden.
        assert!(
            said.contains("permission denied for ***"),
            "{args:?}:\n{said}"
        );
    }
    assert!(
        kit.saw("allowed", TOKEN),
        "the backend was asked with the token"
    );
}

#[test]
fn doctor_shows_the_oauth_token_it_obtained_and_never_the_token_or_the_secret() {
    use secrets_testkit::oidc::{OidcClient, OidcServer};
    const SECRET: &str = "client-secret-for-doctor-71";
    let client = OidcClient::new("doctor-client", SECRET, "client_secret_basic");
    let Some(idp) = OidcServer::start_one(
        "cli: doctor with OAuth2",
        &client,
        std::time::Duration::from_secs(600),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = client.store_in(dir.path());
    let issuer = idp.issuer();
    let mut vars = file_vars(&path, "127.0.0.1");
    vars.extend([
        ("MLFLOW_SECRETS_OAUTH_ISSUER", issuer.as_str()),
        ("MLFLOW_SECRETS_OAUTH_SCOPE", "mlflow"),
        (
            "MLFLOW_SECRETS_OAUTH_RESOURCE",
            "https://mlflow.example.com",
        ),
    ]);
    let output = cli(&vars, &["doctor"]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}{}", stderr(&output));
    let line = text
        .lines()
        .find(|l| l.contains("oauth token"))
        .unwrap_or_else(|| panic!("no oauth check:\n{text}"));
    for part in [
        "valid for",
        &format!("iss {issuer}"),
        "aud https://mlflow.example.com",
        "scope mlflow",
        "exp in",
    ] {
        assert!(line.contains(part), "{part}: {line}");
    }
    let info = stdout(&cli(&vars, &["info"]));
    assert!(
        info.contains(&issuer) && info.contains("client_secret_basic"),
        "{info}"
    );
    for said in [&text, &stderr(&output), &info] {
        assert!(!said.contains(SECRET), "{said}");
        assert!(!said.contains("eyJhbGci"), "no JWT shown: {said}");
    }
}

#[test]
fn no_credential_in_plain_http_goes_through_a_proxy_from_the_environment() {
    use secrets_testkit::capture::CaptureServer;
    // Any request through it would hand it the secret in plain text.
    let proxy = CaptureServer::start();
    let kit = HostileKit::start();
    let target = kit.url("allowed");
    let dir = tempfile::tempdir().unwrap();
    let client = dir.path().join("client.json");
    std::fs::write(
        &client,
        r#"{"client_id": "c", "client_secret": "proxy-test-client-secret"}"#,
    )
    .unwrap();
    let client = client.display().to_string();
    let token = dir.path().join("token");
    std::fs::write(&token, "proxy-test-mlflow-token").unwrap();
    let token = token.display().to_string();
    let token_url = format!("{target}/token");
    let proxy_url = proxy.url();
    let via = [
        ("HTTP_PROXY", proxy_url.as_str()),
        ("http_proxy", proxy_url.as_str()),
        ("ALL_PROXY", proxy_url.as_str()),
    ];
    type Face<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
    let faces: [Face<'_>; 4] = [
        // Vault on plain http (loopback).
        (
            &[
                ("MLFLOW_SECRETS_AUTH_ENABLE", "vault"),
                ("VAULT_ADDR", &target),
                ("VAULT_TOKEN", "hvs.proxy-test-vault-token"),
                ("MLFLOW_VAULT_SECRET_PATH", "secret/x"),
            ],
            &["header", "--url", "http://127.0.0.1:1"],
        ),
        // AWS Secrets Manager on plain http (loopback): signed, with a
        // session token a proxy could replay.
        (
            &[
                ("MLFLOW_SECRETS_AUTH_ENABLE", "aws-secrets-manager"),
                ("AWS_ENDPOINT_URL", &target),
                ("AWS_REGION", "us-east-1"),
                ("AWS_ACCESS_KEY_ID", "AKIAPROXYTEST"),
                ("AWS_SECRET_ACCESS_KEY", "proxy-test-aws-secret-key"),
                ("AWS_SESSION_TOKEN", "proxy-test-aws-session-token"),
                ("AWS_EC2_METADATA_DISABLED", "true"),
                ("MLFLOW_AWS_SECRET_NAME", "x"),
            ],
            &["header", "--url", "http://127.0.0.1:1"],
        ),
        // An OAuth2 token endpoint on plain http (loopback).
        (
            &[
                ("MLFLOW_SECRETS_AUTH_ENABLE", "file"),
                ("MLFLOW_SECRETS_FILE_PATH", &client),
                ("MLFLOW_SECRETS_OAUTH_TOKEN_URL", &token_url),
            ],
            &["header", "--url", "http://127.0.0.1:1"],
        ),
        // doctor's call to an MLflow server on plain http.
        (
            &[
                ("MLFLOW_SECRETS_AUTH_ENABLE", "file"),
                ("MLFLOW_SECRETS_FILE_PATH", &token),
            ],
            &["doctor", "--dry-run", &target],
        ),
    ];
    for (vars, args) in faces {
        let mut all: Vec<(&str, &str)> = vars.to_vec();
        all.extend(via);
        all.push(("MLFLOW_SECRETS_ALLOWED_HOSTS", "127.0.0.1"));
        let before = kit.requests("allowed").len();
        let output = cli(&all, args);
        assert!(
            kit.requests("allowed").len() > before,
            "{args:?}: the server was not asked directly: {}",
            stderr(&output)
        );
        assert!(
            proxy.requests().is_empty(),
            "{args:?} went through the proxy"
        );
    }
}

#[test]
fn vault_redirects_are_not_followed_so_the_token_goes_nowhere_else() {
    const TOKEN: &str = "hvs.redirect-test-token-0123456789";
    let kit = HostileKit::start();
    let thief = kit.url("thief");
    kit.script(
        "allowed",
        "/",
        vec![Answer::redirect(307, &format!("{thief}/v1/secret/data/x"))],
    );
    let address = kit.url("allowed");
    let vars = vault_vars(&address, TOKEN);
    let output = cli(&vars, &["header", "--url", "http://127.0.0.1:1"]);
    assert_ne!(output.status.code(), Some(0), "{}", stdout(&output));
    assert!(!kit.requests("allowed").is_empty(), "Vault was asked");
    assert!(
        kit.requests("thief").is_empty(),
        "the redirect was followed"
    );
    assert!(!kit.saw("thief", TOKEN));
}
