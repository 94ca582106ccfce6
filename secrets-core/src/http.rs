//! Reading a backend's answer with reqwest, bounded: what a server sends is
//! input, and its length is not ours to trust.

use std::time::{Duration, SystemTime};

use crate::error::{ErrorKind, Result, SecretError};

/// How long `response` asks to wait (`Retry-After`, seconds or a date),
/// bounded as [`crate::classify::retry_after`] bounds it.
pub fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| crate::classify::retry_after(v, SystemTime::now()))
}

/// The body of `response`, at most `limit` bytes. Longer is `rejected`, a
/// broken connection `transient`; `from` names the server in the message
/// (`the IdP`, `Vault`).
pub async fn bounded_body(
    mut response: reqwest::Response,
    limit: usize,
    from: &str,
) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| {
        SecretError::new(
            ErrorKind::Transient,
            format!("the answer of {from} could not be read: {e}"),
        )
        .with_source(e)
    })? {
        if body.len() + chunk.len() > limit {
            return Err(SecretError::new(
                ErrorKind::Rejected,
                format!("the answer of {from} is longer than {limit} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
