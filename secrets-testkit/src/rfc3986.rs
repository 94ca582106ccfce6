//! An oracle in no parser the product uses: the host and port of a URL's
//! text by RFC 3986's authority grammar, the reading of curl and most
//! non-browser clients. Plain `std`, so the fuzz targets include this file
//! as a module of their own.

/// Host and port of `text` by RFC 3986: the authority runs from `//` to the
/// first `/`, `?` or `#`; the userinfo ends at its last `@`; an IP literal is
/// in brackets (kept in the host), else the port starts at the last `:`; no
/// port means the scheme's default (80 for `http`, 443 for `https`, `None`
/// for other schemes). The host is lower-cased. `None` without an authority
/// or with a port that is not a number.
pub fn authority(text: &str) -> Option<(String, u16)> {
    let (scheme, rest) = text.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(literal) = hostport.strip_prefix('[') {
        let (inside, after) = literal.split_once(']')?;
        (
            format!("[{inside}]"),
            after.strip_prefix(':').unwrap_or(after),
        )
    } else {
        match hostport.rsplit_once(':') {
            Some((host, port)) => (host.to_owned(), port),
            None => (hostport.to_owned(), ""),
        }
    };
    let port = match (port, scheme.to_ascii_lowercase().as_str()) {
        ("", "https") => 443,
        ("", "http") => 80,
        ("", _) => return None,
        (digits, _) => digits.parse().ok()?,
    };
    Some((host.to_ascii_lowercase(), port))
}
