//! The host allowlist against URLs built to fool it: userinfo, query strings,
//! case, trailing dots, ports, IPv6, look-alike suffixes, IDN/punycode.

use mlflow_secrets_auth_core::{HostAllowlist, InvalidHostPattern};

fn list(patterns: &str) -> HostAllowlist {
    HostAllowlist::parse(patterns).expect("valid patterns")
}

/// (patterns, url, permitted)
const CASES: &[(&str, &str, bool)] = &[
    // Exact host.
    ("allowed.example.com", "https://allowed.example.com/", true),
    (
        "allowed.example.com",
        "https://allowed.example.com/api/2.0/mlflow/runs/get?run_id=1",
        true,
    ),
    ("allowed.example.com", "http://allowed.example.com", true),
    // Userinfo cannot smuggle the allowed name.
    (
        "allowed.example.com",
        "https://allowed.example.com@evil.com/",
        false,
    ),
    (
        "allowed.example.com",
        "https://user:pw@allowed.example.com/",
        true,
    ),
    (
        "allowed.example.com",
        "https://allowed.example.com:443@evil.com/",
        false,
    ),
    (
        "allowed.example.com",
        "https://evil.com\\@allowed.example.com/",
        false,
    ),
    // The name elsewhere in the URL does not count.
    (
        "allowed.example.com",
        "https://evil.com/?h=allowed.example.com",
        false,
    ),
    (
        "allowed.example.com",
        "https://evil.com/allowed.example.com",
        false,
    ),
    (
        "allowed.example.com",
        "https://evil.com#allowed.example.com",
        false,
    ),
    // Case, trailing dot, ports.
    ("allowed.example.com", "https://ALLOWED.example.com", true),
    ("ALLOWED.Example.COM", "https://allowed.example.com", true),
    ("allowed.example.com", "https://allowed.example.com./", true),
    ("allowed.example.com.", "https://allowed.example.com/", true),
    (
        "allowed.example.com",
        "https://allowed.example.com:8443",
        true,
    ),
    (
        "allowed.example.com",
        "https://allowed.example.com:8443/x",
        true,
    ),
    // Look-alikes.
    (
        "allowed.example.com",
        "https://allowed.example.com.evil.com",
        false,
    ),
    (
        "allowed.example.com",
        "https://evilallowed.example.com",
        false,
    ),
    ("allowed.example.com", "https://allowed.example.co", false),
    ("allowed.example.com", "https://allowed-example.com", false),
    // Percent-encoding in the host: the `url` crate decodes it, RFC 3986
    // readers (curl) do not, so the text is refused (the parsed URL is
    // matched decoded: `text_forms_other_readers_do_not_decode_...` below).
    (
        "allowed.example.com",
        "https://allowed%2Eexample%2Ecom/",
        false,
    ),
    ("allowed.example.com", "https://evil%2Ecom/", false),
    // IPv4 and IPv6 literals.
    ("::1", "http://[::1]:5000", true),
    ("[::1]", "http://[::1]:5000/", true),
    ("::1", "http://[0:0:0:0:0:0:0:1]/", true),
    ("127.0.0.1", "http://127.0.0.1:5000/", true),
    ("127.0.0.1", "http://127.0.0.2:5000/", false),
    ("127.0.0.1", "http://2130706433/", false),
    ("::1", "http://127.0.0.1/", false),
    ("allowed.example.com", "http://[::1]:5000", false),
    // Globs.
    ("*.example.com", "https://a.example.com", true),
    ("*.example.com", "https://a.b.example.com", true),
    ("*.example.com", "https://example.com", false),
    ("*.example.com", "https://evilexample.com", false),
    ("*.example.com", "https://a.example.com.evil.com", false),
    ("mlflow-*", "https://mlflow-prod", true),
    ("mlflow-*", "https://mlflow-", true),
    ("mlflow-*", "https://mlflow", false),
    ("mlflow-*", "https://my-mlflow-prod", false),
    ("mlflow-?.corp", "https://mlflow-a.corp", true),
    ("mlflow-?.corp", "https://mlflow-ab.corp", false),
    ("mlflow-[ab].corp", "https://mlflow-b.corp", true),
    ("mlflow-[ab].corp", "https://mlflow-c.corp", false),
    ("mlflow-[!ab].corp", "https://mlflow-c.corp", true),
    ("*", "https://anything.example/", true),
    // Lists.
    ("a.example, b.example", "https://b.example", true),
    (" a.example ,, b.example ", "https://c.example", false),
    // IDN: Unicode hosts are compared in punycode, whichever way they are written.
    ("bücher.example", "https://xn--bcher-kva.example/", true),
    ("xn--bcher-kva.example", "https://bücher.example/", true),
    ("BÜCHER.example", "https://bücher.example/", true),
    ("bucher.example", "https://bücher.example/", false),
    ("*.example", "https://xn--bcher-kva.example/", true),
    ("paypal.com", "https://pаypal.com/", false), // Cyrillic а
    // Fullwidth characters are mapped by IDNA before matching.
    (
        "allowed.example.com",
        "https://ａｌｌｏｗｅｄ.example.com/",
        true,
    ),
    // Not a URL, no host, or not HTTP(S): never.
    ("*", "not a url", false),
    ("*", "", false),
    ("*", "mailto:someone@allowed.example.com", false),
    ("*", "file:///etc/passwd", false),
    ("allowed.example.com", "ftp://allowed.example.com/", false),
    ("allowed.example.com", "allowed.example.com", false),
    ("allowed.example.com", "https://", false),
];

#[test]
fn hosts_are_matched_on_the_parsed_host_only() {
    assert!(CASES.len() >= 30);
    let failures: Vec<String> = CASES
        .iter()
        .filter(|(patterns, url, want)| list(patterns).permits(url) != *want)
        .map(|(patterns, url, want)| format!("{patterns:?} / {url:?}: expected {want}"))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn text_forms_other_readers_do_not_decode_are_refused_but_their_parsed_urls_match() {
    for (pattern, text) in [
        ("allowed.example.com", "https://allowed%2Eexample%2Ecom/"),
        ("127.0.0.1", "http://2130706433/"),
        ("127.0.0.1", "http://0x7f.1/"),
    ] {
        let list = list(pattern);
        assert!(!list.permits(text), "{text}");
        assert!(list.permits_url(&url::Url::parse(text).unwrap()), "{text}");
    }
}

#[test]
fn unset_allows_every_http_host() {
    let all = HostAllowlist::allow_all();
    assert!(!all.is_restricted());
    assert!(all.permits("https://anything.example/"));
    assert!(all.permits("http://[::1]:5000/"));
    assert!(!all.permits("not a url"));
    assert!(!all.permits("file:///etc/passwd"));
}

#[test]
fn empty_list_is_an_error_not_allow_all() {
    for empty in ["", "  ", ",", " , ,"] {
        assert_eq!(HostAllowlist::parse(empty), Err(InvalidHostPattern::Empty));
    }
}

#[test]
fn patterns_with_ports_paths_or_schemes_are_refused() {
    for bad in [
        "mlflow.example.com:5000",
        "https://mlflow.example.com",
        "mlflow.example.com/api",
        "user@mlflow.example.com",
        "two words",
    ] {
        assert_eq!(
            HostAllowlist::parse(bad),
            Err(InvalidHostPattern::NotAHost(bad.to_owned())),
            "{bad}"
        );
    }
    assert!(matches!(
        HostAllowlist::parse("bü*cher.example"),
        Err(InvalidHostPattern::BadIdn(_))
    ));
}

#[test]
fn patterns_are_shown_normalised() {
    let list = list("MLflow.Example.com., bücher.example, [::1]");
    assert_eq!(
        list.patterns().collect::<Vec<_>>(),
        ["mlflow.example.com", "xn--bcher-kva.example", "::1"]
    );
    assert_eq!(
        list.to_string(),
        "mlflow.example.com, xn--bcher-kva.example, ::1"
    );
}
