//! One check for every backend address a person writes in a variable
//! (`VAULT_ADDR`, `AWS_ENDPOINT_URL`, `AZURE_KEY_VAULT_URL`, …), done before
//! any SDK sees it: SDKs panic on, or misread, what they cannot parse.

use crate::error::{Result, SecretError};

/// What an error shows of an address: its scheme, host and port when it
/// parses with a host and no user name or password — never a path, query or
/// fragment, nor text that is no URL (a token pasted into the wrong variable).
fn shown(parsed: &std::result::Result<url::Url, url::ParseError>) -> String {
    match parsed {
        Ok(url)
            if url.username().is_empty()
                && url.password().is_none()
                && url.host_str().is_some_and(|h| !h.is_empty()) =>
        {
            let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!(
                "the address {}://{}{port}",
                url.scheme(),
                url.host_str().unwrap_or_default()
            )
        }
        _ => "the value".to_owned(),
    }
}

/// `address` as the URL parser writes it (scheme and host in lower case,
/// `//` spelled out, without a trailing `/`) when it is an absolute URL of
/// one of `schemes` with a host, no user name or password, no query or
/// fragment and a plain path; else a `config` error naming `variable` and showing `example`,
/// the shape expected. The address is shown, but never when it holds `@`
/// (it may carry a password).
///
/// ```
/// use mlflow_secrets_auth_core::checked_endpoint;
/// let ok = checked_endpoint(" https://vault.example.com:8200/ ", "VAULT_ADDR", &["http", "https"], "https://vault.example.com:8200");
/// assert_eq!(ok.unwrap(), "https://vault.example.com:8200");
/// let err = checked_endpoint("vault.example.com", "VAULT_ADDR", &["http", "https"], "https://vault.example.com:8200");
/// assert!(err.unwrap_err().to_string().contains("it has no scheme"));
/// ```
pub fn checked_endpoint(
    address: &str,
    variable: &str,
    schemes: &[&str],
    example: &str,
) -> Result<String> {
    let address = address.trim();
    let parsed = url::Url::parse(address);
    let problem = match &parsed {
        // `vault.example.com:8200` parses with the scheme `vault.example.com`.
        Ok(url) if !schemes.contains(&url.scheme()) && !address.contains("://") => {
            "it has no scheme".to_owned()
        }
        Ok(url) if !schemes.contains(&url.scheme()) => {
            format!("its scheme is not {}", schemes.join(" or "))
        }
        Ok(url) if url.host_str().is_none_or(str::is_empty) => "it has no host".to_owned(),
        Ok(url) if !url.username().is_empty() || url.password().is_some() => {
            return Err(SecretError::config(
                variable,
                "must not carry a user name or password; the provider's own variables give the credentials",
            ));
        }
        Ok(url) if url.query().is_some() || url.fragment().is_some() => {
            "it has a query or fragment".to_owned()
        }
        Ok(url)
            if !url
                .path()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~/%".contains(&b)) =>
        {
            "its path holds characters other than letters, digits, `-._~/` and %-escapes".to_owned()
        }
        // The URL as the parser wrote it, which is what every HTTP client
        // reads alike (`HTTPS://H` and `http:h` are spelled out in full).
        Ok(url) => return Ok(url.as_str().trim_end_matches('/').to_owned()),
        Err(url::ParseError::RelativeUrlWithoutBase) => "it has no scheme".to_owned(),
        Err(url::ParseError::EmptyHost) => "it has no host".to_owned(),
        Err(_) => "it is not a URL".to_owned(),
    };
    let shown = shown(&parsed);
    let fix = match schemeless_host(address) {
        Some(host) if problem == "it has no scheme" && schemes.contains(&"https") => {
            format!("write http://{host} or https://{host}")
        }
        _ => format!("expected the shape {example}"),
    };
    Err(SecretError::config(
        variable,
        format!("{shown} is not usable: {problem}; {fix}"),
    ))
}

/// `address` when it reads as a host with an optional port and nothing
/// else — an IPv4 address, `localhost`, or a lower-case name whose last
/// label is letters (`vault.example.com`) — so repeating it in a fix shows
/// what the person typed, never a token pasted into the wrong variable
/// (tokens mix cases, or end in digits: `abcdef.0123456789abcdef`).
fn schemeless_host(address: &str) -> Option<&str> {
    let (host, port) = match address.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (address, None),
    };
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0) && !p.starts_with('0'));
    let labels: Vec<&str> = host.split('.').collect();
    let name = host.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.len() >= 2 && tld.bytes().all(|b| b.is_ascii_lowercase()));
    let host_ok = name || host == "localhost" || host.parse::<std::net::Ipv4Addr>().is_ok();
    (port_ok && host_ok).then_some(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: &[&str] = &["http", "https"];

    #[test]
    fn each_mistake_is_named() {
        for (address, says) in [
            ("127.0.0.1:8200", "it has no scheme"),
            ("vault.example.com", "it has no scheme"),
            ("vault.example.com:8200", "it has no scheme"),
            ("http://", "it has no host"),
            ("https://[::1", "it is not a URL"),
            ("ftp://v:21", "its scheme is not http or https"),
            ("http://v:8200/?x=1", "it has a query or fragment"),
            ("http://v:8200/#x", "it has a query or fragment"),
        ] {
            let error = checked_endpoint(address, "VAULT_ADDR", WEB, "https://v:8200")
                .unwrap_err()
                .to_string();
            assert!(
                error.starts_with("VAULT_ADDR: ") && error.contains(says),
                "{address}: {error}"
            );
            assert!(
                error.contains("expected the shape https://v:8200")
                    || error.contains(&format!("write http://{address} or https://{address}")),
                "{error}"
            );
        }
    }

    #[test]
    fn a_host_without_a_scheme_gets_both_spelt_out_and_a_token_does_not() {
        for address in ["127.0.0.1:8200", "vault.example.com", "localhost:8200"] {
            let error = checked_endpoint(address, "VAULT_ADDR", WEB, "https://v:8200")
                .unwrap_err()
                .to_string();
            assert!(
                error.contains(&format!("write http://{address} or https://{address}")),
                "{error}"
            );
        }
        for pasted in [
            "hvs.CAESIabcdEFGH",
            "0123456789abcdef0123",
            "eyJh.eyJz.sig",
            "abcdef.0123456789abcdef",
            "admin:48213",
        ] {
            let error = checked_endpoint(pasted, "VAULT_ADDR", WEB, "https://v:8200")
                .unwrap_err()
                .to_string();
            assert!(!error.contains(pasted), "{error}");
            assert!(
                error.contains("expected the shape https://v:8200"),
                "{error}"
            );
        }
    }

    #[test]
    fn only_scheme_host_and_port_are_ever_shown() {
        for (address, shown) in [
            (
                "https://127.0.0.1:1/?token=SECRET",
                "the address https://127.0.0.1:1 ",
            ),
            (
                "https://v.example/#SECRET",
                "the address https://v.example ",
            ),
            (
                "https://v.example/a!SECRET",
                "the address https://v.example ",
            ),
            ("hvs.SECRET", "the value "),
            ("https://u:SECRET%40127.0.0.1:1", "the value "),
            ("https://u%3ASECRET%40127.0.0.1", "the value "),
            ("https://u:SECRET\u{ff20}127.0.0.1:1", "the value "),
        ] {
            let error = checked_endpoint(address, "V", WEB, "x")
                .unwrap_err()
                .to_string();
            assert!(!error.contains("SECRET"), "{address}: {error}");
            assert!(error.contains(shown), "{address}: {error}");
        }
    }

    #[test]
    fn a_password_in_the_address_is_refused_and_never_shown() {
        let error = checked_endpoint("https://u:hunter2@v:8200", "VAULT_ADDR", WEB, "x")
            .unwrap_err()
            .to_string();
        assert!(!error.contains("hunter2"), "{error}");
        let error = checked_endpoint("u:hunter2@v", "VAULT_ADDR", WEB, "x")
            .unwrap_err()
            .to_string();
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn https_only_refuses_http() {
        let error = checked_endpoint("http://v.example", "AZURE_KEY_VAULT_URL", &["https"], "x")
            .unwrap_err()
            .to_string();
        assert!(error.contains("its scheme is not https"), "{error}");
        assert_eq!(
            checked_endpoint("https://v.example/", "AZURE_KEY_VAULT_URL", &["https"], "x").unwrap(),
            "https://v.example"
        );
    }

    #[test]
    fn an_accepted_address_is_given_on_as_the_parser_writes_it() {
        for (given, used) in [
            ("HTTPS://Vault.Example:8200/", "https://vault.example:8200"),
            ("http:[::1]/", "http://[::1]"),
            ("http:/127.0.0.1:8200", "http://127.0.0.1:8200"),
            ("https://v.example/prefix/", "https://v.example/prefix"),
        ] {
            assert_eq!(
                checked_endpoint(given, "V", WEB, "x").unwrap(),
                used,
                "{given}"
            );
        }
        let error = checked_endpoint("https://v/a[b", "V", WEB, "x").unwrap_err();
        assert!(error.to_string().contains("its path"), "{error}");
    }
}
