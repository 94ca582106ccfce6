//! Where server binaries are found, and the one rule for a missing one: under
//! CI (or `SECRETS_REQUIRE_SERVERS=1`) the test fails and says how to install
//! it; elsewhere it prints a loud `SKIPPED` line. Never a silent pass.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The workspace's root folder.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("secrets-testkit lives one level below the workspace root")
}

/// The virtual environment holding server binaries: `SECRETS_TESTKIT_VENV`, else `<root>/.venv`.
pub fn venv_dir() -> PathBuf {
    env::var_os("SECRETS_TESTKIT_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv"))
}

/// Where a missing server binary is looked for, and whether its absence fails the test.
#[derive(Debug, Clone)]
pub struct ServerPolicy {
    /// Folders searched in order.
    pub search_path: Vec<PathBuf>,
    /// `true` under CI or with `SECRETS_REQUIRE_SERVERS` truthy: a missing binary fails.
    pub required: bool,
}

impl ServerPolicy {
    /// The policy of this process: the venv's `bin/` first, then `PATH`.
    pub fn from_env() -> Self {
        let mut search_path = vec![venv_dir().join("bin")];
        search_path.extend(env::split_paths(&env::var_os("PATH").unwrap_or_default()));
        Self {
            search_path,
            required: is_truthy(env::var_os("CI"))
                || is_truthy(env::var_os("SECRETS_REQUIRE_SERVERS")),
        }
    }

    /// The first executable file called `name` on the search path.
    pub fn find(&self, name: &str) -> Option<PathBuf> {
        self.search_path
            .iter()
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    }

    /// Finds `name`, or applies the missing-binary rule: panics when required,
    /// else prints `SKIPPED (no NAME)` to stderr and returns `None`.
    pub fn require(&self, name: &str, test: &str) -> Option<PathBuf> {
        if let Some(found) = self.find(name) {
            return Some(found);
        }
        assert!(
            !self.required,
            "{test}: `{name}` not found in {} or PATH; run `cargo xtask test-env`",
            venv_dir().join("bin").display()
        );
        #[allow(clippy::print_stderr)]
        {
            eprintln!(
                "\n!!!!! {test}: SKIPPED (no {name}); run `cargo xtask test-env` to install it !!!!!\n"
            );
        }
        // cargo shows a passing test's output to nobody: the skip is also
        // written down, for `cargo xtask test` to count and name at the end.
        if let Ok(mut log) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(skipped_log())
        {
            use std::io::Write as _;
            let _ = writeln!(log, "{test}: no {name}");
        }
        None
    }
}

/// Where skipped tests are written down, a line each (`target/skipped-tests.txt`).
pub fn skipped_log() -> PathBuf {
    workspace_root().join("target/skipped-tests.txt")
}

/// [`ServerPolicy::require`] with the policy of this process.
pub fn require_binary(name: &str, test: &str) -> Option<PathBuf> {
    ServerPolicy::from_env().require(name, test)
}

fn is_truthy(value: Option<OsString>) -> bool {
    value.is_some_and(|v| {
        matches!(
            v.to_string_lossy().trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(dir: &Path, required: bool) -> ServerPolicy {
        ServerPolicy {
            search_path: vec![dir.to_path_buf()],
            required,
        }
    }

    #[test]
    fn finds_a_binary_on_the_search_path() {
        let dir = env::temp_dir().join(format!("testkit-find-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("fake_server"), b"").unwrap();
        let found = policy(&dir, true).require("fake_server", "t");
        assert_eq!(found, Some(dir.join("fake_server")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_binary_skips_loudly_when_not_required() {
        assert_eq!(
            policy(Path::new("/nonexistent"), false).require("no_such_server", "t"),
            None
        );
    }

    #[test]
    #[should_panic(expected = "run `cargo xtask test-env`")]
    fn missing_binary_fails_when_required() {
        policy(Path::new("/nonexistent"), true).require("no_such_server", "t");
    }

    #[test]
    fn truthy_values() {
        assert!(is_truthy(Some("TRUE".into())));
        assert!(is_truthy(Some("1".into())));
        assert!(!is_truthy(Some("0".into())));
        assert!(!is_truthy(None));
    }
}
