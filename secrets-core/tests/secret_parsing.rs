//! Secret text → credential → header: every row of the format and header tables,
//! and malformed input that must give a precise invalid-secret error that never
//! repeats the secret.

use mlflow_secrets_auth_core::{
    AuthHeader, AuthMode, Credential, ErrorKind, HeaderName, MAX_SECRET_BYTES, SecretError,
};
use secrecy::ExposeSecret;

fn header(secret: &str, mode: AuthMode, name: &str) -> Result<String, SecretError> {
    let credential = Credential::parse(secret)?;
    let name = HeaderName::new(name).expect("valid header name");
    let header = AuthHeader::build(&credential, mode, &name)?;
    Ok(format!(
        "{}: {}",
        header.name(),
        header.value().expose_secret()
    ))
}

#[test]
fn json_token_bearer_authorization() {
    assert_eq!(
        header(r#"{"token": "tok-1"}"#, AuthMode::Bearer, "authorization").unwrap(),
        "Authorization: Bearer tok-1"
    );
}

#[test]
fn plain_token_bearer_custom_header_is_bare() {
    assert_eq!(
        header("tok-2", AuthMode::Bearer, "X-MLflow-Auth").unwrap(),
        "X-MLflow-Auth: tok-2"
    );
}

#[test]
fn json_token_with_colon_basic() {
    assert_eq!(
        header(r#"{"token": "alice:pw"}"#, AuthMode::Basic, "Authorization").unwrap(),
        "Authorization: Basic YWxpY2U6cHc="
    );
    assert_eq!(
        header(r#"{"token": "alice:pw"}"#, AuthMode::Basic, "X-Auth").unwrap(),
        "X-Auth: Basic YWxpY2U6cHc="
    );
}

#[test]
fn json_token_without_colon_basic_is_refused() {
    let err = header(
        r#"{"token": "only-a-token"}"#,
        AuthMode::Basic,
        "Authorization",
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidSecret);
    assert!(
        err.to_string()
            .contains("auth mode `basic` needs `username:password`")
    );
    assert!(!err.to_string().contains("only-a-token"));
}

#[test]
fn json_user_password_basic() {
    assert_eq!(
        header(
            r#"{"username": " alice ", "password": "pw"}"#,
            AuthMode::Basic,
            "Authorization"
        )
        .unwrap(),
        "Authorization: Basic YWxpY2U6cHc="
    );
}

#[test]
fn plain_user_password_basic() {
    assert_eq!(
        header("alice:pw\n", AuthMode::Basic, "X-Auth").unwrap(),
        "X-Auth: Basic YWxpY2U6cHc="
    );
}

#[test]
fn user_password_bearer_is_refused() {
    for secret in [r#"{"username": "alice", "password": "pw-9"}"#, "alice:pw-9"] {
        let err = header(secret, AuthMode::Bearer, "Authorization").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidSecret);
        assert!(err.to_string().contains("auth mode `bearer` cannot use"));
        assert!(!err.to_string().contains("pw-9"));
    }
}

/// Each malformed secret, with a word its error must contain.
const MALFORMED: &[(&str, &str)] = &[
    ("", "empty"),
    ("   \n\t ", "empty"),
    ("[]", "JSON array"),
    (r#"["tok"]"#, "JSON array"),
    (r#""a-json-string""#, "JSON string"),
    ("12345", "JSON number"),
    ("true", "JSON boolean"),
    ("null", "JSON null"),
    ("{}", "neither"),
    (r#"{"api_key": "k-123"}"#, "neither"),
    (r#"{"token": 12345}"#, "`token` is a number"),
    (r#"{"token": ""}"#, "`token` is empty"),
    (r#"{"token": "   "}"#, "`token` is empty"),
    (r#"{"token": null}"#, "`token` is a null"),
    (
        r#"{"token": {"value": "nested-tok"}}"#,
        "`token` is an object",
    ),
    (r#"{"username": "alice"}"#, "no `password`"),
    (r#"{"password": "pw-only-xx"}"#, "no `username`"),
    (
        r#"{"username": "alice", "password": 42}"#,
        "`password` is a number",
    ),
    (
        r#"{"username": ["a"], "password": "pw-x"}"#,
        "`username` is an array",
    ),
    (
        r#"{"username": "", "password": "pw-x"}"#,
        "`username` is empty",
    ),
    (r#"{"token": "tok-trunc"#, "not valid JSON"),
    (r#"{"token": "a" "b"}"#, "not valid JSON"),
    ("[1, 2", "not valid JSON"),
    (":pass-only", "username before `:` is empty"),
    ("user-only:", "password after `:` is empty"),
    ("  :  ", "username before `:` is empty"),
];

#[test]
fn malformed_secrets_are_refused_precisely() {
    assert!(MALFORMED.len() >= 15);
    for (secret, expected) in MALFORMED {
        let err = Credential::parse(secret).expect_err(secret);
        assert_eq!(err.kind(), ErrorKind::InvalidSecret, "{secret}");
        let message = err.to_string();
        assert!(message.contains(expected), "{secret:?}: {message}");
        for word in [
            "tok-123",
            "k-123",
            "nested-tok",
            "pw-only-xx",
            "pw-x",
            "tok-trunc",
            "pass-only",
            "user-only",
        ] {
            if secret.contains(word) {
                assert!(!message.contains(word), "{secret:?} leaked in {message}");
            }
        }
    }
}

#[test]
fn invalid_utf8_is_refused() {
    let err = Credential::parse_bytes(b"{\"token\": \"ab\xc3\x28cd\"}").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidSecret);
    assert!(err.to_string().contains("not UTF-8"));
}

#[test]
fn secrets_over_one_mebibyte_are_refused() {
    let huge = "x".repeat(2 * MAX_SECRET_BYTES);
    for err in [
        Credential::parse(&huge).unwrap_err(),
        Credential::parse_bytes(huge.as_bytes()).unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::InvalidSecret);
        assert!(err.to_string().contains("limit"));
        assert!(err.to_string().len() < 200);
    }
    let at_limit = "y".repeat(MAX_SECRET_BYTES);
    assert!(Credential::parse(&at_limit).is_ok());
}

#[test]
fn control_characters_in_a_token_cannot_reach_a_header() {
    for secret in [
        r#"{"token": "ab\u0000cd"}"#,
        r#"{"token": "ab\r\nX-Evil: 1"}"#,
        "tok\u{7f}en",
    ] {
        let err = header(secret, AuthMode::Bearer, "Authorization").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidSecret, "{secret}");
    }
}
