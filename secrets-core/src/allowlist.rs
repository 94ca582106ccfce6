//! [`HostAllowlist`]: which hosts may receive the credential.
//!
//! Patterns are shell globs (`*`, `?`, `[abc]`, `[a-z]`, `[!x]`) matched against
//! the whole host, case-insensitively. The host always comes from a parsed URL
//! (the `url` crate, WHATWG rules), never from string search, so userinfo
//! (`https://good@evil`), ports, IPv6 literals, percent-encoding, a trailing dot
//! and IDN spellings cannot make one host pass for another. Unicode patterns are
//! turned into punycode the same way hosts are.

use std::borrow::Cow;
use std::fmt;
use std::net::Ipv6Addr;

use url::Url;

/// The hosts a credential may be sent to. An unrestricted list allows every host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostAllowlist {
    /// `None` = no list configured: every host is allowed.
    patterns: Option<Vec<HostPattern>>,
}

/// Why a host pattern list was refused. The message names the bad pattern
/// (host patterns are not secrets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidHostPattern {
    /// The list has no pattern at all.
    #[error("lists no host pattern (unset it to allow every host)")]
    Empty,
    /// A `[` without its `]`.
    #[error("pattern `{0}` has a `[` without a closing `]`")]
    UnclosedClass(String),
    /// A pattern with a port, a path or a scheme.
    #[error("pattern `{0}` is not a host pattern (no scheme, port, path or userinfo)")]
    NotAHost(String),
    /// A non-ASCII pattern that is not a valid international domain name.
    #[error("pattern `{0}` is not a valid international domain name")]
    BadIdn(String),
}

impl HostAllowlist {
    /// A list that allows every host (what an unset variable means).
    pub fn allow_all() -> Self {
        Self { patterns: None }
    }

    /// Parses a comma-separated list of host patterns.
    ///
    /// ```
    /// use mlflow_secrets_auth_core::HostAllowlist;
    /// let list = HostAllowlist::parse("mlflow.example.com, *.corp.example")?;
    /// assert!(list.permits("https://MLFLOW.example.com:8443/api"));
    /// assert!(list.permits("https://a.b.corp.example/"));
    /// assert!(!list.permits("https://mlflow.example.com@evil.test/"));
    /// assert!(!list.permits("https://mlflow.example.com\\@evil.test/"));
    /// # Ok::<(), mlflow_secrets_auth_core::InvalidHostPattern>(())
    /// ```
    pub fn parse(list: &str) -> Result<Self, InvalidHostPattern> {
        let patterns = list
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(HostPattern::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if patterns.is_empty() {
            return Err(InvalidHostPattern::Empty);
        }
        Ok(Self {
            patterns: Some(patterns),
        })
    }

    /// Patterns worth a warning: a `*` that is not a whole leftmost label
    /// (`mlflow-*`, `*mlflow.example.com`, `a.*.example`) matches across dots,
    /// so it also admits hosts the author did not mean (`mlflow-x.evil.test`,
    /// `evilmlflow.example.com`); a lone `*` admits every host.
    pub fn warnings(&self) -> Vec<String> {
        self.patterns()
            .filter(|p| {
                p.split('.')
                    .enumerate()
                    .any(|(i, label)| label.contains('*') && (i > 0 || label != "*"))
                    || *p == "*"
            })
            .map(|p| {
                format!(
                    "host pattern `{p}`: `*` matches any text, dots included, so it admits more hosts than it seems to; use `*` only as a whole leftmost label (`*.example.com`)"
                )
            })
            .collect()
    }

    /// Whether a list restricts hosts at all (`false` = every host allowed).
    pub fn is_restricted(&self) -> bool {
        self.patterns.is_some()
    }

    /// The patterns, normalised (lower case, punycode), for display.
    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.patterns.iter().flatten().map(|p| p.text.as_str())
    }

    /// Whether the credential may be sent to `url`. A URL that does not parse,
    /// is not `http`/`https`, or has no host, is never permitted; nor is text
    /// whose host RFC 3986 reads differently from the `url` crate
    /// ([`text_agrees`](crate::text_agrees)), since a client reading it so
    /// would connect elsewhere.
    pub fn permits(&self, url: &str) -> bool {
        Url::parse(url)
            .is_ok_and(|parsed| self.permits_url(&parsed) && crate::hop::text_agrees(url, &parsed))
    }

    /// Whether the credential may be sent to the host of `url`.
    pub fn permits_url(&self, url: &Url) -> bool {
        if !matches!(url.scheme(), "http" | "https") {
            return false;
        }
        let Some(host) = normalise_host(url) else {
            return false;
        };
        let Some(patterns) = &self.patterns else {
            return true;
        };
        patterns.iter().any(|p| p.matches(&host))
    }
}

impl fmt::Display for HostAllowlist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.patterns {
            None => f.write_str("* (no allowlist: every host)"),
            Some(_) => {
                let list: Vec<&str> = self.patterns().collect();
                f.write_str(&list.join(", "))
            }
        }
    }
}

/// A host as patterns see it: lower case, punycode, no trailing dot, IPv6
/// without brackets. The `url` crate has already lower-cased and
/// punycode-encoded domains and written IP addresses canonically for http(s),
/// so this borrows in the usual case. `None`: no host, or not ASCII.
fn normalise_host(url: &Url) -> Option<Cow<'_, str>> {
    let host = url.host_str()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let host = host.strip_suffix('.').unwrap_or(host);
    if !host.is_ascii() || host.is_empty() {
        return None;
    }
    Some(if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct HostPattern {
    text: String,
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    AnyChar,
    AnySequence,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl HostPattern {
    fn parse(raw: &str) -> Result<Self, InvalidHostPattern> {
        let text = Self::normalise(raw)?;
        let tokens = Self::tokenise(&text)
            .ok_or_else(|| InvalidHostPattern::UnclosedClass(raw.to_owned()))?;
        Ok(Self { text, tokens })
    }

    fn normalise(raw: &str) -> Result<String, InvalidHostPattern> {
        let not_a_host = || InvalidHostPattern::NotAHost(raw.to_owned());
        // IPv6 literal, with or without brackets.
        let bare = raw.strip_prefix('[').and_then(|r| r.strip_suffix(']'));
        if let Ok(ip) = bare.unwrap_or(raw).parse::<Ipv6Addr>() {
            // Written as the `url` crate writes hosts (`::ffff:127.0.0.1` is
            // `::ffff:7f00:1` there), so a pattern matches what URLs carry.
            return Ok(url::Host::<&str>::Ipv6(ip)
                .to_string()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned());
        }
        if raw
            .chars()
            .any(|c| matches!(c, ':' | '/' | '@' | '\\' | '#') || c.is_whitespace())
        {
            return Err(not_a_host());
        }
        let lower = raw.strip_suffix('.').unwrap_or(raw).to_lowercase();
        if lower.is_ascii() {
            return Ok(lower);
        }
        // A Unicode pattern: convert each label without glob characters to punycode.
        lower
            .split('.')
            .map(|label| {
                if label.is_ascii() {
                    Ok(label.to_owned())
                } else if label.contains(['*', '?', '[', ']']) {
                    Err(InvalidHostPattern::BadIdn(raw.to_owned()))
                } else {
                    idna::domain_to_ascii(label)
                        .map_err(|_| InvalidHostPattern::BadIdn(raw.to_owned()))
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|labels| labels.join("."))
    }

    /// Splits a glob into tokens; `None` when a `[` is never closed.
    fn tokenise(text: &str) -> Option<Vec<Token>> {
        let mut tokens = Vec::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            tokens.push(match c {
                '*' => Token::AnySequence,
                '?' => Token::AnyChar,
                '[' => {
                    let negated = chars.next_if(|&c| c == '!' || c == '^').is_some();
                    let mut ranges = Vec::new();
                    let mut first = true;
                    loop {
                        let c = chars.next()?;
                        if c == ']' && !first {
                            break;
                        }
                        first = false;
                        if chars.peek() == Some(&'-') {
                            let mut ahead = chars.clone();
                            ahead.next();
                            match ahead.next() {
                                Some(end) if end != ']' => {
                                    chars = ahead;
                                    ranges.push((c, end));
                                    continue;
                                }
                                _ => {}
                            }
                        }
                        ranges.push((c, c));
                    }
                    Token::Class { negated, ranges }
                }
                c => Token::Literal(c),
            });
        }
        Some(tokens)
    }

    /// Matches an ASCII host.
    fn matches(&self, host: &str) -> bool {
        glob_match(&self.tokens, host.as_bytes())
    }
}

/// Iterative glob matching with single-star backtracking: linear in practice,
/// quadratic at worst, never exponential.
fn glob_match(tokens: &[Token], text: &[u8]) -> bool {
    let (mut t, mut s) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while s < text.len() {
        match tokens.get(t) {
            Some(Token::AnySequence) => {
                star = Some((t, s));
                t += 1;
                continue;
            }
            Some(token) if token.matches_char(char::from(text[s])) => {
                t += 1;
                s += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((star_t, star_s)) => {
                star = Some((star_t, star_s + 1));
                t = star_t + 1;
                s = star_s + 1;
            }
            None => return false,
        }
    }
    tokens[t.min(tokens.len())..]
        .iter()
        .all(|token| matches!(token, Token::AnySequence))
}

impl Token {
    fn matches_char(&self, c: char) -> bool {
        match self {
            Self::Literal(l) => *l == c,
            Self::AnyChar => true,
            Self::AnySequence => false,
            Self::Class { negated, ranges } => {
                ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_classes_and_ranges() {
        let list =
            HostAllowlist::parse("node[0-9].example, host[!x].example, [-a]b.example").unwrap();
        assert!(list.permits("https://node7.example"));
        assert!(!list.permits("https://nodex.example"));
        assert!(list.permits("https://hosty.example"));
        assert!(!list.permits("https://hostx.example"));
        assert!(list.permits("https://-b.example"));
        assert!(list.permits("https://ab.example"));
    }

    #[test]
    fn unclosed_class_is_refused() {
        assert_eq!(
            HostAllowlist::parse("a.example, [ab.example"),
            Err(InvalidHostPattern::UnclosedClass("[ab.example".into()))
        );
    }

    #[test]
    fn ipv4_mapped_ipv6_patterns_match_what_urls_carry() {
        let list = HostAllowlist::parse("::ffff:127.0.0.1, [::FFFF:10.0.0.1]").unwrap();
        assert!(list.permits("http://[::ffff:127.0.0.1]:5000/"));
        assert!(list.permits("http://[::ffff:7f00:1]/"));
        assert!(list.permits("http://[::ffff:a00:1]/"));
        assert!(!list.permits("http://127.0.0.1/"));
    }

    #[test]
    fn partial_label_stars_are_warned_about() {
        let list =
            HostAllowlist::parse("*.example.com, mlflow-*, *mlflow.example.org, a.*.test, ok.test")
                .unwrap();
        let warned: Vec<String> = list.warnings();
        assert_eq!(warned.len(), 3, "{warned:?}");
        for pattern in ["`mlflow-*`", "`*mlflow.example.org`", "`a.*.test`"] {
            assert!(warned.iter().any(|w| w.contains(pattern)), "{pattern}");
        }
        assert_eq!(HostAllowlist::parse("*").unwrap().warnings().len(), 1);
    }

    #[test]
    fn pathological_pattern_is_fast() {
        let list = HostAllowlist::parse("*a*a*a*a*a*a*a*a*a*b").unwrap();
        let url = format!("https://{}.example/", "a".repeat(60));
        assert!(!list.permits(&url));
    }
}
