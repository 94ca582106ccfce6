//! Checks that keep the documentation true to the code.
//!
//! `docs/configuration.md` and the code name the same environment variables:
//! every variable a string literal of a library or the command line names is
//! documented there, and every variable documented there is named by the code.
//! Names with a placeholder in the docs (`MLFLOW_<P>_TTL_SEC`) stand for
//! every name of that shape.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Where the variables the product reads are named.
const SOURCES: &[&str] = &[
    "secrets-core/src",
    "secrets-cache/src",
    "secrets-retry/src",
    "secrets-vault/src",
    "secrets-aws/src",
    "secrets-azure/src",
    "secrets-agent/src",
    "mlflow-secrets-auth/src",
    "secrets-server/src",
    "secrets-cli/src",
    "mlflow-secrets-auth-py/src",
];

/// Documented because users set them for us, but read by other programs.
const READ_BY_OTHERS: &[&str] = &[
    // MLflow's client picks its auth plugin by it.
    "MLFLOW_TRACKING_AUTH",
    // Read by nothing: the docs' example of a misspelt name.
    "MLFLOW_SECRETS_AUTH_ENABLED",
    // Read by the AWS SDK's own credential chain (web identity, EKS Pod
    // Identity), which our code leaves alone.
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_ENDPOINT_URL_STS",
];

/// The families of names that are environment variables.
const PREFIXES: &[&str] = &[
    "MLFLOW_",
    "VAULT_",
    "BAO_",
    "AWS_",
    "AZURE_",
    "IDENTITY_",
    "MSI_",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir)
        .expect("a source directory")
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// Words made of `A-Z`, `0-9` and `_` that start with a prefix and end in a
/// letter or digit; a word right before `<` (a placeholder) is returned with
/// the placeholder as `*`.
fn names(text: &str, found: &mut BTreeSet<String>) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let word = |b: u8| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_';
        if !word(bytes[i]) || (i > 0 && (word(bytes[i - 1]) || bytes[i - 1].is_ascii_lowercase())) {
            i += 1;
            continue;
        }
        let mut name = String::new();
        while i < bytes.len() {
            if word(bytes[i]) {
                name.push(bytes[i] as char);
                i += 1;
            } else if bytes[i] == b'<' && name.ends_with('_') {
                // `<P>` or `<NAME>`: a placeholder.
                match text[i..].find('>') {
                    Some(end) => {
                        name.push('*');
                        i += end + 1;
                    }
                    None => break,
                }
            } else {
                break;
            }
        }
        let name = name.trim_end_matches('_');
        if PREFIXES
            .iter()
            .any(|p| name.starts_with(p) && name.len() > p.len())
        {
            found.insert(name.to_owned());
        }
    }
}

/// The contents of the string literals of Rust code, up to its tests.
fn string_literals(code: &str) -> String {
    let code = code.split("#[cfg(test)]").next().unwrap_or(code);
    let mut out = String::new();
    let mut chars = code.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '\'' => {
                // A char literal such as '"' (a lifetime has no closing quote nearby).
                let next: String = chars.clone().take(3).collect();
                if next.starts_with("\"'") || next.starts_with("\\\"'") {
                    chars.nth(if next.starts_with('\\') { 2 } else { 1 });
                }
            }
            '"' => {
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        c => out.push(c),
                    }
                }
                out.push(' ');
            }
            _ => {}
        }
    }
    out
}

/// Whether `name` is `pattern` (with at most one `*` placeholder).
fn matches(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            name.len() > head.len() + tail.len() && name.starts_with(head) && name.ends_with(tail)
        }
    }
}

#[test]
fn the_configuration_docs_name_every_variable_the_code_reads_and_no_other() {
    let root = root();
    let mut in_code = BTreeSet::new();
    for dir in SOURCES {
        let mut files = Vec::new();
        rust_files(&root.join(dir), &mut files);
        for file in files {
            let code = std::fs::read_to_string(&file).expect("a source file");
            names(&string_literals(&code), &mut in_code);
        }
    }
    let docs = std::fs::read_to_string(root.join("docs/configuration.md")).expect("the docs");
    let mut in_docs = BTreeSet::new();
    names(&docs, &mut in_docs);

    let undocumented: Vec<&String> = in_code
        .iter()
        .filter(|name| !in_docs.iter().any(|doc| matches(doc, name)))
        .collect();
    let unread: Vec<&String> = in_docs
        .iter()
        .filter(|doc| !READ_BY_OTHERS.contains(&doc.as_str()))
        .filter(|doc| !in_code.iter().any(|name| matches(doc, name)))
        .collect();
    assert!(
        undocumented.is_empty() && unread.is_empty(),
        "named by the code but not in docs/configuration.md: {undocumented:?}\n\
         in docs/configuration.md but named by no code: {unread:?}"
    );
    assert!(
        in_code.len() > 30,
        "the scan found the variables: {in_code:?}"
    );
}

#[test]
fn the_scanner_reads_literals_and_placeholders() {
    let mut found = BTreeSet::new();
    names(
        &string_literals(
            r#"let a = "MLFLOW_X_TTL_SEC"; // "MLFLOW_COMMENT"
               let q = '"'; let b = "VAULT_ADDR is \"set\""; CONST_NAME
               #[cfg(test)] "MLFLOW_TEST_ONLY""#,
        ),
        &mut found,
    );
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        ["MLFLOW_X_TTL_SEC", "VAULT_ADDR"]
    );
    let mut docs = BTreeSet::new();
    names(
        "`MLFLOW_<P>_TTL_SEC` and `MLFLOW_SECRETS_AUTH_ENABLE_<NAME>`",
        &mut docs,
    );
    assert!(docs.contains("MLFLOW_*_TTL_SEC"), "{docs:?}");
    assert!(docs.contains("MLFLOW_SECRETS_AUTH_ENABLE_*"), "{docs:?}");
    assert!(matches("MLFLOW_*_TTL_SEC", "MLFLOW_AWS_TTL_SEC"));
    assert!(!matches("MLFLOW_*_TTL_SEC", "MLFLOW_TTL_SEC"));
    assert!(matches(
        "MLFLOW_SECRETS_AUTH_ENABLE_*",
        "MLFLOW_SECRETS_AUTH_ENABLE_FILE"
    ));
}
