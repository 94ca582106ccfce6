//! Allowlist patterns and hosts against a reference matcher written here,
//! both ways: never a panic; a permitted URL is an http(s) URL whose host
//! matches a pattern; and an http(s) URL whose plain host (lower-case
//! letters, digits, `.`, `-`, as the URL parser keeps it) matches a pattern
//! is permitted. Globs: `*` any run (dots too), `?` one character, `[..]`
//! and `[!..]` classes with ranges, as a shell reads them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlflow_secrets_auth_core::HostAllowlist;

#[derive(Debug)]
enum Glob {
    Star,
    One,
    Byte(u8),
    Class(bool, Vec<(u8, u8)>),
}

/// A shell's reading of a glob: after `[` (or `[!`, `[^`) a `]` is taken
/// literally in first place; `a-z` is a range unless `-` comes last. `None`
/// for a class never closed (the allowlist refuses those).
fn read_glob(pattern: &[u8]) -> Option<Vec<Glob>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'*' => out.push(Glob::Star),
            b'?' => out.push(Glob::One),
            b'[' => {
                i += 1;
                let negated = matches!(pattern.get(i), Some(b'!' | b'^'));
                if negated {
                    i += 1;
                }
                let start = i;
                let mut ranges = Vec::new();
                loop {
                    let c = *pattern.get(i)?;
                    if c == b']' && i > start {
                        break;
                    }
                    match (pattern.get(i + 1), pattern.get(i + 2)) {
                        (Some(b'-'), Some(&end)) if end != b']' => {
                            ranges.push((c, end));
                            i += 3;
                        }
                        _ => {
                            ranges.push((c, c));
                            i += 1;
                        }
                    }
                }
                out.push(Glob::Class(negated, ranges));
            }
            b => out.push(Glob::Byte(b)),
        }
        i += 1;
    }
    Some(out)
}

/// Whether `glob` matches all of `host`: a table of prefix matches
/// (`pattern × host` steps, never exponential).
fn matches(glob: &[Glob], host: &[u8]) -> bool {
    // `row[j]`: the globs read so far match `host[..j]`.
    let mut row = vec![false; host.len() + 1];
    row[0] = true;
    for g in glob {
        let mut next = vec![false; host.len() + 1];
        for j in 0..=host.len() {
            next[j] = match g {
                Glob::Star => row[j] || (j > 0 && next[j - 1]),
                _ if j == 0 => false,
                Glob::One => row[j - 1],
                Glob::Byte(b) => row[j - 1] && host[j - 1] == *b,
                Glob::Class(negated, ranges) => {
                    let c = host[j - 1];
                    row[j - 1] && (ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated)
                }
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
    if !allowlist.is_restricted() {
        return;
    }
    // The patterns as the allowlist keeps them (lower case, no trailing dot,
    // punycode), read by the reference.
    let globs: Vec<Vec<Glob>> = allowlist
        .patterns()
        .map(|p| read_glob(p.as_bytes()).expect("a pattern the allowlist took closes its classes"))
        .collect();
    let by_reference = |host: &str| globs.iter().any(|g| matches(g, host.as_bytes()));
    for url in [
        candidate.to_owned(),
        format!("https://{candidate}/api"),
        format!("http://{candidate}:5000/"),
    ] {
        let permitted = allowlist.permits(&url);
        let parsed = url::Url::parse(&url).ok();
        // As patterns see a host: IPv6 without brackets, one trailing dot
        // dropped, lower case.
        let host = parsed.as_ref().and_then(|u| u.host_str()).map(|h| {
            let h = h
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(h);
            let h = h.strip_suffix('.').unwrap_or(h);
            h.to_ascii_lowercase()
        });
        if permitted {
            let parsed = parsed.as_ref().expect("a permitted URL parses");
            assert!(matches!(parsed.scheme(), "http" | "https"), "{url}");
            let host = host.as_deref().expect("a permitted URL has a host");
            assert!(
                by_reference(host),
                "{url} permitted by no pattern of {patterns:?}"
            );
        }
        // The other way: a plain host the parser kept as written.
        let plain = |h: &str| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        };
        if let Some(parsed) = &parsed
            && matches!(parsed.scheme(), "http" | "https")
            && parsed.host_str() == Some(candidate)
            && plain(candidate)
            && !candidate.ends_with('.')
            && by_reference(candidate)
        {
            assert!(
                permitted,
                "{url} matches a pattern of {patterns:?} but is refused"
            );
        }
    }
});
