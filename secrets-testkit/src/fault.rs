//! [`FaultProxy`]: an HTTP/1.1 proxy on loopback in front of a real server
//! that answers chosen requests itself (a 403, a 503, a 429 with Retry-After),
//! resets their connection or never answers them, and forwards everything else, so tests can make a real server fail in ways
//! it cannot be told to.
//!
//! Each connection carries one request (`Connection: close`), which every
//! HTTP client handles.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A canned answer for requests whose path starts with a prefix.
#[derive(Debug, Clone)]
pub struct Fault {
    /// Requests whose path starts with this are answered by the proxy.
    pub path_prefix: String,
    /// The status to answer with.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The body (sent as `application/json`).
    pub body: String,
    /// Accept the request and never answer (until the client gives up).
    pub hang: bool,
    /// Read the request, then reset the connection (TCP RST, no answer).
    pub reset: bool,
    /// How many requests it answers before it stops matching (`None`: all).
    pub times: Option<usize>,
}

impl Fault {
    /// Answers requests under `path_prefix` with `status` and `body`.
    pub fn new(path_prefix: &str, status: u16, body: &str) -> Self {
        Self {
            path_prefix: path_prefix.to_owned(),
            status,
            headers: Vec::new(),
            body: body.to_owned(),
            hang: false,
            reset: false,
            times: None,
        }
    }

    /// Accepts requests under `path_prefix` and never answers them.
    pub fn hang(path_prefix: &str) -> Self {
        Self {
            hang: true,
            ..Self::new(path_prefix, 0, "")
        }
    }

    /// Reads requests under `path_prefix` and resets their connection.
    pub fn reset(path_prefix: &str) -> Self {
        Self {
            reset: true,
            ..Self::new(path_prefix, 0, "")
        }
    }

    /// Answers only the first `n` matching requests, then forwards them.
    #[must_use]
    pub fn times(mut self, n: usize) -> Self {
        self.times = Some(n);
        self
    }

    /// Adds a header to the answer.
    #[must_use]
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

#[derive(Debug, Default)]
struct Shared {
    faults: Mutex<Vec<Fault>>,
    answered: AtomicUsize,
    forwarded: AtomicUsize,
    /// The status of every response relayed from the server, in order.
    relayed: Mutex<Vec<u16>>,
    /// The path of every request forwarded, in order.
    paths: Mutex<Vec<String>>,
}

/// A forwarding proxy with injectable faults; stops on drop.
#[derive(Debug)]
pub struct FaultProxy {
    serving: crate::net::Serving,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// Starts a proxy in front of `upstream`.
    pub fn start(upstream: SocketAddr) -> Self {
        let shared = Arc::new(Shared::default());
        let state = shared.clone();
        let serving = crate::net::Serving::start(move |client| {
            let _ = serve(client, upstream, &state);
        });
        Self { serving, shared }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.serving.addr())
    }

    /// Adds a fault (checked before earlier ones).
    pub fn inject(&self, fault: Fault) {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(0, fault);
    }

    /// Removes every fault.
    pub fn clear(&self) {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Requests answered by a fault so far.
    pub fn answered(&self) -> usize {
        self.shared.answered.load(Ordering::SeqCst)
    }

    /// Requests forwarded to the server so far.
    pub fn forwarded(&self) -> usize {
        self.shared.forwarded.load(Ordering::SeqCst)
    }

    /// Requests forwarded to the server so far whose path starts with `prefix`.
    pub fn forwarded_to(&self, prefix: &str) -> usize {
        self.shared
            .paths
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|p| p.starts_with(prefix))
            .count()
    }

    /// Responses with `status` relayed from the server so far.
    pub fn relayed(&self, status: u16) -> usize {
        self.shared
            .relayed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|s| **s == status)
            .count()
    }
}

fn serve(client: TcpStream, upstream: SocketAddr, shared: &Shared) -> io::Result<()> {
    client.set_nonblocking(false)?;
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_owned();
    let mut headers = Vec::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end().to_owned();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim().to_ascii_lowercase();
            if name == "content-length" {
                length = value.trim().parse().unwrap_or(0);
            }
            if name == "connection" || name == "keep-alive" {
                continue;
            }
        }
        headers.push(line);
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let mut client = client;

    let fault = shared
        .faults
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter_mut()
        .find(|f| path.starts_with(&f.path_prefix) && f.times != Some(0))
        .map(|f| {
            f.times = f.times.map(|n| n - 1);
            f.clone()
        });
    if let Some(fault) = fault {
        shared.answered.fetch_add(1, Ordering::SeqCst);
        if fault.reset {
            // Linger zero: closing sends RST instead of FIN.
            return socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
        }
        if fault.hang {
            // Until the client closes the connection (or the read timeout).
            let _ = client.read(&mut [0u8; 1]);
            return Ok(());
        }
        let mut response = format!(
            "HTTP/1.1 {} Fault\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
            fault.status,
            fault.body.len()
        );
        for (name, value) in &fault.headers {
            response.push_str(&format!("{name}: {value}\r\n"));
        }
        response.push_str("\r\n");
        response.push_str(&fault.body);
        return client.write_all(response.as_bytes());
    }

    shared.forwarded.fetch_add(1, Ordering::SeqCst);
    shared
        .paths
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(path.clone());
    let mut server = TcpStream::connect(upstream)?;
    let mut head = request_line;
    for header in headers {
        head.push_str(&header);
        head.push_str("\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    server.write_all(head.as_bytes())?;
    server.write_all(&body)?;
    // The upstream closes after one response: relay it, then close.
    let mut response = Vec::new();
    server.read_to_end(&mut response)?;
    let status = String::from_utf8_lossy(&response[..response.len().min(16)])
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    shared
        .relayed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(status);
    let response = force_close(&response);
    client.write_all(&response)
}

/// Rewrites the response head so the client closes the connection after it.
fn force_close(response: &[u8]) -> Vec<u8> {
    let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return response.to_vec();
    };
    let head = String::from_utf8_lossy(&response[..end]);
    let mut out: Vec<u8> = head
        .split("\r\n")
        .filter(|line| {
            let lower = line.to_ascii_lowercase();
            !lower.starts_with("connection:") && !lower.starts_with("keep-alive:")
        })
        .collect::<Vec<_>>()
        .join("\r\n")
        .into_bytes();
    out.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    out.extend_from_slice(&response[end + 4..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::http;

    /// A one-shot upstream that answers 200 "upstream".
    fn upstream() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut stream = stream;
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nupstream",
                );
            }
        });
        addr
    }

    #[test]
    fn forwards_unless_a_fault_matches() {
        let proxy = FaultProxy::start(upstream());
        let addr: SocketAddr = proxy.url().trim_start_matches("http://").parse().unwrap();
        assert_eq!(
            http(addr, "GET", "/v1/x", &[], b"").unwrap().body,
            "upstream"
        );
        proxy.inject(Fault::new(
            "/v1/sys/",
            403,
            r#"{"errors":["permission denied"]}"#,
        ));
        let denied = http(addr, "GET", "/v1/sys/internal/ui/mounts/x", &[], b"").unwrap();
        assert_eq!(
            (denied.status, denied.body.as_str()),
            (403, r#"{"errors":["permission denied"]}"#)
        );
        assert_eq!(http(addr, "GET", "/v1/x", &[], b"").unwrap().status, 200);
        assert_eq!((proxy.answered(), proxy.forwarded()), (1, 2));
    }

    #[test]
    fn a_reset_fault_answers_nothing() {
        let proxy = FaultProxy::start(upstream());
        proxy.inject(Fault::reset("/"));
        let addr: SocketAddr = proxy.url().trim_start_matches("http://").parse().unwrap();
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .write_all(b"GET /x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        let mut answer = Vec::new();
        let read = stream.read_to_end(&mut answer);
        assert!(answer.is_empty(), "no answer: {answer:?}");
        assert_eq!(
            read.map_err(|e| e.kind()).err(),
            Some(io::ErrorKind::ConnectionReset)
        );
        assert_eq!((proxy.answered(), proxy.forwarded()), (1, 0));
    }
}
