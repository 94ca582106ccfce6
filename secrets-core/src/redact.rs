//! Masking of secrets for display ([`mask`]) and redaction of log text ([`redact`]).
//! Every layer calls these two; there is no other implementation.

use std::borrow::Cow;
use std::sync::{LazyLock, RwLock};

use regex::Regex;
use zeroize::Zeroizing;

/// What replaces a redacted value.
pub const REDACTED: &str = "***";

/// Tokens shorter than this are shown by their length only.
const MASK_HEAD_FROM: usize = 24;

/// Masks a token (or any secret that is not a password) for display: its
/// first 4 characters and its length when it has at least 24 characters, else
/// its length only. Nothing ever shows the end of a secret.
///
/// ```
/// use mlflow_secrets_auth_core::mask;
/// assert_eq!(mask("abcdefghijklmnopqrstuvwxyz0123"), "abcd… (30 chars)");
/// assert_eq!(mask("hunter2-xyz"), "*** (11 chars)");
/// ```
pub fn mask(secret: &str) -> String {
    let count = secret.chars().count();
    if count < MASK_HEAD_FROM {
        return mask_password(secret);
    }
    let head: String = secret.chars().take(4).collect();
    format!("{head}… ({count} chars)")
}

/// Masks a password for display: its length only (`*** (11 chars)`).
///
/// ```
/// use mlflow_secrets_auth_core::mask_password;
/// assert_eq!(mask_password("hunter2-xyz"), "*** (11 chars)");
/// ```
pub fn mask_password(secret: &str) -> String {
    format!("{REDACTED} ({} chars)", secret.chars().count())
}

/// A pattern and its capture group holding the value to hide.
struct Rule {
    pattern: Regex,
    value: usize,
    /// `NAME: word` where `word` is one of [`OUR_WORDS`] is a message about
    /// the variable (`VAULT_TOKEN: is not set`), not its value.
    messages: bool,
    /// `basic mode` / `bearer mode,` ([`MODE_WORDS`]) name an auth mode,
    /// not a credential.
    modes: bool,
}

/// What our own messages put after an auth scheme's name (`[basic mode, TTL
/// 300s]`); shorter than any secret worth the name.
const MODE_WORDS: [&str; 4] = ["mode", "mode,", "mode)", "mode]"];

/// Words our own messages put after `VARIABLE: `; all shorter than any
/// secret worth the name, so a value spelled like one is no real secret.
const OUR_WORDS: [&str; 16] = [
    "is", "not", "must", "needs", "has", "was", "cannot", "does", "the", "a", "an", "no", "names",
    "holds", "only", "set",
];

static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    let rule = |pattern: &str, value| Rule {
        pattern: Regex::new(pattern).expect("redaction patterns are valid"),
        value,
        messages: false,
        modes: false,
    };
    vec![
        // URL userinfo: scheme://user:pass@host → scheme://***@host
        rule(r"(?i)\b[a-z][a-z0-9+.-]*://([^/?#\s@]+)@", 1),
        // Auth schemes: Bearer …, Basic … (`Basic Bearer …` included). The
        // value is every visible ASCII character, as `AuthHeader` accepts in
        // a token: a token holding `!`, `;` or `"` is redacted whole.
        Rule {
            modes: true,
            ..rule(r"(?i)\b(?:(?:bearer|basic)\s+)+([!-~]+)", 1)
        },
        // JSON / Python-dict fields: "password": "…", 'api_token': '…'
        rule(
            r#"(?i)["']?[a-z0-9_-]*(?:token|password|passwd|secret|key)[a-z0-9_-]*["']?\s*[:=]\s*(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)')"#,
            1,
        ),
        // Unquoted key=value / key: value pairs (query strings, env dumps):
        // the key must end with the sensitive word (`VAULT_TOKEN`, `api_key`),
        // so names like `aws-secrets-manager:` are left alone.
        Rule {
            messages: true,
            ..rule(
                r#"(?i)\b[a-z0-9_]*(?:token|password|passwd|secret|key)\s*[:=]\s*([^\s"',;&]+)"#,
                1,
            )
        },
        // JSON Web Tokens anywhere.
        rule(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*", 0),
    ]
});

/// Values shorter than this are not hidden literally: too many words would go.
const KNOWN_FROM: usize = 8;

/// Secret values this process holds, hidden by [`redact`] wherever they
/// appear, whatever surrounds them: the lasting ones (secrets from the
/// environment, an OAuth2 client) and the latest of those that rotate
/// (tokens a login or an exchange returns), kept apart so that rotating
/// values never push out lasting ones.
struct Known {
    lasting: Vec<Zeroizing<String>>,
    /// The latest of each source's rotating values, by source.
    rotating: Vec<(&'static str, Vec<Zeroizing<String>>)>,
}

/// The most lasting values kept (then the oldest go).
const LASTING_MAX: usize = 64;

/// The most rotating values kept per source (then its oldest go).
const ROTATING_MAX: usize = 16;

static KNOWN: RwLock<Known> = RwLock::new(Known {
    lasting: Vec::new(),
    rotating: Vec::new(),
});

/// `secret` and its percent-encoded form (as a form or a URL carries it),
/// when long enough to hide.
fn forms(secret: &str) -> Vec<String> {
    let secret = secret.trim();
    if secret.len() < KNOWN_FROM {
        return Vec::new();
    }
    let encoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    let mut forms = vec![secret.to_owned()];
    if encoded != secret {
        forms.push(encoded);
    }
    forms
}

fn remember(list: impl Fn(&mut Known) -> &mut Vec<Zeroizing<String>>, max: usize, secret: &str) {
    let mut known = KNOWN.write().unwrap_or_else(|e| e.into_inner());
    for form in forms(secret) {
        let values = list(&mut known);
        if values.iter().any(|k| k.as_str() == form) {
            continue;
        }
        if values.len() == max {
            values.remove(0);
        }
        values.push(Zeroizing::new(form));
    }
}

/// Has [`redact`] hide `secret` literally from now on, wherever it appears
/// (and its percent-encoded form) — for text no pattern recognises, such as
/// a backend echoing the token it was given with nothing around it
/// (`permission denied for hvs.…`). For values that last: the backend
/// secrets read from the environment, an OAuth2 client secret. Values
/// shorter than 8 characters are ignored (they would hide ordinary words);
/// kept zeroed on drop, the 64 latest.
///
/// ```
/// use mlflow_secrets_auth_core::{hide_everywhere, redact};
/// hide_everywhere("s.f00dcafe1234");
/// assert_eq!(redact("denied for token s.f00dcafe1234 at /x"), "denied for token *** at /x");
/// ```
pub fn hide_everywhere(secret: &str) {
    remember(|k| &mut k.lasting, LASTING_MAX, secret);
}

/// [`hide_everywhere`] for a value that rotates, from `source` (`"vault
/// login"`, `"oauth token"`): the 16 latest of each source are kept (with their encoded forms), apart
/// from the lasting values and from other sources' values, which they never
/// push out.
pub fn hide_while_current(source: &'static str, secret: &str) {
    remember(
        |known| {
            let index = match known.rotating.iter().position(|(s, _)| *s == source) {
                Some(index) => index,
                None => {
                    known.rotating.push((source, Vec::new()));
                    known.rotating.len() - 1
                }
            };
            &mut known.rotating[index].1
        },
        ROTATING_MAX,
        secret,
    );
}

/// Whether `key` names one of our settings that holds no secret: the
/// `MLFLOW_SECRETS_` prefix with no sensitive word after it.
fn our_setting(key: &str) -> bool {
    // ASCII only: the patterns fold case beyond it (`K` for `K`, `ſ` for `s`).
    if !key.is_ascii() {
        return false;
    }
    let key = key.to_ascii_uppercase();
    key.strip_prefix("MLFLOW_SECRETS_").is_some_and(|rest| {
        !["TOKEN", "PASSWORD", "PASSWD", "SECRET", "KEY"]
            .iter()
            .any(|word| rest.contains(word))
    })
}

/// Redacts credentials from free text before it reaches a log: `Bearer …`,
/// `Basic …`, JWTs, `token`/`password`/`secret`/`key` fields (JSON or `k=v`), and URL
/// userinfo, and every value given to [`hide_everywhere`] or
/// [`hide_while_current`]. Text with nothing
/// to redact is returned borrowed.
///
/// Every rule looks at the original text and the values all of them found
/// are hidden together, so one rule's match cannot take away the context
/// another rule needs (a quoted field around `Bearer`, a scheme before a key).
///
/// ```
/// use mlflow_secrets_auth_core::redact;
/// assert_eq!(redact("Authorization: Bearer abc.def"), "Authorization: Bearer ***");
/// assert_eq!(redact(r#"{"password": "hunter2"}"#), r#"{"password": "***"}"#);
/// assert_eq!(redact("https://bob:pw@mlflow.example.com/"), "https://***@mlflow.example.com/");
/// ```
pub fn redact(text: &str) -> Cow<'_, str> {
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for rule in RULES.iter() {
        for captures in rule.pattern.captures_iter(text) {
            // The JSON rule's value is in group 1 (double quotes) or 2 (single).
            let value = captures
                .get(rule.value)
                .or_else(|| (rule.value == 1).then(|| captures.get(2)).flatten());
            // `NAME: is not set`: one of our words, as we write it, with
            // the message going on after it.
            let ours = |v: &regex::Match<'_>| {
                (rule.modes && MODE_WORDS.contains(&v.as_str()))
                    || rule.messages
                        && text[..v.start()].trim_end().ends_with(':')
                        && OUR_WORDS.contains(&v.as_str())
                        && text[v.end()..]
                            .strip_prefix(' ')
                            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_lowercase()))
            };
            // `MLFLOW_SECRETS_REQUEST_TIMEOUT_SEC: "soon"`: one of our own
            // settings, whose name holds "secret" but whose value is none —
            // a plain value only (nothing quoted or escaped inside it).
            let setting = captures
                .get(0)
                .and_then(|whole| whole.as_str().split([':', '=']).next())
                .is_some_and(|key| our_setting(key.trim().trim_matches(['"', '\''])))
                && value.is_some_and(|v| !v.as_str().contains(['"', '\'', '\\']));
            if setting {
                continue;
            }
            if let Some(value) = value.filter(|v| !v.is_empty() && !ours(v)) {
                spans.push((value.start(), value.end()));
            }
        }
    }
    let known = KNOWN.read().unwrap_or_else(|e| e.into_inner());
    let rotating = known.rotating.iter().flat_map(|(_, values)| values);
    for known in known.lasting.iter().chain(rotating) {
        spans.extend(
            text.match_indices(known.as_str())
                .map(|(start, value)| (start, start + value.len())),
        );
    }
    if spans.is_empty() {
        return Cow::Borrowed(text);
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut done = 0;
    for (start, end) in spans {
        if end <= done {
            continue;
        }
        out.push_str(&text[done..start.max(done)]);
        if start >= done {
            out.push_str(REDACTED);
        }
        done = end;
    }
    out.push_str(&text[done..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotating_values_never_push_out_lasting_ones_or_another_sources() {
        hide_everywhere("lasting-env-secret-0001");
        hide_while_current("vault login", "hvs.login-token-0001");
        for n in 0..100 {
            hide_while_current("oauth token", &format!("access-token-{n:04}"));
        }
        let said = redact("lasting-env-secret-0001 hvs.login-token-0001 access-token-0099");
        assert_eq!(said, "*** *** ***");
        assert_eq!(
            redact("access-token-0000"),
            "access-token-0000",
            "the oldest went"
        );
    }

    #[test]
    fn mask_short_and_long() {
        assert_eq!(mask(""), "*** (0 chars)");
        assert_eq!(mask("hunter2-xyz"), "*** (11 chars)");
        assert_eq!(mask(&"a".repeat(23)), "*** (23 chars)");
        assert_eq!(mask(&format!("abcd{}", "z".repeat(20))), "abcd… (24 chars)");
        assert_eq!(mask(&"ä".repeat(30)), "ääää… (30 chars)");
    }

    #[test]
    fn a_quoted_field_around_the_scheme_does_not_shield_the_token() {
        // Found by the `redact` fuzz target: the field rule used to take
        // `"… Bearer "` as a quoted value, leaving the token after it.
        let line = r#"x_secret":"abc Authorization: Bearer "tok-en" y"#;
        assert!(!redact(line).contains("tok-en"), "{}", redact(line));
        // And the other way round: a scheme before a key keeps the key's value.
        assert_eq!(redact("on: Basic  token: pw-2p~x "), "on: Basic  *** *** ");
    }

    #[test]
    fn an_auth_mode_is_no_credential() {
        for text in ["[basic mode, TTL 300s]", "bearer mode", "(Basic mode)"] {
            assert_eq!(redact(text), text);
        }
        assert_eq!(redact("Basic modest-secret"), "Basic ***");
        assert_eq!(redact("Bearer mode-x"), "Bearer ***");
    }

    #[test]
    fn our_settings_are_no_secret_fields_but_secret_ones_are() {
        for text in [
            r#"MLFLOW_SECRETS_REQUEST_TIMEOUT_SEC: "soon" is not a number of seconds"#,
            r#"MLFLOW_SECRETS_ALLOWED_HOSTS="*.example.com""#,
        ] {
            assert_eq!(redact(text), text);
        }
        assert_eq!(
            redact(r#"MLFLOW_SECRETS_OAUTH_CLIENT_SECRET: "s3cr3t-value""#),
            r#"MLFLOW_SECRETS_OAUTH_CLIENT_SECRET: "***""#
        );
        assert_eq!(
            redact(r#"X_MLFLOW_SECRETS_TIMEOUT: "value-1""#),
            r#"X_MLFLOW_SECRETS_TIMEOUT: "***""#
        );
        // A hostile server's text: a field nested in the value, and names
        // spelled with letters the patterns fold into ASCII.
        for hostile in [
            r#"MLFLOW_SECRETS_NOTE: "x \"password\": \"leak-BBBB2222\" ""#,
            "MLFLOW_SECRETS_API_\u{212a}EY=leak-CCCC3333",
            r#"MLFLOW_SECRETS_ſECRET_ACCEſſ: "leak-DDDD4444""#,
        ] {
            assert!(!redact(hostile).contains("leak-"), "{}", redact(hostile));
        }
    }

    #[test]
    fn passwords_show_only_their_length() {
        assert_eq!(mask_password(&"p".repeat(40)), "*** (40 chars)");
    }

    #[test]
    fn every_token_character_is_redacted_after_a_scheme() {
        let token = "ab!#$%&'*()+,:;<=>?@[]^`{|}~\\\"x";
        let line = format!("sent Bearer {token}");
        assert_eq!(redact(&line), "sent Bearer ***");
    }

    #[test]
    fn redacts_auth_schemes() {
        assert_eq!(
            redact("authorization: bearer eyJabc"),
            "authorization: bearer ***"
        );
        assert_eq!(
            redact("sent Basic YWxpY2U6cHc= to host"),
            "sent Basic *** to host"
        );
    }

    #[test]
    fn a_repeated_scheme_does_not_shield_the_value() {
        // Found by the `redact` fuzz target.
        assert_eq!(redact("Basic Bearer abcdefgh"), "Basic Bearer ***");
        // A value ending like a key (`…Key=`, base64 padding) must be
        // redacted whole, so a doubled key is not merged into one prefix:
        // `Token: token: x` keeps `x` (the fuzz target excludes that shape).
        assert_eq!(redact("password=abcKey= user=bob"), "password=*** user=bob");
    }

    #[test]
    fn redacts_jwts() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig-nature_x";
        assert_eq!(redact(&format!("got {jwt} back")), "got *** back");
    }

    #[test]
    fn redacts_json_fields() {
        assert_eq!(
            redact(r#"{"username": "alice", "password": "p\"w", "api_key": "k"}"#),
            r#"{"username": "alice", "password": "***", "api_key": "***"}"#
        );
        assert_eq!(
            redact(r#"{'client_secret': 'xyz', "access_token":"abc"}"#),
            r#"{'client_secret': '***', "access_token":"***"}"#
        );
    }

    #[test]
    fn redacts_key_value_pairs() {
        assert_eq!(
            redact("VAULT_TOKEN=s.abc123 other=1"),
            "VAULT_TOKEN=*** other=1"
        );
        assert_eq!(redact("?secret=abc&x=1"), "?secret=***&x=1");
    }

    #[test]
    fn a_variable_named_in_our_own_words_survives_but_its_value_does_not() {
        for message in [
            "vault: VAULT_TOKEN: is not set (config)",
            "VAULT_TOKEN is not set: set VAULT_TOKEN, or VAULT_ROLE_ID and VAULT_SECRET_ID (provider vault)",
            "MLFLOW_SECRETS_AGENT_TOKEN_FILE: names a file that does not exist",
            "AWS_SECRET_ACCESS_KEY: must be set with AWS_ACCESS_KEY_ID",
        ] {
            assert_eq!(redact(message), message);
        }
        assert_eq!(
            redact("VAULT_TOKEN: s.abc is wrong"),
            "VAULT_TOKEN: *** is wrong"
        );
        assert_eq!(redact("VAULT_TOKEN=is"), "VAULT_TOKEN=***");
        // A value spelled like one of our words is still a value.
        assert_eq!(
            redact("MLFLOW_TRACKING_PASSWORD: Set"),
            "MLFLOW_TRACKING_PASSWORD: ***"
        );
        assert_eq!(redact("api_key:the"), "api_key:***");
        assert_eq!(redact("api_key: the, x"), "api_key: ***, x");
    }

    #[test]
    fn redacts_url_userinfo() {
        assert_eq!(
            redact("GET https://alice:pw@h.example/x and http://tok@h2/"),
            "GET https://***@h.example/x and http://***@h2/"
        );
    }

    #[test]
    fn messages_about_auth_modes_survive() {
        let message = "auth mode `bearer` cannot use a username/password secret; set the auth mode to `basic`";
        assert_eq!(redact(message), message);
    }

    #[test]
    fn names_that_merely_contain_a_word_are_left_alone() {
        for clean in [
            "mlflow_secrets_auth: credential fetched",
            "aws-secrets-manager: reading secret `x` failed",
            "mlflow_secrets_auth_core::env: keyring lookup",
        ] {
            assert_eq!(redact(clean), clean);
        }
        assert_eq!(
            redact("AWS_SECRET_ACCESS_KEY=abc client_secret: xyz"),
            "AWS_SECRET_ACCESS_KEY=*** client_secret: ***"
        );
    }

    #[test]
    fn leaves_clean_text_borrowed() {
        assert!(matches!(
            redact("cache hit for vault:https://v:8200::secret/x"),
            Cow::Borrowed(_)
        ));
    }
}
