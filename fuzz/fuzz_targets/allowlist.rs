//! Allowlist patterns and hosts: never a panic, and a permitted URL is an
//! http(s) URL whose host matches one of the patterns by a plain reference
//! matcher (`*`, `?`, case-insensitive; patterns with classes are skipped).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlflow_secrets_auth_core::HostAllowlist;

/// Glob match of `pattern` on `host`, both lower-case: `*` any run, `?` one char.
fn glob(pattern: &[u8], host: &[u8]) -> bool {
    match (pattern.first(), host.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob(&pattern[1..], host) || (!host.is_empty() && glob(pattern, &host[1..]))
        }
        (Some(b'?'), Some(_)) => glob(&pattern[1..], &host[1..]),
        (Some(p), Some(h)) => p == h && glob(&pattern[1..], &host[1..]),
        _ => false,
    }
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
