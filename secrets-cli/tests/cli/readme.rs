//! Every command the READMEs show names a real subcommand and real flags:
//! `mlflow-secrets-auth …` lines are checked against the binary's own
//! `--help`, `cargo xtask …` lines against the xtask's commands.

use std::path::Path;
use std::process::Command;

/// The lines of the ```sh blocks of `markdown`, trimmed.
fn sh_lines(markdown: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut in_block = false;
    for line in markdown.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            in_block = !in_block && trimmed == "```sh";
        } else if in_block {
            lines.push(trimmed);
        }
    }
    lines
}

/// The shell lines of the ```sh blocks of `markdown`, comments dropped and
/// split at pipes and `&&`.
fn shell_commands(markdown: &str) -> Vec<String> {
    let mut commands = Vec::new();
    for trimmed in sh_lines(markdown) {
        let code = trimmed.split(" #").next().unwrap_or_default();
        let code = if code.starts_with('#') { "" } else { code };
        commands.extend(
            code.split(['|', ';'])
                .flat_map(|part| part.split("&&"))
                .map(|part| part.trim().to_owned())
                .filter(|part| !part.is_empty()),
        );
    }
    commands
}

fn help(args: &[&str]) -> Option<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_mlflow-secrets-auth"))
        .env_clear()
        .args(args)
        .arg("--help")
        .output()
        .expect("run the CLI");
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

#[test]
fn every_command_the_readmes_show_names_a_real_subcommand_and_flag() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let xtask = std::fs::read_to_string(root.join("xtask/src/main.rs")).unwrap();
    let top = help(&[]).expect("top-level help");
    let mut checked = 0;
    for readme in ["README.md", "mlflow-secrets-auth-py/README.md"] {
        let text = std::fs::read_to_string(root.join(readme)).unwrap();
        for command in shell_commands(&text) {
            let words: Vec<&str> = command.split_whitespace().collect();
            let flags = |from: usize| -> Vec<String> {
                words[from..]
                    .iter()
                    .take_while(|w| **w != "--")
                    .filter(|w| w.starts_with("--") && w.len() > 2)
                    .map(|w| w.split('=').next().unwrap_or_default().to_owned())
                    .collect()
            };
            match words.as_slice() {
                ["mlflow-secrets-auth", rest @ ..] => {
                    let chain: Vec<&str> = rest
                        .iter()
                        .take_while(|w| {
                            !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
                        })
                        .filter(|w| !w.starts_with('-'))
                        .copied()
                        .collect();
                    let (depth, text) = (1..=chain.len())
                        .rev()
                        .find_map(|k| help(&chain[..k]).map(|text| (k, text)))
                        .unwrap_or_else(|| panic!("{readme}: `{command}` names no subcommand"));
                    for flag in flags(1) {
                        assert!(
                            text.contains(&flag) || top.contains(&flag),
                            "{readme}: `{command}`: `{} {flag}` does not exist",
                            chain[..depth].join(" ")
                        );
                    }
                    checked += 1;
                }
                ["cargo", "xtask", name, ..] => {
                    assert!(
                        xtask.contains(&format!("Some(\"{name}\")")),
                        "{readme}: `{command}`: no xtask `{name}`"
                    );
                    for flag in flags(3) {
                        assert!(
                            xtask.contains(&flag),
                            "{readme}: `{command}`: no flag {flag}"
                        );
                    }
                    checked += 1;
                }
                _ => {}
            }
        }
    }
    assert!(
        checked >= 10,
        "only {checked} commands found in the READMEs"
    );
}

/// The arguments (`key=value`) of the `bao write PATH …` command in the
/// ```sh blocks of `markdown`, continuation lines joined.
fn bao_write(markdown: &str, path: &str) -> std::collections::BTreeMap<String, String> {
    let mut joined = String::new();
    for trimmed in sh_lines(markdown) {
        match trimmed.strip_suffix('\\') {
            Some(head) => joined.push_str(head),
            None => {
                joined.push_str(trimmed);
                joined.push('\n');
            }
        }
    }
    let prefix = format!("bao write {path} ");
    let command = joined
        .lines()
        .find(|line| line.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no `bao write {path}` in the page"));
    command[prefix.len()..]
        .split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A role as the tests write it, in the page's `key=value` spelling.
fn as_arguments(role: &serde_json::Value) -> std::collections::BTreeMap<String, String> {
    role.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let value = match v {
                serde_json::Value::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().unwrap().to_owned())
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.as_str().unwrap().to_owned(),
            };
            (k.clone(), value)
        })
        .collect()
}

#[test]
fn the_kubernetes_page_configures_what_the_tests_configure() {
    use secrets_testkit::kubernetes::ServiceAccount;
    use secrets_testkit::openbao::{jwt_role, kubernetes_role, read_policy_text};

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let page = std::fs::read_to_string(root.join("docs/kubernetes.md")).unwrap();
    assert_eq!(
        bao_write(&page, "auth/kubernetes/role/trainer"),
        as_arguments(&kubernetes_role(&ServiceAccount::new("ml", "trainer")))
    );
    // The JWT role's lifetimes are the page's choice; the tests vary them.
    let page_role = bao_write(&page, "auth/jwt/role/mlflow");
    let tested = as_arguments(&jwt_role("1h", "4h"));
    assert_eq!(
        page_role.keys().collect::<Vec<_>>(),
        tested.keys().collect::<Vec<_>>()
    );
    for (key, value) in &tested {
        if !key.starts_with("token_") || key == "token_policies" {
            assert_eq!(&page_role[key], value, "{key}");
        }
    }
    assert!(page.contains(&read_policy_text("secret/data/mlflow/auth")));
    for shown in [
        "name: trainer\n  namespace: ml",
        "arn:aws:iam::123456789012:role/mlflow-reader",
        secrets_testkit::azure::CLIENT_ID,
    ] {
        assert!(page.contains(shown), "{shown}");
    }
}
