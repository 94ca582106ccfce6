//! Secret text → credential → header: never a panic; a header value never
//! holds a line break; an error never repeats the secret text; and for
//! plain texts (letters, digits, `._~+/=-:`) the header is the one written
//! out here by hand (Bearer, or Basic with a base64 encoder of its own).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlflow_secrets_auth_core::secrecy::ExposeSecret;
use mlflow_secrets_auth_core::{AuthHeader, AuthMode, Credential, HeaderName};

/// Standard base64 with padding, written out (not the library's encoder).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The headers (Bearer, Basic) a plain text must give, or `None` when the
/// text is outside the plain alphabet (JSON and other shapes).
fn expected(text: &str) -> Option<(Option<String>, Option<String>)> {
    let plain = text.starts_with(|c: char| c.is_ascii_alphabetic())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~+/=-:".contains(&b))
        && !matches!(text, "true" | "false" | "null");
    if !plain {
        return None;
    }
    Some(match text.split_once(':') {
        None => (Some(format!("Bearer {text}")), None),
        Some((_, "")) => (None, None),
        Some(_) => (None, Some(format!("Basic {}", base64(text.as_bytes())))),
    })
}

fuzz_target!(|data: &[u8]| {
    let parsed = Credential::parse_bytes(data);
    if let Some((bearer, basic)) = std::str::from_utf8(data)
        .ok()
        .and_then(|t| expected(t.trim()))
    {
        let authorization = HeaderName::authorization();
        let built = |mode| {
            parsed
                .as_ref()
                .ok()
                .and_then(|c| AuthHeader::build(c, mode, &authorization).ok())
                .map(|h| h.value().expose_secret().to_owned())
        };
        assert_eq!(built(AuthMode::Bearer), bearer, "bearer header");
        assert_eq!(built(AuthMode::Basic), basic, "basic header");
    }
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
