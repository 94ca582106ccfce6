//! Allowlist patterns and hosts: never a panic, and a permitted URL is an
//! http(s) URL whose host matches one of the patterns by a plain reference
//! matcher (`*`, `?`, case-insensitive; patterns with classes are skipped).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlflow_secrets_auth_core::HostAllowlist;

/// Glob match of `pattern` on `host`, both lower-case: `*` any run, `?` one
/// char. A table of prefix matches, so a pattern of many stars takes
/// `pattern.len() * host.len()` steps rather than exponential time.
fn glob(pattern: &[u8], host: &[u8]) -> bool {
    // `row[j]`: the pattern read so far matches `host[..j]`.
    let mut row = vec![false; host.len() + 1];
    row[0] = true;
    for &p in pattern {
        let mut next = vec![false; host.len() + 1];
        for j in 0..=host.len() {
            next[j] = match p {
                b'*' => row[j] || (j > 0 && next[j - 1]),
                b'?' => j > 0 && row[j - 1],
                _ => j > 0 && row[j - 1] && host[j - 1] == p,
            };
        }
        row = next;
    }
    row[host.len()]
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (patterns, candidate) = text
        .split_once('\n')
        .unwrap_or((text, "mlflow.example.com"));
    let Ok(allowlist) = HostAllowlist::parse(patterns) else {
        return;
    };
    for url in [
        candidate.to_owned(),
        format!("https://{candidate}/api"),
        format!("http://{candidate}:5000/"),
    ] {
        if !allowlist.permits(&url) || !allowlist.is_restricted() {
            continue;
        }
        let parsed = url::Url::parse(&url).expect("a permitted URL parses");
        assert!(matches!(parsed.scheme(), "http" | "https"), "{url}");
        let host = parsed.host_str().expect("a permitted URL has a host");
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let matched = allowlist.patterns().any(|p| {
            p.contains('[')
                || glob(
                    p.trim_end_matches('.').to_ascii_lowercase().as_bytes(),
                    host.as_bytes(),
                )
        });
        assert!(matched, "{url} permitted by no pattern of {patterns:?}");
    }
});
