//! Host extraction on hostile URLs (userinfo, ports, IPv6, percent-encoding,
//! Unicode, backslashes): a fixed allowlist permits only URLs whose host is
//! an allowed one both as the `url` crate reads it and as RFC 3986 reads the
//! text (an oracle in no parser the library uses); and a plain URL of an
//! allowed host is permitted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlflow_secrets_auth_core::HostAllowlist;

#[path = "../../secrets-testkit/src/rfc3986.rs"]
mod rfc3986;

/// The allowlist below, matched by hand (one trailing dot is the same name).
fn allowed(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    host == "mlflow.example.com" || host.ends_with(".mlflow.internal")
}

fuzz_target!(|data: &[u8]| {
    let Ok(url) = std::str::from_utf8(data) else {
        return;
    };
    let allowlist = HostAllowlist::parse("mlflow.example.com, *.mlflow.internal").unwrap();
    if allowlist.permits(url) {
        let parsed = url::Url::parse(url).expect("a permitted URL parses");
        assert!(matches!(parsed.scheme(), "http" | "https"), "{url}");
        let host = parsed.host_str().expect("has a host").to_ascii_lowercase();
        assert!(allowed(&host), "{url} reached host {host}");
        // Text RFC 3986 cannot read (a tab in the scheme, a port that is
        // not a number) is text such a client refuses: it connects nowhere.
        if let Some((read, _)) = rfc3986::authority(url.trim()) {
            // A Unicode name reads as its punycode in the `url` crate.
            assert!(
                allowed(&read) || (!read.is_ascii() && allowed(&host)),
                "{url}: RFC 3986 reads host {read}"
            );
        }
    }
    // The other direction: a plain URL (a name of letters, digits, dots and
    // dashes; a path) of an allowed host is permitted.
    let plain = url
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if plain && !url.is_empty() && url.len() < 200 {
        let name = format!("{}.mlflow.internal", url.to_ascii_lowercase());
        let candidate = format!("https://{name}/api/2.0");
        if url::Url::parse(&candidate).is_ok_and(|p| p.host_str() == Some(name.as_str())) {
            assert!(allowlist.permits(&candidate), "{candidate} refused");
        }
    }
});
