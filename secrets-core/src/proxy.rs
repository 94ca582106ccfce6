//! Which requests may go through a proxy from the environment: over https
//! a proxy only tunnels (it cannot read what it carries); over plain http it
//! reads every header, the credential included — so never.

/// `builder` with no proxy for plain-http requests, and for https requests
/// the proxy the environment names (`HTTPS_PROXY`, `https_proxy`,
/// `ALL_PROXY`, `all_proxy`, with `NO_PROXY` respected), as reqwest would
/// have used for both.
pub fn https_only(builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
    let builder = builder.no_proxy();
    let named = ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()));
    match named.map(|url| reqwest::Proxy::https(url.trim())) {
        Some(Ok(proxy)) => builder.proxy(proxy.no_proxy(reqwest::NoProxy::from_env())),
        // Unset, or not a proxy URL: no proxy at all.
        _ => builder,
    }
}
