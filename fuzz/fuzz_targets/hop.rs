//! The hop policy against readings that are not its own, both ways. The
//! first byte draws `left_https` and `require_tls`; then a previous hop and a
//! next URL, one per line.
//!
//! - Safety: "attach" is allowed only when `http::Uri` — what hyper connects
//!   with — and a small RFC 3986 authority reader written here both read an
//!   allowed host and the same port from the URL's text, the scheme is
//!   http(s), and the chain did not leave https.
//! - Liveness: a plain allowed origin on a chain that never left https (and
//!   plain http only to loopback under `require_tls`) *does* get the
//!   credential: a policy that never attaches fails.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlflow_secrets_auth_core::{HopPolicy, HostAllowlist, plain_origin};

/// The allowlist below, matched by hand: `mlflow.example.com`, any name
/// ending in `.mlflow.internal` (`*` matches any run, dots and nothing
/// included), `127.0.0.1`; one trailing dot is the same name.
fn allowed(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    host == "mlflow.example.com" || host.ends_with(".mlflow.internal") || host == "127.0.0.1"
}

#[path = "../../secrets-testkit/src/rfc3986.rs"]
mod rfc3986;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (left_https, require_tls) = (flags & 1 == 1, flags & 2 == 2);
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let (previous, next) = text.split_once('\n').unwrap_or(("", text));
    let Ok(next) = url::Url::parse(next) else {
        return;
    };
    let previous = url::Url::parse(previous).ok();
    let policy = HopPolicy::new(
        HostAllowlist::parse("mlflow.example.com, *.mlflow.internal, 127.0.0.1").unwrap(),
        require_tls,
    );
    let decided = policy.decide(previous.as_ref(), left_https, &next);
    let downgraded = left_https
        || (previous.as_ref().is_some_and(|p| p.scheme() == "https") && next.scheme() == "http");
    let web = next.scheme() == "http" || next.scheme() == "https";
    let loopback = next.host_str() == Some("127.0.0.1");

    // Liveness: the plainest case must attach.
    if let Some(origin) = plain_origin(next.as_str())
        && web
        && !downgraded
        && (!require_tls || next.scheme() == "https" || loopback)
        && previous.is_none()
    {
        let host = origin.split_once("://").map_or("", |(_, a)| a);
        let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
        if allowed(host) {
            let hop = decided.as_ref().expect("a plain allowed origin is decided");
            assert!(hop.attach(), "{next}: a plain allowed origin got nothing");
        }
    }

    let Ok(hop) = decided else {
        return;
    };
    assert_eq!(hop.left_https, downgraded);
    if let Some(previous) = &previous
        && (previous.host_str() != next.host_str()
            || previous.port_or_known_default() != next.port_or_known_default())
    {
        assert!(
            hop.strip_credentials,
            "{previous} → {next}: another host keeps the credentials"
        );
    }
    if !hop.attach() {
        return;
    }
    assert!(!downgraded, "{next}: attached after a downgrade");
    assert!(
        !require_tls || next.scheme() == "https" || loopback,
        "{next}: plain http off loopback under require_tls"
    );
    // Oracle 1: http::Uri's own reading of the URL's text.
    let uri: http::Uri = next
        .as_str()
        .parse()
        .expect("an attached URL parses as http::Uri");
    let scheme = uri.scheme_str().expect("has a scheme");
    assert!(scheme == "http" || scheme == "https", "{next}");
    let host = uri.host().expect("has a host").to_ascii_lowercase();
    assert!(allowed(&host), "{next}: http::Uri connects to {host}");
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    assert_eq!(Some(port), next.port_or_known_default(), "{next}");
    // Oracle 2: RFC 3986's grammar, written here.
    let (host, port) = rfc3986::authority(next.as_str()).expect("an attached URL has an authority");
    assert!(allowed(&host), "{next}: RFC 3986 reads the host {host}");
    assert_eq!(Some(port), next.port_or_known_default(), "{next}");
});
