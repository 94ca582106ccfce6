//! Log redaction: a secret written in any of the shapes our logs and the SDKs
//! use (key=value, JSON field, Authorization header, URL userinfo) never
//! survives `redact`, whatever surrounds it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlflow_secrets_auth_core::redact;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (secret, around) = text.split_once('\n').unwrap_or((text, ""));
    // A secret long enough not to occur by chance, of the characters a token
    // may hold in a header (every visible ASCII character).
    // (Not one holding `***`: redaction writes that itself.)
    if secret.len() < 8 || !secret.bytes().all(|b| b.is_ascii_graphic()) || secret.contains("***") {
        return;
    }
    // Key/value and JSON shapes are written by backends with plainer values;
    // any visible character is checked after an auth scheme.
    let plain = secret
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._~+/=-".contains(&b));
    let (before, after) = around.split_once('\n').unwrap_or((around, ""));
    if before.contains(secret) || after.contains(secret) {
        return; // the surrounding text itself holds it, unmarked
    }
    // Known limit: text ending in a key (`Token:`) makes the next key the
    // redacted value (`Token: token: x` keeps `x`); merging keys would instead
    // leak values that end like a key (`abcKey=`), which are likelier.
    let tail = before.trim_end().to_ascii_lowercase();
    if tail.ends_with(':') || tail.ends_with('=') {
        return;
    }
    let plain_shapes = [
        format!("password={secret}"),
        format!("token: {secret}"),
        format!(r#"{{"password": "{secret}"}}"#),
        format!(r#""client_secret":"{secret}""#),
        format!("X-Vault-Token: {secret}"),
    ];
    for shape in [
        format!("Authorization: Bearer {secret}"),
        format!("authorization: Basic {secret}"),
    ]
    .into_iter()
    .chain(plain_shapes.into_iter().filter(|_| plain))
    // In a URL's userinfo a `/` would end the authority: real URLs carry it
    // percent-encoded, so only secrets without one are written there.
    .chain(
        (plain && !secret.contains('/'))
            .then(|| format!("https://user:{secret}@mlflow.example.com/")),
    ) {
        if shape.replace(secret, "").contains(secret) || shape.matches(secret).count() > 1 {
            continue; // the secret is part of the shape's own words
        }
        let line = format!("{before} {shape} {after}");
        let redacted = redact(&line);
        // The marker `***` is redaction's own text: a secret that ends like
        // the words before a marker (`secret":"**`) would otherwise be
        // "found" in `client_secret":"***`.
        assert!(
            !redacted.replace("***", "\u{0}").contains(secret),
            "secret survived in {redacted:?} (shape {shape:?})"
        );
    }
});
