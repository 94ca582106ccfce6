//! Host extraction on hostile URLs (userinfo, ports, IPv6, percent-encoding,
//! Unicode, backslashes): a fixed allowlist permits only URLs whose parsed
//! host really is an allowed one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlflow_secrets_auth_core::HostAllowlist;

fuzz_target!(|data: &[u8]| {
    let Ok(url) = std::str::from_utf8(data) else {
        return;
    };
    let allowlist = HostAllowlist::parse("mlflow.example.com, *.mlflow.internal").unwrap();
    if allowlist.permits(url) {
        let parsed = url::Url::parse(url).expect("a permitted URL parses");
        assert!(matches!(parsed.scheme(), "http" | "https"), "{url}");
        let host = parsed
            .host_str()
            .expect("has a host")
            .trim_end_matches('.')
            .to_ascii_lowercase();
        assert!(
            host == "mlflow.example.com" || host.ends_with(".mlflow.internal"),
            "{url} reached host {host}"
        );
    }
});
