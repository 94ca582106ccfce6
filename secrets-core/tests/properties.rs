//! Property tests: the parsers never panic on arbitrary input, and masked or
//! redacted text never contains the secret.

use mlflow_secrets_auth_core::{
    AuthHeader, AuthMode, Credential, HeaderName, HostAllowlist, mask, redact,
};
use proptest::prelude::*;
use secrecy::ExposeSecret;

/// Secrets as backends hand them out: printable, no spaces, long enough that
/// they cannot occur by chance in the surrounding text.
fn secret() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._~+/=-]{12,64}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn credential_parsing_never_panics(text in any::<String>()) {
        let _ = Credential::parse(&text);
    }

    #[test]
    fn credential_parsing_of_jsonish_text_never_panics(text in r#"[{}\[\]":, a-z0-9\\]{0,64}"#) {
        let _ = Credential::parse(&text);
    }

    #[test]
    fn byte_parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Credential::parse_bytes(&bytes);
    }

    #[test]
    fn allowlist_parsing_and_matching_never_panic(patterns in any::<String>(), url in any::<String>()) {
        if let Ok(list) = HostAllowlist::parse(&patterns) {
            let _ = list.permits(&url);
        }
        let _ = HostAllowlist::allow_all().permits(&url);
    }

    #[test]
    fn glob_patterns_never_panic(patterns in r"[a-z*?\[\]!^.,-]{1,24}", host in "[a-z.-]{1,24}") {
        if let Ok(list) = HostAllowlist::parse(&patterns) {
            let _ = list.permits(&format!("https://{host}/"));
        }
    }

    #[test]
    fn mask_never_contains_the_secret(secret in "[^…]{1,80}") {
        // The mask's own text (`*** (7 chars)`) trivially contains a secret
        // that is a piece of it, such as `*`, ` ` or `7`.
        let template = format!("*** ({} chars)", secret.chars().count());
        prop_assume!(!template.contains(secret.as_str()));
        let masked = mask(&secret);
        prop_assert!(!masked.contains(secret.as_str()));
    }

    #[test]
    fn redaction_removes_tokens_in_headers(secret in secret()) {
        for line in [
            format!("Authorization: Bearer {secret}"),
            format!("authorization: basic {secret}"),
            format!("request failed with header X: Bearer {secret} (401)"),
        ] {
            prop_assert!(!redact(&line).contains(secret.as_str()), "{}", line);
        }
    }

    #[test]
    fn redaction_removes_json_fields(secret in secret(), field in "(token|password|secret|api_key|client_secret|access_token)") {
        let line = format!(r#"body {{"{field}": "{secret}", "user": "alice"}}"#);
        prop_assert!(!redact(&line).contains(secret.as_str()), "{}", line);
    }

    #[test]
    fn redaction_removes_url_userinfo(user in "[a-z]{1,8}", secret in secret()) {
        let secret = secret.replace(['/', '+', '='], "x");
        let line = format!("GET https://{user}:{secret}@mlflow.example.com/api");
        prop_assert!(!redact(&line).contains(secret.as_str()), "{}", line);
    }

    #[test]
    fn redaction_removes_jwts(a in "[A-Za-z0-9_-]{8,40}", b in "[A-Za-z0-9_-]{8,40}", c in "[A-Za-z0-9_-]{8,40}") {
        let jwt = format!("eyJ{a}.{b}.{c}");
        let line = format!("token in body: {jwt} end");
        prop_assert!(!redact(&line).contains(jwt.as_str()));
    }

    #[test]
    fn header_display_never_contains_the_secret(secret in secret(), basic in any::<bool>()) {
        let (credential, mode) = if basic {
            (Credential::parse(&format!("user:{secret}")).unwrap(), AuthMode::Basic)
        } else {
            (Credential::parse(&secret).unwrap(), AuthMode::Bearer)
        };
        let header = AuthHeader::build(&credential, mode, &HeaderName::authorization()).unwrap();
        let value = header.value().expose_secret().to_owned();
        for shown in [header.to_string(), format!("{header:?}"), format!("{credential:?}")] {
            prop_assert!(!shown.contains(secret.as_str()));
            prop_assert!(!shown.contains(value.as_str()));
        }
    }

    #[test]
    fn parse_errors_never_contain_the_secret(secret in secret()) {
        for text in [
            format!(r#"{{"token": "{secret}""#),
            format!(r#"{{"username": "{secret}"}}"#),
            format!(r#"{{"password": "{secret}"}}"#),
            format!(":{secret}"),
            format!("{secret}:"),
            format!(r#"{{"username": "{secret}", "password": 1}}"#),
        ] {
            let err = Credential::parse(&text).unwrap_err();
            prop_assert!(!err.to_string().contains(secret.as_str()), "{}", err);
            let debug = format!("{err:?}");
            prop_assert!(!debug.contains(secret.as_str()));
        }
    }
}
