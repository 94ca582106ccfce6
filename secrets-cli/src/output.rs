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

/// `label` padded to a column, then `value`.
pub fn line(label: &str, value: impl std::fmt::Display) -> String {
    format!("{label:<24}{value}")
}
