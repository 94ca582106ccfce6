//! Output for people: ✓/✗ marks (plain `OK`/`FAIL` when stdout is not a
//! terminal or `NO_COLOR` is set) and aligned `label  value` lines.

use std::io::IsTerminal;

/// Whether to use the Unicode marks.
pub fn fancy() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// The mark for a passed or failed check.
pub fn mark(ok: bool) -> &'static str {
    match (ok, fancy()) {
        (true, true) => "✓",
        (false, true) => "✗",
        (true, false) => "OK  ",
        (false, false) => "FAIL",
    }
}

/// `label` padded to a column, then `value`, redacted: a value may hold
/// text from a variable or a server.
pub fn line(label: &str, value: impl std::fmt::Display) -> String {
    redacted(format!("{label:<24}{value}"))
}

/// `value` as pretty JSON, each string in it redacted ([`redacted`]) —
/// strings, not the JSON text, so the output stays JSON.
pub fn redacted_json(value: &serde_json::Value) -> serde_json::Result<String> {
    fn walk(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(text) => *text = redacted(std::mem::take(text)),
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            serde_json::Value::Object(fields) => fields.values_mut().for_each(walk),
            _ => {}
        }
    }
    let mut value = value.clone();
    walk(&mut value);
    serde_json::to_string_pretty(&value)
}

/// `text` with every credential-looking value hidden ([`mlflow_secrets_auth::redact`]):
/// what `info` and `doctor` print passes through it, as logs and errors do.
pub fn redacted(text: String) -> String {
    match mlflow_secrets_auth::redact(&text) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(hidden) => hidden,
    }
}
