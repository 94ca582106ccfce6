//! [`HopPolicy`]: which hop of a request chain (a request, its redirects, its
//! resend after a 401/403) gets the credential. Every face — the reqwest
//! middleware, the Python plugin, the CLI — asks this one function.
//!
//! A hop gets the credential only when all of these hold:
//! 1. its URL is `http`/`https` with a host, and a second parser (`http::Uri`,
//!    what hyper connects with) reads the same host and port from it as the
//!    `url` crate does — where two parsers could disagree, nothing is sent;
//! 2. the host passes the [`HostAllowlist`];
//! 3. the chain never went from `https` to `http` (a downgrade withholds the
//!    credential on that hop and every later one, loopback included);
//! 4. plain `http` to a non-loopback host is refused under `require_tls`.
//!
//! When the origin (scheme, host or port) changes from one hop to the next,
//! every credential header ([`CREDENTIAL_HEADERS`] and the configured one) is
//! removed before anything is attached again.

use std::fmt;
use std::net::IpAddr;

use url::{Host, Url};

use crate::allowlist::HostAllowlist;
use crate::error::{Result, SecretError};

/// Headers that carry credentials, removed on every change of origin (the
/// configured auth header is removed too, whatever its name).
pub const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "cookie", "proxy-authorization"];

/// Why a hop gets no credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Withheld {
    /// Not an `http`/`https` URL with a host.
    NotHttp,
    /// The host is not in the allowlist.
    HostNotAllowed,
    /// The chain went from `https` to `http`.
    Downgraded,
    /// Two URL parsers read different hosts or ports from the URL.
    Ambiguous,
}

impl Withheld {
    /// A short reason for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotHttp => "not an http(s) URL with a host",
            Self::HostNotAllowed => "host not allowed",
            Self::Downgraded => "the redirect chain left https",
            Self::Ambiguous => "URL parsers disagree about its host",
        }
    }
}

impl fmt::Display for Withheld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the policy decided for one hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Hop {
    /// Remove every credential header before sending (the origin changed).
    pub strip_credentials: bool,
    /// Whether the chain has left https, this hop included: pass it to the
    /// next [`HopPolicy::decide`].
    pub left_https: bool,
    /// `Ok(())`: attach the credential; else why not.
    pub verdict: std::result::Result<(), Withheld>,
}

impl Hop {
    /// Whether this hop gets the credential.
    pub fn attach(&self) -> bool {
        self.verdict.is_ok()
    }
}

/// The hop policy: an allowlist and the TLS rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HopPolicy {
    allowlist: HostAllowlist,
    require_tls: bool,
}

impl HopPolicy {
    /// A policy: hosts in `allowlist`; with `require_tls`, plain http to a
    /// non-loopback host is an error.
    pub fn new(allowlist: HostAllowlist, require_tls: bool) -> Self {
        Self {
            allowlist,
            require_tls,
        }
    }

    /// The allowlist.
    pub fn allowlist(&self) -> &HostAllowlist {
        &self.allowlist
    }

    /// Decides the hop to `next`, the URL exactly as the HTTP client will
    /// send it. `previous` is the URL of the hop before (`None` for the first
    /// request) and `left_https` what the previous [`Hop`] said (`false` first).
    ///
    /// An error only for plain http to a non-loopback host under `require_tls`.
    ///
    /// ```
    /// use mlflow_secrets_auth_core::{HopPolicy, HostAllowlist, Withheld};
    /// use url::Url;
    /// let policy = HopPolicy::new(HostAllowlist::parse("mlflow.example.com")?, false);
    /// let first = Url::parse("https://mlflow.example.com/api")?;
    /// let hop = policy.decide(None, false, &first)?;
    /// assert!(hop.attach());
    /// let down = Url::parse("http://mlflow.example.com/api")?;
    /// let hop = policy.decide(Some(&first), hop.left_https, &down)?;
    /// assert_eq!(hop.verdict, Err(Withheld::Downgraded));
    /// assert!(hop.strip_credentials, "the scheme changed");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn decide(&self, previous: Option<&Url>, left_https: bool, next: &Url) -> Result<Hop> {
        let left_https = left_https
            || (previous.is_some_and(|p| p.scheme() == "https") && next.scheme() == "http");
        let strip_credentials = previous.is_some_and(|p| p.origin() != next.origin());
        let verdict = self.verdict(next, left_https)?;
        Ok(Hop {
            strip_credentials,
            left_https,
            verdict,
        })
    }

    /// Whether a first request to `url` gets the credential (the same rules,
    /// no previous hop).
    pub fn permits(&self, url: &Url) -> Result<std::result::Result<(), Withheld>> {
        self.verdict(url, false)
    }

    fn verdict(&self, url: &Url, left_https: bool) -> Result<std::result::Result<(), Withheld>> {
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Ok(Err(Withheld::NotHttp));
        }
        if !self.allowlist.permits_url(url) {
            return Ok(Err(Withheld::HostNotAllowed));
        }
        if left_https {
            return Ok(Err(Withheld::Downgraded));
        }
        // A plain origin reads the same in every parser; others are checked.
        if plain_origin(url.as_str()).is_none() && !parsers_agree(url) {
            return Ok(Err(Withheld::Ambiguous));
        }
        if self.require_tls && url.scheme() == "http" && !is_loopback(url) {
            return Err(SecretError::config(
                "MLFLOW_SECRETS_REQUIRE_TLS",
                format!(
                    "refusing to send the credential over plain http to {}",
                    url.host_str().unwrap_or_default()
                ),
            ));
        }
        Ok(Ok(()))
    }
}

/// `scheme://authority` of `url` when it is plain enough that every URL
/// parser reads the same host and port from it: `http`/`https` in lower case,
/// then a host of lower-case letters, digits, `.` and `-` (or an IPv6
/// literal in brackets: hex digits, `:` and `.`) and an optional `:port`
/// (1 to 65535, no leading zero; `:` alone means the default), up to the
/// first `/`, `?` or `#` (or the end).
///
/// A named host must not end with a dot (a DNS name to some, an address to
/// others), and a host whose last label is a number must be an IPv4 address
/// in the usual four decimal parts (`2130706433`, `127.1` or `127.000.0.1`
/// are addresses to some parsers and names to others).
///
/// One pass over the bytes, without allocation: this runs on every request,
/// the cache hit path included.
pub fn plain_origin(url: &str) -> Option<&str> {
    let bytes = url.as_bytes();
    let start = if bytes.starts_with(b"https://") {
        8
    } else if bytes.starts_with(b"http://") {
        7
    } else {
        return None;
    };
    let mut at = start;
    if bytes.get(at) == Some(&b'[') {
        // An IPv6 literal: hex digits, `:` and `.` up to `]`.
        at += 1;
        while let Some(&b) = bytes.get(at)
            && matches!(b, b'0'..=b'9' | b'a'..=b'f' | b':' | b'.')
        {
            at += 1;
        }
        if at == start + 1 || bytes.get(at) != Some(&b']') {
            return None;
        }
        at += 1;
    } else {
        // A name or an IPv4 address; `label` is the label being read and
        // `v4` whether every label so far is a decimal part 0-255 without a
        // leading zero.
        let mut labels = 0_u32;
        let mut label = Label::default();
        let mut v4 = true;
        while let Some(&b) = bytes.get(at) {
            match b {
                b'a'..=b'z' | b'-' => {
                    label.hex |= label.len == 1 && label.leading_zero && b == b'x';
                    label.digits = false;
                    label.len += 1;
                }
                b'0'..=b'9' => {
                    if label.len == 0 {
                        label.leading_zero = b == b'0';
                    }
                    label.value = label
                        .value
                        .saturating_mul(10)
                        .saturating_add(u16::from(b - b'0'));
                    label.len += 1;
                }
                b'.' => {
                    v4 &= label.is_v4_part();
                    labels += 1;
                    label = Label::default();
                }
                _ => break,
            }
            at += 1;
        }
        if at == start || label.len == 0 {
            // No host, or a trailing dot.
            return None;
        }
        if (label.digits || label.hex) && !(v4 && label.is_v4_part() && labels == 3) {
            return None;
        }
    }
    if bytes.get(at) == Some(&b':') {
        // A port of 1 to 65535 without a leading zero (requests drops `:0`,
        // and nothing connects to `:99999`), or none at all.
        at += 1;
        let digits = at;
        let mut port = 0_u32;
        while let Some(&b) = bytes.get(at)
            && b.is_ascii_digit()
        {
            port = port.saturating_mul(10).saturating_add(u32::from(b - b'0'));
            at += 1;
        }
        if at > digits && (bytes[digits] == b'0' || port > 65_535) {
            return None;
        }
    }
    match bytes.get(at) {
        None | Some(b'/' | b'?' | b'#') => Some(&url[..at]),
        Some(_) => None,
    }
}

/// One label of a host, as [`plain_origin`] reads it.
#[derive(Clone, Copy)]
struct Label {
    len: usize,
    /// Only digits so far.
    digits: bool,
    /// Starts with `0x`.
    hex: bool,
    /// Starts with `0`.
    leading_zero: bool,
    /// Its decimal value (saturated) while it is all digits.
    value: u16,
}

impl Default for Label {
    fn default() -> Self {
        Self {
            len: 0,
            digits: true,
            hex: false,
            leading_zero: false,
            value: 0,
        }
    }
}

impl Label {
    /// A decimal part of a dotted-quad IPv4 address.
    fn is_v4_part(self) -> bool {
        self.digits
            && (1..=3).contains(&self.len)
            && self.value <= 255
            && !(self.leading_zero && self.len > 1)
    }
}

/// Parses `text`, a URL that will be handed on *as text* to another program
/// (a child's `MLFLOW_TRACKING_URI`, the destination of a printed header):
/// that program's parser, not ours, decides where the credential goes, so
/// only a [`plain_origin`] — read the same by every parser — is accepted.
/// Anything else is a `config` error naming `source` (the variable or flag
/// the text came from), never showing the text (it may hold a password).
///
/// ```
/// use mlflow_secrets_auth_core::parse_handed_on;
/// assert!(parse_handed_on("https://mlflow.example.com:8443/x", "--url").is_ok());
/// let error = parse_handed_on("http://mlflow.example.com\\@127.0.0.2/", "--url").unwrap_err();
/// assert!(error.to_string().starts_with("--url: "));
/// ```
pub fn parse_handed_on(text: &str, source: &str) -> Result<Url> {
    let refuse = |problem: &str| SecretError::config(source, problem);
    if text.trim_start().to_ascii_lowercase().starts_with("file:") {
        return Err(refuse(
            "is a local file store (file:): MLflow reads it without any credential, so run the command \
             without mlflow-secrets-auth, or name the tracking server's http(s) URL",
        ));
    }
    if plain_origin(text).is_none() {
        return Err(refuse(
            "is not a plain http(s) URL, so other programs may read another host from it than \
             the one allowed: write `http://` or `https://`, the host in lower case (letters, \
             digits, `.`, `-`, or an IPv6 address in brackets), an optional `:port`, then the \
             path — no user name, `@`, `\\`, `%`-escapes, spaces or control characters",
        ));
    }
    let url = Url::parse(text).map_err(|e| refuse(&format!("is not a URL ({e})")))?;
    // A plain origin parses to itself (but for a default port): the text
    // handed on names the host and port that were judged.
    fn without_default_port(origin: &str) -> &str {
        let origin = origin.strip_suffix(':').unwrap_or(origin);
        let default = if origin.starts_with("https:") {
            ":443"
        } else {
            ":80"
        };
        origin.strip_suffix(default).unwrap_or(origin)
    }
    if plain_origin(url.as_str()) != plain_origin(text).map(without_default_port) {
        return Err(refuse(
            "is read differently once parsed; write the address in its usual form \
             (no leading zeros, no trailing dot)",
        ));
    }
    Ok(url)
}

/// Whether `http::Uri` — what hyper connects with — reads the same host and
/// port from `url`'s text as the `url` crate did.
pub fn parsers_agree(url: &Url) -> bool {
    let Ok(uri) = url.as_str().parse::<http::Uri>() else {
        return false;
    };
    let (Some(theirs), Some(ours)) = (uri.host(), url.host_str()) else {
        return false;
    };
    let default = match uri.scheme_str() {
        Some("http") => 80,
        Some("https") => 443,
        _ => return false,
    };
    theirs.eq_ignore_ascii_case(ours)
        && uri.port_u16().unwrap_or(default) == url.port_or_known_default().unwrap_or(0)
        && uri.scheme_str() == Some(url.scheme())
}

/// Whether another parser's reading of `url` — `host` and `port` — names the
/// same host and port as the `url` crate's. Hosts compare without IPv6
/// brackets and ASCII case-insensitively; nothing else is normalised, so a
/// host one parser decoded (percent-encoding, Unicode dots) and the other did
/// not counts as a disagreement.
pub fn same_authority(url: &Url, host: &str, port: u16) -> bool {
    let bare = |h: &str| {
        h.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(h)
            .to_owned()
    };
    url.host_str()
        .is_some_and(|ours| bare(ours).eq_ignore_ascii_case(&bare(host)))
        && url.port_or_known_default() == Some(port)
}

/// Whether RFC 3986's reading of `text` — the authority from `//` to the
/// first `/`, `?` or `#`, userinfo up to its last `@`, the port after the
/// last `:` outside an IP literal — names the host and port the `url` crate
/// read into `url` (see [`same_authority`]; a non-ASCII name may be written
/// in Unicode). A client that reads text by RFC 3986 (curl, and most
/// non-browser clients) then connects where `url` says: where it would not
/// (`http://allowed\@thief/`, which the `url` crate reads as `allowed`),
/// the two disagree and nothing should be sent.
///
/// ```
/// use mlflow_secrets_auth_core::text_agrees;
/// use url::Url;
/// let text = "https://mlflow.example.com/api?x=a b";
/// assert!(text_agrees(text, &Url::parse(text).unwrap()));
/// let trick = "http://127.0.0.1:5000\\@127.0.0.2:6000/steal";
/// assert!(!text_agrees(trick, &Url::parse(trick).unwrap()));
/// ```
pub fn text_agrees(text: &str, url: &Url) -> bool {
    let Some((_, rest)) = text.trim().split_once("://") else {
        return false;
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match hostport.strip_prefix('[') {
        Some(literal) => match literal.split_once(']') {
            Some((inside, after)) => (inside, after.strip_prefix(':').unwrap_or(after)),
            None => return false,
        },
        None => hostport.rsplit_once(':').unwrap_or((hostport, "")),
    };
    let port = match port {
        "" => url.port_or_known_default(),
        digits => digits.parse().ok(),
    };
    let Some(port) = port else {
        return false;
    };
    let same_port = url.port_or_known_default() == Some(port);
    same_authority(url, host, port)
        // An IPv6 literal may be written in other forms (`::ffff:127.0.0.1`
        // for the `url` crate's `::ffff:7f00:1`).
        || (hostport.starts_with('[')
            && host
                .parse::<std::net::Ipv6Addr>()
                .is_ok_and(|ip| url.host() == Some(Host::Ipv6(ip)))
            && same_port)
        || (!host.is_ascii()
            && !host.contains(['%', '\\'])
            // IDNA's deviation characters: UTS #46 in its transitional form
            // (curl's libidn2 falls back to it) maps `ß` to `ss`, `ς` to
            // `σ` and drops the joiners, so clients disagree on the host.
            && !host.contains(['\u{DF}', '\u{1E9E}', '\u{3C2}', '\u{200C}', '\u{200D}'])
            && Host::parse(host).is_ok_and(|h| Some(h.to_string().as_str()) == url.host_str())
            && same_port)
}

/// Whether `url`'s host is a loopback address, or `localhost` itself (which
/// the hosts file answers where the system looks there first, as usual).
/// Not another `*.localhost` name, nor `localhost.`: a resolver may send
/// those to DNS, and its answer may be anywhere.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        // The `url` crate writes names in lower case.
        Some(Host::Domain(domain)) => domain == "localhost",
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    /// The rule of [`plain_origin`] written plainly (split, then check each
    /// part), as the oracle of its one-pass form.
    fn reference(url: &str) -> Option<&str> {
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))?;
        let end = rest
            .bytes()
            .position(|b| matches!(b, b'/' | b'?' | b'#'))
            .unwrap_or(rest.len());
        let authority = &rest[..end];
        let (host, port) = match authority.strip_prefix('[') {
            Some(literal) => {
                let (inside, after) = literal.split_once(']')?;
                let ipv6 = !inside.is_empty()
                    && inside
                        .bytes()
                        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f' | b':' | b'.'));
                (
                    ipv6.then_some(inside)?,
                    after.strip_prefix(':').or(after.is_empty().then_some(""))?,
                )
            }
            None => authority.split_once(':').unwrap_or((authority, "")),
        };
        let named = |host: &str| {
            if host.ends_with('.') {
                return false;
            }
            let last = host.rsplit('.').next().unwrap_or_default();
            let numeric = !last.is_empty()
                && (last.bytes().all(|b| b.is_ascii_digit()) || last.starts_with("0x"));
            if !numeric {
                return true;
            }
            let parts: Vec<&str> = host.split('.').collect();
            parts.len() == 4
                && parts.iter().all(|part| {
                    !part.is_empty()
                        && part.len() <= 3
                        && part.bytes().all(|b| b.is_ascii_digit())
                        && (*part == "0" || !part.starts_with('0'))
                        && part.parse::<u8>().is_ok()
                })
        };
        let plain = !host.is_empty()
            && (authority.starts_with('[')
                || (host
                    .bytes()
                    .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-'))
                    && named(host)))
            && port.bytes().all(|b| b.is_ascii_digit())
            && (port.is_empty()
                || (!port.starts_with('0') && port.parse::<u16>().is_ok_and(|p| p > 0)));
        plain.then(|| &url[..url.len() - rest.len() + end])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]
        #[test]
        fn the_one_pass_reading_is_the_plain_one(
            url in "(https?://|http:/|HTTP://)?(\\[[0-9a-fA-F:.%]{0,6}\\]?|[a-z0-9.x-]{0,12}|0x[0-9a-f]{1,3}(\\.[0-9]{1,4}){0,4}|([0-9]{1,4}\\.){0,4}[0-9]{0,4})(:[0-9a-z:]{0,5})?([/?#@\\\\ A-Z].{0,6})?"
        ) {
            prop_assert_eq!(plain_origin(&url), reference(&url), "{:?}", url);
        }
    }

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    fn policy() -> HopPolicy {
        HopPolicy::new(
            HostAllowlist::parse("127.0.0.1, localhost, mlflow.example.com").unwrap(),
            false,
        )
    }

    #[test]
    fn a_downgrade_withholds_this_hop_and_every_later_one() {
        let p = policy();
        let a = url("https://localhost:8443/a");
        let b = url("http://localhost:8080/b");
        let c = url("http://localhost:8080/c");
        let first = p.decide(None, false, &a).unwrap();
        assert!(first.attach() && !first.strip_credentials && !first.left_https);
        let second = p.decide(Some(&a), first.left_https, &b).unwrap();
        assert_eq!(second.verdict, Err(Withheld::Downgraded));
        assert!(second.strip_credentials);
        let third = p.decide(Some(&b), second.left_https, &c).unwrap();
        assert_eq!(third.verdict, Err(Withheld::Downgraded));
        assert!(!third.strip_credentials, "same origin");
    }

    #[test]
    fn plain_http_chains_that_never_had_tls_are_not_downgrades() {
        let p = policy();
        let a = url("http://127.0.0.1:5000/a");
        let b = url("http://127.0.0.1:5000/b");
        let hop = p.decide(Some(&a), false, &b).unwrap();
        assert!(hop.attach() && !hop.strip_credentials);
    }

    #[test]
    fn an_origin_change_strips_credentials() {
        let p = policy();
        let a = url("http://127.0.0.1:5000/a");
        for next in [
            "http://127.0.0.1:5001/a",
            "https://127.0.0.1:5000/a",
            "http://localhost:5000/a",
        ] {
            let hop = p.decide(Some(&a), false, &url(next)).unwrap();
            assert!(hop.strip_credentials, "{next}");
        }
    }

    #[test]
    fn hosts_outside_the_list_and_other_schemes_get_nothing() {
        let p = policy();
        for (text, why) in [
            ("http://127.0.0.2/", Withheld::HostNotAllowed),
            ("http://127.0.0.1:1@127.0.0.2/", Withheld::HostNotAllowed),
            ("ftp://127.0.0.1/", Withheld::NotHttp),
            ("file:///etc/passwd", Withheld::NotHttp),
        ] {
            assert_eq!(p.permits(&url(text)).unwrap(), Err(why), "{text}");
        }
    }

    #[test]
    fn require_tls_refuses_plain_http_off_loopback() {
        let p = HopPolicy::new(HostAllowlist::allow_all(), true);
        assert!(p.permits(&url("http://mlflow.example.com/")).is_err());
        assert_eq!(p.permits(&url("http://127.0.0.1/")).unwrap(), Ok(()));
        assert_eq!(p.permits(&url("http://LocalHost:5000/")).unwrap(), Ok(()));
        for resolved in [
            "http://x.localhost/",
            "http://localhost./",
            "http://127.0.0.1.nip.io/",
        ] {
            assert!(p.permits(&url(resolved)).is_err(), "{resolved}");
        }
        assert_eq!(
            p.permits(&url("https://mlflow.example.com/")).unwrap(),
            Ok(())
        );
    }

    #[test]
    fn only_plain_origins_count_as_plain() {
        for (url, origin) in [
            (
                "https://mlflow.example.com/api?x=1",
                Some("https://mlflow.example.com"),
            ),
            ("http://127.0.0.1:5000", Some("http://127.0.0.1:5000")),
            ("http://127.0.0.1:5000#f", Some("http://127.0.0.1:5000")),
            (
                "https://a-b.example:8443?q",
                Some("https://a-b.example:8443"),
            ),
            ("http://allowed\\@thief/", None),
            ("http://allowed@thief/", None),
            ("http://allowed%40thief/", None),
            ("http://Allowed.example/", None),
            ("HTTP://allowed.example/", None),
            ("http://[::1]:5000/", Some("http://[::1]:5000")),
            ("http://[::1]/", Some("http://[::1]")),
            ("http://[::1]x/", None),
            ("http://[::1%25lo]/", None),
            ("http://[]/", None),
            ("http://[::1/", None),
            ("http://host:80x/", None),
            ("http://127.0.0.1:0/", None),
            ("https://a:00/", None),
            ("http://a:080/", None),
            ("http://h:99999999999/", None),
            ("http://h:65536/", None),
            ("http://h:65535/", Some("http://h:65535")),
            ("http://h:/", Some("http://h:")),
            ("http://10.0.0.5./", None),
            ("http://mlflow.example.com./", None),
            ("http://2130706433/", None),
            ("http://127.1/", None),
            ("http://127.000.0.1/", None),
            ("http://127.0.0.256/", None),
            ("http://0x7f.0.0.1/", None),
            ("http://a.1/", None),
            ("http://10.0.0.5:8080/x", Some("http://10.0.0.5:8080")),
            ("http://0.0.0.0/", Some("http://0.0.0.0")),
            (
                "http://mlflow-1.example.com/",
                Some("http://mlflow-1.example.com"),
            ),
            ("http://:80/", None),
            ("http://allowed\tx/", None),
            (" http://allowed/", None),
            ("http:///", None),
            ("ftp://allowed/", None),
        ] {
            assert_eq!(plain_origin(url), origin, "{url}");
        }
    }

    #[test]
    fn only_plain_urls_are_handed_on() {
        for text in [
            "http://127.0.0.1:5000",
            "http://127.0.0.1:80/api",
            "https://mlflow.example.com:443/x?y#z",
            "http://[::1]:5000/",
            "http://localhost:",
        ] {
            assert!(parse_handed_on(text, "V").is_ok(), "{text}");
        }
        for text in [
            "http://allowed.example\\@127.0.0.2/",
            "http://2130706434/",
            "http://0x7f.0.0.2/",
            "http://127.000.0.1/",
            "http://[0:0::1]/",
            "http://Mlflow.example.com/",
            "http://a.example:0080/",
            "mlflow.example.com",
            "file:///tmp/mlruns",
            "FILE:/tmp/mlruns",
        ] {
            let error = parse_handed_on(text, "V").unwrap_err().to_string();
            assert!(error.starts_with("V: "), "{text}: {error}");
            assert!(!error.contains(text), "{text}: the text is not shown");
        }
    }

    #[test]
    fn the_text_as_rfc_3986_reads_it_must_name_the_parsed_host() {
        for text in [
            "https://mlflow.example.com/api?x=a b",
            "HTTPS://MLflow.Example.com:443/x",
            "http://user:pw@127.0.0.1:5000/x",
            "http://[::1]:8080/",
            "http://[::ffff:127.0.0.1]:5000/",
            "http://[0:0:0:0:0:0:0:1]/",
            "https://bücher.example/",
            "http://127.0.0.1:5000/a\\@127.0.0.2/",
        ] {
            assert!(text_agrees(text, &url(text)), "{text}");
        }
        for text in [
            "http://127.0.0.1:5000\\@127.0.0.2:6000/steal",
            "http://allowed.example\\@thief.example/",
            "http://allowed.example%40thief.example/",
            "http://127.0.0.1:5000:80/",
            "http://allo\twed.example/",
            "http://[::1]:80\\@[::2]/",
            "http://\u{2603}.stra\u{DF}e.example/",
        ] {
            if let Ok(parsed) = Url::parse(text) {
                assert!(!text_agrees(text, &parsed), "{text}");
            }
        }
    }

    #[test]
    fn other_parsers_readings_compare_exactly() {
        let u = url("http://[::1]:8080/");
        assert!(same_authority(&u, "::1", 8080));
        assert!(same_authority(&u, "[::1]", 8080));
        assert!(!same_authority(&u, "::1", 80));
        let u = url("https://MLflow.example.com/");
        assert!(same_authority(&u, "mlflow.EXAMPLE.com", 443));
        assert!(!same_authority(&u, "mlflow.example.com.", 443));
        let u = url("http://127%2E0%2E0%2E2/");
        assert!(!same_authority(&u, "127%2e0%2e0%2e2", 80));
    }

    #[test]
    fn both_parsers_agree_on_ordinary_urls() {
        for text in [
            "http://127.0.0.1:5000/api?x=1",
            "https://MLflow.Example.com/",
            "http://[::1]:8080/",
            "https://xn--bcher-kva.example/",
        ] {
            assert!(parsers_agree(&url(text)), "{text}");
        }
    }
}
