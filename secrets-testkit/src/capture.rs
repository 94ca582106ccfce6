//! [`CaptureServer`]: an HTTP server on loopback that records every request's
//! headers and answers from a small route table — a place a credential must
//! never reach, or a hop that redirects elsewhere.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// One request as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// The method.
    pub method: String,
    /// The path and query.
    pub path: String,
    /// Every header, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The request as received: request line, headers and body.
    pub raw: Vec<u8>,
}

impl Captured {
    /// The value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }
}

/// The value of header `name` (any case) among lower-cased `headers`.
pub(crate) fn header_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    let name = name.to_ascii_lowercase();
    headers
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
}

#[derive(Debug, Clone)]
struct Route {
    prefix: String,
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

#[derive(Debug, Default)]
struct State {
    requests: Mutex<Vec<Captured>>,
    routes: Mutex<Vec<Route>>,
}

/// A recording HTTP server; stops on drop.
#[derive(Debug)]
pub struct CaptureServer {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl CaptureServer {
    /// Starts on 127.0.0.1 (answers 200 `ok` until routes say otherwise).
    pub fn start() -> Self {
        Self::start_on("127.0.0.1:0")
    }

    /// Starts on `bind` (e.g. `127.0.0.2:0` for a second loopback host).
    pub fn start_on(bind: &str) -> Self {
        let listener = TcpListener::bind(bind).expect("bind the capture server");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(State::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, stopping) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(stream) = stream {
                    let _ = serve(stream, &shared);
                }
            }
        });
        Self {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://HOST:PORT` of this server.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Answers paths starting with `prefix` with `status`, `headers` and `body`.
    pub fn route(&self, prefix: &str, status: u16, headers: &[(&str, &str)], body: &str) {
        self.state
            .routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                0,
                Route {
                    prefix: prefix.to_owned(),
                    status,
                    headers: headers
                        .iter()
                        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                        .collect(),
                    body: body.to_owned(),
                },
            );
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Captured> {
        self.state
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether any request received holds `needle` in any of its
    /// [`crate::leak::forms`], anywhere: request line, headers or body.
    pub fn saw(&self, needle: &str) -> bool {
        self.requests()
            .iter()
            .any(|r| crate::leak::holds(&r.raw, needle))
    }
}

impl Drop for CaptureServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the blocking accept so the thread sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(stream: TcpStream, state: &State) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut raw = line.clone().into_bytes();
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or("/").to_owned();
    let mut headers = Vec::new();
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        raw.extend_from_slice(header.as_bytes());
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let name = name.trim().to_ascii_lowercase();
            if name == "content-length" {
                length = value.trim().parse().unwrap_or(0);
            }
            headers.push((name, value.trim().to_owned()));
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    raw.extend_from_slice(&body);
    let route = state
        .routes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|r| path.starts_with(&r.prefix))
        .cloned()
        .unwrap_or(Route {
            prefix: String::new(),
            status: 200,
            headers: Vec::new(),
            body: "ok".to_owned(),
        });
    state
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Captured {
            method,
            path,
            headers,
            raw,
        });
    let mut response = format!(
        "HTTP/1.1 {} Captured\r\nContent-Length: {}\r\nConnection: close\r\n",
        route.status,
        route.body.len()
    );
    for (name, value) in &route.headers {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str("\r\n");
    response.push_str(&route.body);
    let mut stream = stream;
    stream.write_all(response.as_bytes())
}
