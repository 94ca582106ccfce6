//! The hop policy against a second parser: for a previous hop and a next URL
//! (one per line), "attach" is allowed only when `http::Uri` — what hyper
//! connects with — reads the same allowed host and port from the URL as the
//! `url` crate, the scheme is http(s), and the chain did not leave https.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlflow_secrets_auth_core::{HopPolicy, HostAllowlist};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (previous, next) = text.split_once('\n').unwrap_or(("", text));
    let Ok(next) = url::Url::parse(next) else {
        return;
    };
    let previous = url::Url::parse(previous).ok();
    let policy = HopPolicy::new(
        HostAllowlist::parse("mlflow.example.com, *.mlflow.internal, 127.0.0.1").unwrap(),
        false,
    );
    let Ok(hop) = policy.decide(previous.as_ref(), false, &next) else {
        return;
    };
    let downgraded =
        previous.as_ref().is_some_and(|p| p.scheme() == "https") && next.scheme() == "http";
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
    // The oracle: http::Uri's own reading of the URL's text.
    let uri: http::Uri = next
        .as_str()
        .parse()
        .expect("an attached URL parses as http::Uri");
    let scheme = uri.scheme_str().expect("has a scheme");
    assert!(scheme == "http" || scheme == "https", "{next}");
    let host = uri.host().expect("has a host").to_ascii_lowercase();
    let host = host.trim_end_matches('.');
    assert!(
        host == "mlflow.example.com" || host.ends_with(".mlflow.internal") || host == "127.0.0.1",
        "{next}: http::Uri connects to {host}"
    );
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    assert_eq!(Some(port), next.port_or_known_default(), "{next}");
});
