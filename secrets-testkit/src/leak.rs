//! The one leak check of every recorder: a secret counts as received when
//! any of its [`forms`] appears anywhere in what a server recorded — request
//! line, headers or body.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};

/// The forms a secret travels in: as is, base64 (standard, unpadded,
/// URL-safe) and percent-encoded. Pass `user:password` as well as the
/// password to catch a Basic header.
pub fn forms(secret: &str) -> Vec<String> {
    let bytes = secret.as_bytes();
    let mut forms = vec![
        secret.to_owned(),
        STANDARD.encode(bytes),
        STANDARD_NO_PAD.encode(bytes),
        URL_SAFE_NO_PAD.encode(bytes),
        percent_encoded(bytes),
    ];
    forms.sort();
    forms.dedup();
    forms
}

/// Whether any form of `secret` is in `recorded`.
pub fn holds(recorded: &[u8], secret: &str) -> bool {
    forms(secret)
        .iter()
        .any(|form| contains(recorded, form.as_bytes()))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every byte but RFC 3986's unreserved ones as `%XX`.
fn percent_encoded(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_is_found_and_others_are_not() {
        let secret = "user:pw-7c1d/+?";
        for form in forms(secret) {
            let recorded = format!("GET /x HTTP/1.1\r\nX: a{form}b\r\n\r\n");
            assert!(holds(recorded.as_bytes(), secret), "{form}");
        }
        assert!(holds(b"Authorization: Basic dXNlcjpwdy03YzFkLys/", secret));
        assert!(!holds(b"Authorization: Basic dXNlcjpvdGhlcg==", secret));
        assert!(holds(b"POST /x\r\n\r\nuser%3Apw-7c1d%2F%2B%3F", secret));
    }
}
