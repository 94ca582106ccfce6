//! Which requests may go through a proxy from the environment: over https
//! a proxy only tunnels (it cannot read what it carries); over plain http it
//! reads every header, the credential included — so never.

/// The proxy the environment names for https requests (`HTTPS_PROXY`,
/// `https_proxy`, `ALL_PROXY`, `all_proxy`, first set) and its `NO_PROXY`
/// list (`NO_PROXY`, `no_proxy`), trimmed; `None` when no proxy is named.
pub fn https_from_env() -> Option<(String, Option<String>)> {
    let first = |names: &[&str]| {
        names
            .iter()
            .find_map(|name| std::env::var(name).ok())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let proxy = first(&["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"])?;
    Some((proxy, first(&["NO_PROXY", "no_proxy"])))
}

/// `builder` with no proxy for plain-http requests, and for https requests
/// the proxy [`https_from_env`] names, as reqwest would have used for both.
#[cfg(feature = "reqwest")]
pub fn https_only(builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
    let builder = builder.no_proxy();
    match https_from_env() {
        Some((url, no_proxy)) => match reqwest::Proxy::https(&url) {
            Ok(proxy) => builder
                .proxy(proxy.no_proxy(no_proxy.as_deref().and_then(reqwest::NoProxy::from_string))),
            // Not a proxy URL: no proxy at all.
            Err(_) => builder,
        },
        None => builder,
    }
}
