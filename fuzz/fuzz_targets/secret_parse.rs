//! Secret text → credential → header: never a panic; a header value never
//! holds a line break; an error never repeats the secret text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlflow_secrets_auth_core::secrecy::ExposeSecret;
use mlflow_secrets_auth_core::{AuthHeader, AuthMode, Credential, HeaderName};

fuzz_target!(|data: &[u8]| {
    let parsed = Credential::parse_bytes(data);
    let Ok(text) = std::str::from_utf8(data) else {
        assert!(parsed.is_err(), "non-UTF-8 secret accepted");
        return;
    };
    match parsed {
        Ok(credential) => {
            for mode in [AuthMode::Bearer, AuthMode::Basic] {
                for name in [
                    HeaderName::authorization(),
                    HeaderName::new("X-MLflow-Auth").unwrap(),
                ] {
                    if let Ok(header) = AuthHeader::build(&credential, mode, &name) {
                        let value = header.value().expose_secret();
                        assert!(!value.is_empty());
                        assert!(
                            !value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0),
                            "header value with a control byte"
                        );
                        if value.len() >= 20 {
                            let shown = format!("{header} {header:?} {credential:?}");
                            assert!(!shown.contains(value), "header shown unmasked");
                        }
                    }
                }
            }
        }
        Err(error) => {
            let trimmed = text.trim();
            if trimmed.len() >= 16 {
                assert!(
                    !error.to_string().contains(trimmed),
                    "the error repeats the secret text"
                );
            }
        }
    }
});
