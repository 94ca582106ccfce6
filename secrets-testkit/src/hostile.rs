//! [`HostileKit`]: servers that try to make a client leak its credential.
//!
//! Four listeners on loopback, each recording every request it receives
//! (method, target, headers, how much of the body arrived):
//!
//! | name | address | role |
//! |---|---|---|
//! | `allowed` | `http://127.0.0.1:PORT` | an allowed host |
//! | `tls` | `https://localhost:PORT` | an allowed host over TLS (a CA made for the run) |
//! | `other` | `http://127.0.0.3:PORT` | a second allowed host |
//! | `thief` | `http://127.0.0.2:PORT` | a host outside the allowlist |
//!
//! Answers are scripted per path prefix: a sequence of [`Answer`]s, used in
//! turn, the last one repeating. Header values may name another listener as
//! `{allowed}`, `{tls}`, `{other}` or `{thief}` (its `host:port`), and may hold
//! any byte a test wants to throw at a client (tab, CR, LF, backslashes).
//! Unscripted paths answer `200 ok`.
//!
//! The same kit runs as the `hostile-server` binary, driven by JSON lines on
//! its standard input, so the Python tests face the very same servers.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};

/// The listeners, in the order of the table above.
pub const LISTENERS: [&str; 4] = ["allowed", "tls", "other", "thief"];

/// How long a connection waits for the rest of a request.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// One scripted answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// Header lines, written as given (placeholders replaced).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
    /// When the request carries this header with exactly this value, answer
    /// `200 ok` instead (a server that accepts only the rotated credential).
    pub pass_if: Option<(String, String)>,
}

impl Answer {
    /// An answer with `status` and no headers.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: String::new(),
            pass_if: None,
        }
    }

    /// A redirect (`status`) to `location`.
    pub fn redirect(status: u16, location: &str) -> Self {
        Self::status(status).header("Location", location)
    }

    /// Adds a header line.
    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Answers `200 ok` instead when header `name` is exactly `value`.
    #[must_use]
    pub fn pass_if(mut self, name: &str, value: &str) -> Self {
        self.pass_if = Some((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    fn from_json(value: &Value) -> Option<Self> {
        let mut answer = Self::status(u16::try_from(value.get("status")?.as_u64()?).ok()?);
        for pair in value
            .get("headers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let (name, value) = (pair.get(0)?.as_str()?, pair.get(1)?.as_str()?);
            answer = answer.header(name, value);
        }
        if let Some(body) = value.get("body").and_then(Value::as_str) {
            body.clone_into(&mut answer.body);
        }
        if let Some(pair) = value.get("pass_if").and_then(Value::as_array) {
            answer = answer.pass_if(pair.first()?.as_str()?, pair.get(1)?.as_str()?);
        }
        Some(answer)
    }
}

/// One request as a listener received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The method.
    pub method: String,
    /// The request target (path and query) as sent.
    pub target: String,
    /// Every header, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body bytes received.
    pub body_len: usize,
    /// Whether the body arrived whole (as long as declared, or a complete
    /// chunked body).
    pub body_complete: bool,
    /// The request as received — request line, headers, body (without
    /// chunk framing) — up to [`RAW_KEPT`] bytes.
    pub raw: Vec<u8>,
}

/// How much of a request [`Seen::raw`] keeps.
pub const RAW_KEPT: usize = 320 * 1024;

impl Seen {
    /// The value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::capture::header_value(&self.headers, name)
    }

    fn to_json(&self) -> Value {
        json!({
            "method": self.method,
            "target": self.target,
            "headers": self.headers,
            "body_len": self.body_len,
            "body_complete": self.body_complete,
            "raw": String::from_utf8_lossy(&self.raw),
        })
    }
}

#[derive(Debug, Default)]
struct Script {
    answers: Vec<Answer>,
    used: usize,
}

#[derive(Debug)]
struct Shared {
    /// `host:port` of each listener, for placeholders.
    hosts: Vec<String>,
    /// Per listener: path prefix → script (the longest matching prefix wins).
    scripts: Vec<Mutex<HashMap<String, Script>>>,
    seen: Vec<Mutex<Vec<Seen>>>,
    stop: AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The four listeners; they stop when this is dropped.
#[derive(Debug)]
pub struct HostileKit {
    addrs: Vec<SocketAddr>,
    shared: Arc<Shared>,
    ca_pem: String,
    ca_path: PathBuf,
}

impl HostileKit {
    /// Starts every listener on a free port.
    pub fn start() -> Self {
        let binds = ["127.0.0.1:0", "127.0.0.1:0", "127.0.0.3:0", "127.0.0.2:0"];
        let listeners: Vec<TcpListener> = binds
            .iter()
            .map(|b| TcpListener::bind(b).expect("bind a hostile listener"))
            .collect();
        let addrs: Vec<SocketAddr> = listeners
            .iter()
            .map(|l| l.local_addr().expect("local address"))
            .collect();
        let hosts = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| {
                if LISTENERS[i] == "tls" {
                    format!("localhost:{}", a.port())
                } else {
                    a.to_string()
                }
            })
            .collect();
        let (tls, ca_pem) = crate::tls::server_config(&["localhost", "127.0.0.1"]);
        let ca_path = std::env::temp_dir().join(format!(
            "hostile-ca-{}-{}.pem",
            std::process::id(),
            addrs[1].port()
        ));
        std::fs::write(&ca_path, &ca_pem).expect("write the test CA");
        let shared = Arc::new(Shared {
            hosts,
            scripts: LISTENERS.iter().map(|_| Mutex::default()).collect(),
            seen: LISTENERS.iter().map(|_| Mutex::default()).collect(),
            stop: AtomicBool::new(false),
        });
        for (index, listener) in listeners.into_iter().enumerate() {
            let shared = Arc::clone(&shared);
            let tls = (LISTENERS[index] == "tls").then(|| Arc::clone(&tls));
            std::thread::spawn(move || accept(&listener, index, tls, &shared));
        }
        Self {
            addrs,
            shared,
            ca_pem,
            ca_path,
        }
    }

    fn index(listener: &str) -> usize {
        LISTENERS
            .iter()
            .position(|l| *l == listener)
            .unwrap_or_else(|| panic!("no listener `{listener}` (one of {LISTENERS:?})"))
    }

    /// The base URL of `listener` (`http://127.0.0.2:PORT`, `https://localhost:PORT`).
    pub fn url(&self, listener: &str) -> String {
        let index = Self::index(listener);
        let scheme = if listener == "tls" { "https" } else { "http" };
        format!("{scheme}://{}", self.shared.hosts[index])
    }

    /// The port of `listener`.
    pub fn port(&self, listener: &str) -> u16 {
        self.addrs[Self::index(listener)].port()
    }

    /// URLs that try to make one parser see the `allowed` host and another
    /// the `thief`, or that simply point at the thief: as redirect targets,
    /// tracking URLs or `Location` headers.
    pub fn tricks(&self) -> Vec<String> {
        let allowed = self.url("allowed").trim_start_matches("http://").to_owned();
        let thief = self.url("thief").trim_start_matches("http://").to_owned();
        let port = self.port("thief");
        vec![
            format!("http://{allowed}\\@{thief}/steal"),
            format!("http://{allowed}\t@{thief}/steal"),
            format!("http://{allowed}%40{thief}/steal"),
            format!("http://{allowed}@{thief}/steal"),
            format!("http://user:pw@{thief}/steal"),
            format!("//{thief}/steal"),
            format!("http:{thief}/steal"),
            format!("https:\\\\{thief}/steal"),
            format!("http:\\\\{thief}/steal"),
            format!("http://127%2E0%2E0%2E2:{port}/steal"),
            format!("http://127\u{3002}0\u{3002}0\u{3002}2:{port}/steal"),
            format!("http://127\u{ff0e}0\u{ff0e}0\u{ff0e}2:{port}/steal"),
            format!("http://[::ffff:127.0.0.2]:{port}/steal"),
            format!("http://2130706434:{port}/steal"),
            format!("http://0x7f.0.0.2:{port}/steal"),
            format!("http://{thief}/steal?next=http://{allowed}/"),
            format!("HTTP://{thief}/steal"),
            format!(" http://{thief}/steal"),
            format!("http://{thief}#@{allowed}/"),
            format!("http://{thief}\\\\{allowed}/"),
            format!("http://{allowed}/x\r\nLocation: http://{thief}/steal"),
            format!("http://{thief}\r\n/steal"),
            format!("http://{allowed}\n@{thief}/steal"),
        ]
    }

    /// The PEM of the CA that signed the `tls` listener's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A file holding [`Self::ca_pem`].
    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// Answers requests to `listener` whose target starts with `prefix` with
    /// `answers` in turn (the last one repeats).
    pub fn script(&self, listener: &str, prefix: &str, answers: Vec<Answer>) {
        lock(&self.shared.scripts[Self::index(listener)])
            .insert(prefix.to_owned(), Script { answers, used: 0 });
    }

    /// Every request `listener` received so far.
    pub fn requests(&self, listener: &str) -> Vec<Seen> {
        lock(&self.shared.seen[Self::index(listener)]).clone()
    }

    /// Whether any request `listener` received holds `needle` in any of its
    /// [`crate::leak::forms`], anywhere: request line, headers or body.
    pub fn saw(&self, listener: &str, needle: &str) -> bool {
        self.requests(listener)
            .iter()
            .any(|r| crate::leak::holds(&r.raw, needle))
    }

    /// Forgets every script and every recorded request.
    pub fn reset(&self) {
        for scripts in &self.shared.scripts {
            lock(scripts).clear();
        }
        for seen in &self.shared.seen {
            lock(seen).clear();
        }
    }

    /// Runs one command of the `hostile-server` protocol (a JSON object) and
    /// returns its answer:
    /// - `{"script": {"listener", "path", "answers": [{"status", "headers":
    ///   [[name, value]], "body", "pass_if": [name, value]}]}}` → `{"ok": true}`
    /// - `{"requests": "<listener>"}` → `{"requests": [{"method", "target",
    ///   "headers", "body_len", "body_complete"}]}`
    /// - `{"reset": true}` → `{"ok": true}`
    pub fn command(&self, command: &Value) -> Value {
        if let Some(script) = command.get("script") {
            let parsed = (|| {
                let listener = script.get("listener")?.as_str()?;
                LISTENERS.contains(&listener).then_some(())?;
                let path = script.get("path")?.as_str()?;
                let answers = script
                    .get("answers")?
                    .as_array()?
                    .iter()
                    .map(Answer::from_json)
                    .collect::<Option<Vec<_>>>()?;
                Some((listener, path, answers))
            })();
            return match parsed {
                Some((listener, path, answers)) => {
                    self.script(listener, path, answers);
                    json!({"ok": true})
                }
                None => json!({"error": "bad script"}),
            };
        }
        if let Some(listener) = command.get("requests").and_then(Value::as_str) {
            if !LISTENERS.contains(&listener) {
                return json!({"error": "no such listener"});
            }
            let seen: Vec<Value> = self.requests(listener).iter().map(Seen::to_json).collect();
            return json!({ "requests": seen });
        }
        if command.get("reset").is_some() {
            self.reset();
            return json!({"ok": true});
        }
        json!({"error": "unknown command"})
    }

    /// The start-up line of the `hostile-server` protocol: every listener's
    /// URL and the CA file.
    pub fn describe(&self) -> Value {
        let mut out: serde_json::Map<String, Value> = LISTENERS
            .iter()
            .map(|l| ((*l).to_owned(), Value::String(self.url(l))))
            .collect();
        out.insert("ca".to_owned(), json!(self.ca_path.display().to_string()));
        Value::Object(out)
    }
}

impl Drop for HostileKit {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for addr in &self.addrs {
            let _ = TcpStream::connect(addr);
        }
        let _ = std::fs::remove_file(&self.ca_path);
    }
}

fn accept(
    listener: &TcpListener,
    index: usize,
    tls: Option<Arc<rustls::ServerConfig>>,
    shared: &Arc<Shared>,
) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let (shared, tls) = (Arc::clone(shared), tls.clone());
        std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
            match tls {
                None => serve(stream, index, &shared),
                Some(config) => {
                    let Ok(connection) = rustls::ServerConnection::new(config) else {
                        return;
                    };
                    serve(rustls::StreamOwned::new(connection, stream), index, &shared);
                }
            }
        });
    }
}

/// Serves requests on one connection until the client closes it.
fn serve<S: Read + Write>(stream: S, index: usize, shared: &Shared) {
    let mut reader = BufReader::new(stream);
    while let Some(seen) = read_request(&mut reader) {
        let answer = answer_for(&seen, index, shared);
        lock(&shared.seen[index]).push(seen);
        let mut head = format!("HTTP/1.1 {} Scripted\r\n", answer.status).into_bytes();
        for (name, value) in &answer.headers {
            head.extend_from_slice(
                format!("{name}: {}\r\n", fill(value, &shared.hosts)).as_bytes(),
            );
        }
        head.extend_from_slice(format!("Content-Length: {}\r\n\r\n", answer.body.len()).as_bytes());
        head.extend_from_slice(answer.body.as_bytes());
        let stream = reader.get_mut();
        if stream
            .write_all(&head)
            .and_then(|()| stream.flush())
            .is_err()
        {
            return;
        }
    }
}

fn answer_for(seen: &Seen, index: usize, shared: &Shared) -> Answer {
    let mut scripts = lock(&shared.scripts[index]);
    let Some(script) = scripts
        .iter_mut()
        .filter(|(prefix, _)| seen.target.starts_with(prefix.as_str()))
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(_, script)| script)
    else {
        return Answer {
            body: "ok".to_owned(),
            ..Answer::status(200)
        };
    };
    let Some(last) = script.answers.len().checked_sub(1) else {
        return Answer::status(200);
    };
    let answer = script.answers[script.used.min(last)].clone();
    script.used += 1;
    match &answer.pass_if {
        Some((name, value)) if seen.header(name) == Some(value.as_str()) => Answer {
            body: "ok".to_owned(),
            ..Answer::status(200)
        },
        _ => answer,
    }
}

/// Replaces `{listener}` placeholders with that listener's `host:port`.
fn fill(value: &str, hosts: &[String]) -> String {
    LISTENERS
        .iter()
        .zip(hosts)
        .fold(value.to_owned(), |text, (name, host)| {
            text.replace(&format!("{{{name}}}"), host)
        })
}

/// Reads one request; `None` when the connection closed or broke before a
/// request line. A body that stops short is recorded as incomplete.
fn read_request(reader: &mut impl BufRead) -> Option<Seen> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next().unwrap_or("/").to_owned();
    let mut raw = line.clone().into_bytes();
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 {
            return None;
        }
        raw.extend_from_slice(header.as_bytes());
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let mut seen = Seen {
        method,
        target,
        headers,
        body_len: 0,
        body_complete: true,
        raw,
    };
    if seen
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        read_chunked(reader, &mut seen);
    } else if let Some(length) = seen.header("content-length").and_then(|v| v.parse().ok()) {
        let got = std::io::copy(&mut reader.take(length), &mut Kept(&mut seen.raw)).unwrap_or(0);
        seen.body_len = usize::try_from(got).unwrap_or(usize::MAX);
        seen.body_complete = got == length;
    }
    Some(seen)
}

/// A sink keeping what it is written into a request's raw bytes, up to
/// [`RAW_KEPT`] bytes in all.
struct Kept<'a>(&'a mut Vec<u8>);

impl Write for Kept<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = RAW_KEPT.saturating_sub(self.0.len());
        self.0.extend_from_slice(&buf[..buf.len().min(room)]);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn read_chunked(reader: &mut impl BufRead, seen: &mut Seen) {
    seen.body_complete = false;
    loop {
        let mut size = String::new();
        if reader.read_line(&mut size).unwrap_or(0) == 0 {
            return;
        }
        let size = size.trim().split(';').next().unwrap_or_default();
        let Ok(size) = u64::from_str_radix(size, 16) else {
            return;
        };
        let got = std::io::copy(&mut reader.take(size), &mut Kept(&mut seen.raw)).unwrap_or(0);
        seen.body_len += usize::try_from(got).unwrap_or(usize::MAX);
        let mut crlf = String::new();
        if got != size || reader.read_line(&mut crlf).unwrap_or(0) == 0 {
            return;
        }
        if size == 0 {
            seen.body_complete = true;
            return;
        }
    }
}
