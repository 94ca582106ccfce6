//! What a backend's HTTP answer means, for every provider alike: the
//! [`ErrorKind`] of a status, and how long a `Retry-After` asks to wait.
//!
//! | status | kind | retried |
//! |---|---|---|
//! | 401, 403 | [`ErrorKind::PermissionDenied`] | no |
//! | 404 | [`ErrorKind::NotFound`] | no |
//! | 408 (request timeout) | [`ErrorKind::Transient`] | yes |
//! | 429 | [`ErrorKind::Throttled`] | yes, after `Retry-After` when given |
//! | 500–599 | [`ErrorKind::Transient`] | yes |
//! | any other | [`ErrorKind::Rejected`] | no |
//!
//! A provider refines this only where its backend says more than the status
//! (an AWS error code, Azure's `SecretDisabled`, a Vault login's 400).

use std::time::{Duration, SystemTime};

use crate::ErrorKind;

/// The most of a server's own words an error message carries.
pub const MAX_SERVER_TEXT: usize = 300;

/// Text a server sent (an error message, a code), made fit for an error
/// message: redacted ([`crate::redact`]) — a server may echo what it was
/// sent, the token included — before it is cut to [`MAX_SERVER_TEXT`]
/// characters (then `…`), so no secret is cut to a prefix that no longer
/// matches; control and bidirectional-formatting characters as spaces.
///
/// ```
/// use mlflow_secrets_auth_core::classify::server_said;
/// assert_eq!(server_said("permission denied\n\u{1b}[31m"), "permission denied  [31m");
/// assert_eq!(server_said("denied: Bearer hvs.abc"), "denied: Bearer ***");
/// assert_eq!(server_said(&"x".repeat(400)).chars().count(), 301);
/// ```
pub fn server_said(text: &str) -> String {
    // The whole text is redacted, however long: a cut before it could
    // leave a secret's prefix where the shown part ends.
    let text: String = text
        .trim()
        .chars()
        .map(|c| {
            if c.is_control() || is_format(c) {
                ' '
            } else {
                c
            }
        })
        .collect();
    let redacted = crate::redact(&text);
    let mut cut: String = redacted.chars().take(MAX_SERVER_TEXT).collect();
    if redacted.chars().nth(MAX_SERVER_TEXT).is_some() {
        cut.push('…');
    }
    cut
}

/// Unicode format characters that reorder or hide text on a terminal
/// (bidirectional overrides and isolates, zero-width characters).
fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}'
    )
}

/// The kind of failure an HTTP status from a backend means (the table above).
pub fn status_kind(status: u16) -> ErrorKind {
    match status {
        401 | 403 => ErrorKind::PermissionDenied,
        404 => ErrorKind::NotFound,
        408 | 500..=599 => ErrorKind::Transient,
        429 => ErrorKind::Throttled,
        _ => ErrorKind::Rejected,
    }
}

/// How long a `Retry-After` header value asks to wait from `now`: either
/// delta-seconds (`120`) or an HTTP-date (`Wed, 21 Oct 2026 07:28:00 GMT`; a
/// date in the past means no wait). `None` when it is neither. Cut to
/// [`crate::MAX_DURATION`].
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if value.bytes().all(|b| b.is_ascii_digit()) {
        // Longer than u64 seconds is still "very long", not "unreadable".
        Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    (!value.is_empty()).then(|| crate::capped(wait))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_across_the_cut_is_hidden_whole_and_bidi_controls_are_blanked() {
        crate::hide_everywhere("hvs.CAESIsecretAcrossTheCut0123456789");
        let said = server_said(&format!(
            "denied {} hvs.CAESIsecretAcrossTheCut0123456789",
            "x".repeat(270)
        ));
        assert!(!said.contains("hvs.CAESIsecret"), "{said}");
        assert_eq!(server_said("a\u{202E}b\u{200D}c"), "a b c");
    }

    #[test]
    fn statuses_map_as_the_table_says() {
        for (status, kind) in [
            (400, ErrorKind::Rejected),
            (401, ErrorKind::PermissionDenied),
            (403, ErrorKind::PermissionDenied),
            (404, ErrorKind::NotFound),
            (408, ErrorKind::Transient),
            (409, ErrorKind::Rejected),
            (429, ErrorKind::Throttled),
            (500, ErrorKind::Transient),
            (503, ErrorKind::Transient),
            (599, ErrorKind::Transient),
            (302, ErrorKind::Rejected),
            (600, ErrorKind::Rejected),
        ] {
            assert_eq!(status_kind(status), kind, "{status}");
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2026 07:28:00 GMT").unwrap();
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(retry_after("7", now), secs(7));
        assert_eq!(retry_after(" 120 ", now), secs(120));
        assert_eq!(retry_after("Wed, 21 Oct 2026 07:30:00 GMT", now), secs(120));
        assert_eq!(retry_after("Wed, 21 Oct 2026 07:00:00 GMT", now), secs(0));
        // The two obsolete date forms HTTP/1.1 still accepts.
        assert_eq!(
            retry_after("Wednesday, 21-Oct-26 07:29:00 GMT", now),
            secs(60)
        );
        assert_eq!(retry_after("Wed Oct 21 07:29:00 2026", now), secs(60));
        assert_eq!(
            retry_after("99999999999999999999999", now),
            Some(crate::MAX_DURATION)
        );
        for bad in ["", "soon", "-1", "1.5", "Wed, 32 Oct 2026 07:28:00 GMT"] {
            assert_eq!(retry_after(bad, now), None, "{bad:?}");
        }
    }
}
