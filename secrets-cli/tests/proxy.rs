//! The authenticating proxy as a real process, in front of recording servers
//! (the oracle of what reached upstream) and a real MLflow server with basic
//! auth, used by MLflow's own Python client without the plugin.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use secrets_testkit::HANG_GUARD;
use secrets_testkit::binaries::venv_dir;
use secrets_testkit::capture::CaptureServer;
use secrets_testkit::fault::FaultProxy;
use secrets_testkit::hostile::{Answer, HostileKit};
use secrets_testkit::mlflow::MlflowServer;
use secrets_testkit::moto::{self, MotoServer};
use secrets_testkit::net::{answer, exchange, free_addr};

const BIN: &str = env!("CARGO_BIN_EXE_mlflow-secrets-auth");
const TOKEN: &str = "tok-real-credential-5b7e1c9d";

/// A running proxy; killed on drop.
struct Proxy {
    child: Child,
    addr: SocketAddr,
    token: String,
    log: PathBuf,
}

impl Proxy {
    fn start(dir: &Path, upstream: &str, vars: &[(&str, &str)], args: &[&str]) -> Self {
        Self::start_on(free_addr(), dir, upstream, vars, args)
    }

    /// Listening on `listen`, reached at 127.0.0.1 and its port.
    fn start_on(
        listen: SocketAddr,
        dir: &Path,
        upstream: &str,
        vars: &[(&str, &str)],
        args: &[&str],
    ) -> Self {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let log = dir.join(format!("proxy-{n}.log"));
        let token_file = dir.join(format!("proxy-{n}.token"));
        let addr = SocketAddr::from(([127, 0, 0, 1], listen.port()));
        let child = Command::new(BIN)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(vars.iter().copied())
            .args([
                "proxy",
                "--log-level",
                "debug",
                "--upstream",
                upstream,
                "--listen",
            ])
            .arg(listen.to_string())
            .arg("--local-token-file")
            .arg(&token_file)
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the proxy");
        let mut proxy = Self {
            child,
            addr,
            token: String::new(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while call(addr, "GET", "/-/healthz", &[], b"").0 != 200 {
            if let Some(status) = proxy.child.try_wait().unwrap() {
                panic!("the proxy exited ({status}): {}", proxy.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "the proxy did not start: {}",
                proxy.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        proxy.token = std::fs::read_to_string(&token_file)
            .unwrap()
            .trim()
            .to_owned();
        proxy
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn get(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
        let mut all = vec![("Host", self.addr.to_string())];
        all.extend(headers.iter().map(|(n, v)| (*n, (*v).to_owned())));
        let borrowed: Vec<(&str, &str)> = all.iter().map(|(n, v)| (*n, v.as_str())).collect();
        call(self.addr, "GET", path, &borrowed, b"")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node agent on a socket in `dir`; killed on drop.
struct Agent {
    child: Child,
    /// `unix:/path`, for `MLFLOW_SECRETS_AGENT`.
    address: String,
    log: PathBuf,
}

impl Agent {
    fn start(dir: &Path, vars: &[(&str, &str)]) -> Self {
        let socket = dir.join("run/agent.sock");
        let log = dir.join("agent.log");
        let child = Command::new(BIN)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(vars.iter().copied())
            .args(["agent", "--socket"])
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the agent");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "the agent did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            address: format!("unix:{}", socket.display()),
            log,
        }
    }

    /// Stops it; its log.
    fn stop(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One request on its own connection: status, head and body.
fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    let Ok(stream) = TcpStream::connect(addr) else {
        return (0, String::new(), String::new());
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let raw = exchange(stream, &[head.as_bytes(), body].concat());
    (raw.status, raw.head, raw.body)
}

fn token_file(dir: &Path) -> String {
    let path = dir.join("secret");
    std::fs::write(&path, TOKEN).unwrap();
    path.display().to_string()
}

fn file_vars(path: &str) -> Vec<(&'static str, &str)> {
    vec![
        ("MLFLOW_SECRETS_AUTH_ENABLE", "file"),
        ("MLFLOW_SECRETS_FILE_PATH", path),
        ("MLFLOW_SECRETS_ALLOWED_HOSTS", "127.0.0.1"),
        // A plain-http upstream is never reached through a proxy (it would
        // read the credential): one named here leads nowhere, so every test
        // on these variables fails if the proxy used it.
        ("HTTP_PROXY", NOWHERE),
    ]
}

/// A proxy address where nothing listens (the discard port, closed here).
const NOWHERE: &str = "http://127.0.0.1:9";

/// A proxy on the file backend in front of a recording server, and the
/// directory holding its files.
fn capture_proxy(args: &[&str]) -> (tempfile::TempDir, CaptureServer, Proxy) {
    let dir = tempfile::tempdir().unwrap();
    let secret = token_file(dir.path());
    let upstream = CaptureServer::start();
    let proxy = Proxy::start(dir.path(), &upstream.url(), &file_vars(&secret), args);
    (dir, upstream, proxy)
}

#[test]
fn the_local_token_is_swapped_for_the_credential_and_nothing_passes_without_it() {
    let (_dir, upstream, proxy) = capture_proxy(&[]);
    let path = "/api/2.0/mlflow/experiments/search?max_results=1&sig=PRESIGNED-SIGNATURE";
    for headers in [
        vec![],
        vec![("Authorization", "Bearer 00000000000000000000")],
    ] {
        let (status, _, body) = proxy.get(path, &headers);
        assert_eq!(status, 401, "{body}");
        assert!(!body.contains(TOKEN));
    }
    assert!(
        upstream.requests().is_empty(),
        "nothing forwarded without the token"
    );

    let bearer = proxy.bearer();
    let (status, _, _) = proxy.get(path, &[("Authorization", &bearer)]);
    assert_eq!(status, 200);
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(seen[0].path, path);
    assert!(
        !upstream.saw(&proxy.token),
        "the upstream never sees the local token"
    );
    assert_eq!(
        seen[0].header("host"),
        Some(upstream.url().trim_start_matches("http://"))
    );
    let log = proxy.log_text();
    assert!(
        !log.contains("PRESIGNED-SIGNATURE"),
        "no query string in the logs"
    );
    assert!(!log.contains(TOKEN) && !log.contains(&proxy.token));
}

#[test]
fn allow_remote_serves_other_host_names_with_the_local_token_only() {
    let dir = tempfile::tempdir().unwrap();
    let secret = token_file(dir.path());
    let upstream = CaptureServer::start();
    // Every address of the machine; reached here through loopback, under a
    // name a remote client would use.
    let listen = SocketAddr::from(([0, 0, 0, 0], free_addr().port()));
    let proxy = Proxy::start_on(
        listen,
        dir.path(),
        &upstream.url(),
        &file_vars(&secret),
        &["--allow-remote"],
    );
    let host = format!("mlflow-proxy.example.internal:{}", listen.port());
    let path = "/api/2.0/mlflow/experiments/search?max_results=1";
    let bearer = proxy.bearer();
    for token in ["", "Bearer 00000000000000000000"] {
        let mut headers = vec![("Host", host.as_str())];
        if !token.is_empty() {
            headers.push(("Authorization", token));
        }
        let (status, _, body) = call(proxy.addr, "GET", path, &headers, b"");
        assert_eq!(status, 401, "{body}");
        assert!(!body.contains(TOKEN));
    }
    assert!(
        upstream.requests().is_empty(),
        "nothing forwarded without the token"
    );
    let headers = [("Host", host.as_str()), ("Authorization", bearer.as_str())];
    let (status, _, body) = call(proxy.addr, "GET", path, &headers, b"");
    assert_eq!(status, 200, "{body}");
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert!(!upstream.saw(&proxy.token));
    // Started with a warning that it serves beyond this machine.
    let log = proxy.log_text();
    assert!(
        log.contains("WARN") && log.contains("other machines may connect"),
        "{log}"
    );
    assert!(!log.contains(TOKEN) && !log.contains(&proxy.token));
}

#[test]
fn a_configured_custom_header_sent_by_the_client_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let secret = token_file(dir.path());
    let upstream = CaptureServer::start();
    let mut vars = file_vars(&secret);
    vars.push(("MLFLOW_AUTH_HEADER_NAME", "X-MLflow-Auth"));
    let proxy = Proxy::start(dir.path(), &upstream.url(), &vars, &[]);
    let bearer = proxy.bearer();
    let (status, _, _) = proxy.get(
        "/api/2.0/mlflow/runs/get",
        &[
            ("Authorization", &bearer),
            ("X-MLflow-Auth", "forged-by-client"),
            // What a CGI-style server reads as the same header.
            ("X_MLflow_Auth", "forged-with-underscores"),
            ("X.MLflow+Auth", "forged-with-punctuation"),
            ("Proxy_Authorization", "forged-proxy-credential"),
            // The framing is the proxy's own, in any spelling.
            ("Content_Length", "770077"),
        ],
    );
    assert_eq!(status, 200);
    let seen = upstream.requests();
    assert_eq!(seen[0].header("x-mlflow-auth"), Some(TOKEN));
    assert_eq!(seen[0].header("authorization"), None);
    for forged in [
        "forged-by-client",
        "forged-with-underscores",
        "forged-with-punctuation",
        "forged-proxy-credential",
        "770077",
        &proxy.token,
    ] {
        assert!(!upstream.saw(forged), "{forged}");
    }
}

#[test]
fn an_answer_framed_by_transfer_encoding_loses_its_content_length() {
    // Both framings at once: the chunked body is the answer (RFC 9112 6.3).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let _ = stream.write_all(
                // `Connection` naming it must not hide it from the check.
                b"HTTP/1.1 200 OK\r\nConnection: transfer-encoding\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            );
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let secret = token_file(dir.path());
    let proxy = Proxy::start(dir.path(), &url, &file_vars(&secret), &[]);
    let bearer = proxy.bearer();
    let (status, head, body) = proxy.get("/x", &[("Authorization", &bearer)]);
    assert_eq!(status, 200, "{head}");
    // Passed on chunked, whole, with no length to cut it short.
    let head = head.to_ascii_lowercase();
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    assert_eq!(body, "5\r\nhello\r\n0\r\n\r\n", "{head}");
}

#[test]
fn headers_named_in_connection_stay_on_their_hop() {
    let (_dir, upstream, proxy) = capture_proxy(&[]);
    upstream.route(
        "/api/",
        200,
        &[
            ("Connection", "X-Upstream-Hop"),
            ("X-Upstream-Hop", "upstream-only"),
            ("X-Upstream-Kept", "for-the-client"),
        ],
        "ok",
    );
    let bearer = proxy.bearer();
    let (status, head, _) = proxy.get(
        "/api/2.0/mlflow/runs/get",
        &[
            ("Authorization", &bearer),
            ("Connection", "keep-alive, X-Client-Hop"),
            ("X-Client-Hop", "client-only"),
            ("X-Client-Kept", "for-the-upstream"),
        ],
    );
    assert_eq!(status, 200);
    let seen = upstream.requests();
    assert_eq!(seen[0].header("x-client-kept"), Some("for-the-upstream"));
    assert_eq!(seen[0].header("x-client-hop"), None);
    let head = head.to_ascii_lowercase();
    assert!(head.contains("x-upstream-kept: for-the-client"), "{head}");
    assert!(!head.contains("upstream-only"), "{head}");
}

#[test]
fn redirects_reach_the_client_and_the_proxy_never_follows_them() {
    let (_dir, upstream, proxy) = capture_proxy(&[]);
    let thief = CaptureServer::start_on("127.0.0.2:0");
    let elsewhere = format!("{}/steal", thief.url());
    upstream.route("/away", 302, &[("Location", &elsewhere)], "");
    let own = format!("{}/api/2.0/next?x=1", upstream.url());
    upstream.route("/home", 307, &[("Location", &own)], "");
    let bearer = proxy.bearer();

    let (status, head, _) = proxy.get("/away", &[("Authorization", &bearer)]);
    assert_eq!(status, 302);
    assert!(head.contains(&format!("location: {elsewhere}")), "{head}");
    let (status, head, _) = proxy.get("/home", &[("Authorization", &bearer)]);
    assert_eq!(status, 307);
    assert!(
        head.contains(&format!("location: {}/api/2.0/next?x=1", proxy.url())),
        "{head}"
    );
    // The client got the redirects themselves: the proxy followed neither.
    assert!(thief.requests().is_empty(), "the thief received nothing");
    assert_eq!(upstream.requests().len(), 2, "no redirect followed");
}

#[test]
fn reserved_paths_stay_local_and_readiness_survives_an_upstream_outage() {
    let (_dir, upstream, proxy) = capture_proxy(&[]);
    let port = upstream.port();
    let bearer = proxy.bearer();
    assert_eq!(proxy.get("/-/readyz", &[]).0, 200);
    assert_eq!(proxy.get("/-/metrics", &[]).0, 200);
    assert_eq!(
        proxy.get("/-/nothing", &[("Authorization", &bearer)]).0,
        404
    );
    assert_eq!(
        call(proxy.addr, "POST", "/-/quitquitquit", &[], b"").0,
        401,
        "quitting needs the token"
    );
    assert!(
        upstream.requests().is_empty(),
        "/-/ paths are never forwarded"
    );

    drop(upstream);
    let (status, _, body) = proxy.get(
        "/api/2.0/mlflow/experiments/search",
        &[("Authorization", &bearer)],
    );
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains("unreachable") && !body.contains(TOKEN),
        "{body}"
    );
    assert_eq!(
        proxy.get("/-/readyz", &[]).0,
        200,
        "a cached credential keeps it ready"
    );

    let upstream = CaptureServer::start_on(&format!("127.0.0.1:{port}"));
    let (status, _, _) = proxy.get(
        "/api/2.0/mlflow/experiments/search",
        &[("Authorization", &bearer)],
    );
    assert_eq!(status, 200, "back without restarting the proxy");
    assert_eq!(upstream.requests().len(), 1);

    // A Job's main container stops its proxy sidecar.
    let mut proxy = proxy;
    let (status, _, _) = call(
        proxy.addr,
        "POST",
        "/-/quitquitquit",
        &[("Authorization", &bearer)],
        b"",
    );
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(15);
    let code = loop {
        if let Some(status) = proxy.child.try_wait().unwrap() {
            break status.code();
        }
        assert!(Instant::now() < deadline, "the proxy did not quit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(0));
}

#[test]
fn a_disallowed_upstream_or_a_non_loopback_listener_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let secret = token_file(dir.path());
    let run = |upstream: &str, extra: &[&str]| -> Output {
        Command::new(BIN)
            .env_clear()
            .envs(file_vars(&secret))
            .args(["proxy", "--upstream", upstream, "--local-token-file"])
            .arg(dir.path().join("token"))
            .args(extra)
            .output()
            .unwrap()
    };
    let output = run("https://mlflow.example.com", &["--listen", "127.0.0.1:0"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr.contains("MLFLOW_SECRETS_ALLOWED_HOSTS"), "{stderr}");
    // Refused before anything was written or announced.
    assert!(!dir.path().join("token").exists());
    assert!(!stderr.contains("clients send the token"), "{stderr}");
    let output = run("http://127.0.0.1:9", &["--listen", "0.0.0.0:0"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("only loopback") && stderr.contains("--allow-remote"),
        "{stderr}"
    );
    assert!(!dir.path().join("token").exists());
    let output = run(
        "http://127.0.0.1:9",
        &["--listen", "0.0.0.0:0", "--allow-remote", "--no-local-auth"],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--allow-remote needs the local token")
    );
}

#[test]
fn over_the_connection_cap_is_503_and_a_slow_client_is_cut_off() {
    let (_dir, upstream, proxy) =
        capture_proxy(&["--max-connections", "1", "--read-timeout", "60"]);
    // A kept-alive client takes the one slot: its own scrape counts one
    // open connection (the start-up probe's is gone).
    let metrics = format!("GET /-/metrics HTTP/1.1\r\nHost: {}\r\n\r\n", proxy.addr);
    let deadline = Instant::now() + HANG_GUARD;
    let _holder = loop {
        let mut holder = TcpStream::connect(proxy.addr).unwrap();
        let scrape = answer(&mut holder, metrics.as_bytes());
        if scrape.status == 200
            && scrape
                .body
                .contains("mlflow_secrets_proxy_open_connections 1\n")
        {
            break holder;
        }
        assert!(Instant::now() < deadline, "the slot never came free");
        std::thread::sleep(Duration::from_millis(20));
    };
    for _ in 0..5 {
        assert_eq!(proxy.get("/-/healthz", &[]).0, 503);
    }
    // A flood of refusals is one warning (per 10 s), not one each.
    assert_eq!(proxy.log_text().matches("too many connections").count(), 1);

    // Headers a byte at a time: cut off after the read timeout.
    let (_dir, upstream_2, proxy) = capture_proxy(&["--read-timeout", "1"]);
    let mut slow = TcpStream::connect(proxy.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut closed = false;
    for byte in b"GET /api/2.0/mlflow/experiments/search HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n" {
        if slow.write_all(&[*byte]).is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 64];
        match slow.read(&mut buf) {
            // Closed (0) or answered (a 408): either way, cut off.
            Ok(0 | 1..) => {
                closed = true;
                break;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    // Cut off before its headers were complete: nothing reached upstream.
    assert!(closed, "the slow client was not cut off");
    assert!(upstream.requests().is_empty() && upstream_2.requests().is_empty());
}

#[test]
fn a_client_pausing_within_its_body_is_cut_off() {
    let (_dir, upstream, proxy) = capture_proxy(&["--read-timeout", "1"]);
    // A body small enough to be kept for a resend, and one that streams.
    for length in [1000, 4 * 1024 * 1024] {
        let mut client = TcpStream::connect(proxy.addr).unwrap();
        // Only a guard against hanging: the proxy must end the connection.
        client.set_read_timeout(Some(HANG_GUARD)).unwrap();
        let head = format!(
            "POST /api/2.0/mlflow/runs/log-batch HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nContent-Length: {length}\r\n\r\n",
            proxy.addr,
            proxy.bearer()
        );
        client.write_all(head.as_bytes()).unwrap();
        client.write_all(&[b'x'; 100]).unwrap();
        // ...and nothing more: the proxy gives up after the read timeout.
        let mut answer = Vec::new();
        let read = client.read_to_end(&mut answer);
        assert!(
            !read.as_ref().is_err_and(|e| matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            )),
            "a {length}-byte body paused and the proxy kept waiting: {read:?}"
        );
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty()
                || answer.starts_with("HTTP/1.1 4")
                || answer.starts_with("HTTP/1.1 5"),
            "{answer}"
        );
    }
    assert!(
        upstream.requests().is_empty(),
        "no request completed upstream"
    );
}

#[test]
fn a_client_that_stops_reading_the_response_loses_its_connection() {
    let (_dir, upstream, proxy) = capture_proxy(&["--max-connections", "1", "--send-timeout", "1"]);
    // Far more than the socket buffers between the proxy and the client hold.
    upstream.route("/get-artifact", 200, &[], &"x".repeat(64 << 20));
    let mut client = TcpStream::connect(proxy.addr).unwrap();
    let head = format!(
        "GET /get-artifact HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\n\r\n",
        proxy.addr,
        proxy.bearer()
    );
    client.write_all(head.as_bytes()).unwrap();
    // The client reads nothing. While it holds the only connection slot,
    // others get 503; once the send timeout has passed, they are served.
    let started = Instant::now();
    let mut refused = 0;
    loop {
        match proxy.get("/-/healthz", &[]).0 {
            200 => break,
            503 => refused += 1,
            other => panic!("/-/healthz answered {other}"),
        }
        assert!(
            started.elapsed() < HANG_GUARD,
            "a client reading nothing kept its connection: {}",
            proxy.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(refused > 0, "the stalled client never held the slot");
    assert_eq!(upstream.requests().len(), 1);
}

/// A user of `mlflow` with `password`, and the secret file holding
/// `user:password` (its path, and the path as text for the variables).
fn mlflow_user(mlflow: &MlflowServer, dir: &Path, user: &str, password: &str) -> (PathBuf, String) {
    mlflow.create_user(user, password);
    let secret = dir.join("secret");
    std::fs::write(&secret, format!("{user}:{password}")).unwrap();
    let text = secret.display().to_string();
    (secret, text)
}

/// The file provider's variables for `path`, in basic mode.
fn basic_vars(path: &str) -> Vec<(&'static str, &str)> {
    let mut vars = file_vars(path);
    vars.push(("MLFLOW_FILE_AUTH_MODE", "basic"));
    vars
}

/// The venv's Python with MLflow, or `None` (skipped unless servers are required).
fn python() -> Option<PathBuf> {
    let python = venv_dir().join("bin/python");
    python.is_file().then_some(python)
}

fn run_python(script: &str, env: &[(&str, &str)]) -> Output {
    Command::new(python().unwrap())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .envs(env.iter().copied())
        .args(["-c", script])
        .output()
        .unwrap()
}

fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmHWM:")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap();
    kb / 1024.0
}

const LOG_AND_ROUND_TRIP: &str = r#"
import hashlib, os, sys, tempfile
import mlflow
mlflow.set_experiment("through-the-proxy")
size = 200 * 1024 * 1024
with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "big.bin")
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        block = os.urandom(1024 * 1024)
        for i in range(size // len(block)):
            chunk = bytes([i % 256]) + block[1:]
            f.write(chunk)
            digest.update(chunk)
    with mlflow.start_run() as run:
        mlflow.log_param("lr", 0.1)
        mlflow.log_metric("loss", 0.5)
        mlflow.log_artifact(path)
    back = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="big.bin", dst_path=os.path.join(d, "back"))
    again = hashlib.sha256()
    with open(back, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            again.update(chunk)
    assert again.hexdigest() == digest.hexdigest(), "the artifact came back different"
    params = mlflow.get_run(run.info.run_id).data.params
    assert params == {"lr": "0.1"}, params
print("round trip ok")
"#;

#[test]
fn mlflows_client_without_the_plugin_logs_and_round_trips_a_200_mb_artifact() {
    let Some(mlflow) = MlflowServer::shared_serving_artifacts("proxy: mlflow client") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let password = "pw-proxy-user-3e8a10";
    let (_, secret) = mlflow_user(mlflow, dir.path(), "proxy-user", password);
    let vars = basic_vars(&secret);
    let proxy = Proxy::start(dir.path(), &mlflow.url(), &vars, &[]);
    let output = run_python(
        LOG_AND_ROUND_TRIP,
        &[
            ("MLFLOW_TRACKING_URI", &proxy.url()),
            ("MLFLOW_TRACKING_TOKEN", &proxy.token),
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("round trip ok"));
    let peak = peak_rss_mb(proxy.child.id());
    assert!(peak < 64.0, "the proxy's peak RSS was {peak:.1} MB");
    assert!(!proxy.log_text().contains(password));
}

const KEEP_LOGGING: &str = r#"
import os, time
import mlflow
mlflow.set_experiment("rotation")
with mlflow.start_run():
    for step in range(40):
        mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        if step == 10:
            open(os.environ["ROTATE_SIGNAL"], "w").close()
            while not os.path.exists(os.environ["ROTATED"]):
                time.sleep(0.05)
print("logged through the rotation")
"#;

#[test]
fn a_rotation_mid_run_is_invisible_to_the_client() {
    let Some(mlflow) = MlflowServer::shared_serving_artifacts("proxy: rotation") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (secret, secret_text) =
        mlflow_user(mlflow, dir.path(), "rotating-user", "pw-before-rotation-1");
    let vars = basic_vars(&secret_text);
    // Counts what MLflow answers.
    let upstream = FaultProxy::start(mlflow.addr());
    let proxy = Proxy::start(dir.path(), &upstream.url(), &vars, &[]);
    let signal = dir.path().join("rotate-now");
    let rotated = dir.path().join("rotated");
    let mut client = Command::new(python().unwrap())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .env("MLFLOW_TRACKING_URI", proxy.url())
        .env("MLFLOW_TRACKING_TOKEN", &proxy.token)
        .env("ROTATE_SIGNAL", &signal)
        .env("ROTATED", &rotated)
        .args(["-c", KEEP_LOGGING])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !signal.exists() {
        assert!(
            Instant::now() < deadline,
            "the client never reached the rotation"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The password changes in MLflow and in the backend; the proxy's cached
    // credential is now stale and MLflow refuses it.
    mlflow.set_password("rotating-user", "pw-after-rotation-2");
    std::fs::write(&secret, "rotating-user:pw-after-rotation-2").unwrap();
    std::fs::write(&rotated, "").unwrap();
    let mut stdout = String::new();
    let mut stderr = String::new();
    client
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    client
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(client.wait().unwrap().success(), "{stderr}");
    assert!(stdout.contains("logged through the rotation"));
    assert!(!stderr.contains("401"), "{stderr}");
    // MLflow refused the stale credential once; the proxy refetched and
    // resent, and nothing was refused after.
    assert_eq!(upstream.relayed(401), 1);
    let (_, _, metrics) = proxy.get("/-/metrics", &[]);
    assert!(
        metrics.contains("mlflow_secrets_proxy_refetches_total 1"),
        "{metrics}"
    );
}

const READ_ENVIRON: &str = r#"
import mlflow, os, sys
mlflow.set_experiment("exec-proxy")
with mlflow.start_run():
    mlflow.log_metric("m", 1.0)
environ = open("/proc/self/environ", "rb").read()
assert os.environ["MLFLOW_TRACKING_URI"].startswith("http://127.0.0.1:"), os.environ["MLFLOW_TRACKING_URI"]
assert b"MLFLOW_TRACKING_PASSWORD" not in environ and b"MLFLOW_TRACKING_USERNAME" not in environ
print("environ:" + environ.hex())
sys.stdout.flush()
sys.exit(7)
"#;

#[test]
fn exec_proxy_gives_the_child_a_local_proxy_and_no_credential() {
    let Some(mlflow) = MlflowServer::shared_serving_artifacts("proxy: exec --proxy") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let password = "pw-exec-proxy-9c0d22";
    let (_, secret) = mlflow_user(mlflow, dir.path(), "exec-user", password);
    let vars = basic_vars(&secret);
    let output = Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .envs(vars.iter().copied())
        .args(["exec", "--proxy", "--url", &mlflow.url(), "--"])
        .arg(python().unwrap())
        .args(["-c", READ_ENVIRON])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(7),
        "CMD's own exit code: {stderr}"
    );
    let environ = stdout
        .lines()
        .find_map(|l| l.strip_prefix("environ:"))
        .map(|hex| {
            (0..hex.len() / 2)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
                .collect::<Vec<u8>>()
        })
        .unwrap_or_else(|| panic!("the child did not report: {stdout}{stderr}"));
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        !environ.contains(password),
        "the child's environment holds the password"
    );
    assert!(
        !environ.contains("ZXhlYy11c2Vy"),
        "the child's environment holds the Basic header"
    );
    assert!(environ.contains("MLFLOW_TRACKING_TOKEN="));
    assert!(!stdout.contains(password) && !stderr.contains(password));
}

#[test]
fn a_tls_upstream_is_trusted_through_upstream_ca_only() {
    let kit = HostileKit::start();
    let dir = tempfile::tempdir().unwrap();
    let secret = token_file(dir.path());
    let mut vars = file_vars(&secret);
    vars.retain(|(name, _)| *name != "MLFLOW_SECRETS_ALLOWED_HOSTS");
    vars.push(("MLFLOW_SECRETS_ALLOWED_HOSTS", "localhost"));
    let ca = kit.ca_path().display().to_string();
    let trusted = Proxy::start(dir.path(), &kit.url("tls"), &vars, &["--upstream-ca", &ca]);
    let bearer = trusted.bearer();
    let (status, _, body) = trusted.get("/api/2.0/mlflow/runs/get", &[("Authorization", &bearer)]);
    assert_eq!(status, 200, "{body}");
    let seen = kit.requests("tls");
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );

    // Without the CA the certificate is not trusted: 502, nothing sent.
    let untrusted = Proxy::start(dir.path(), &kit.url("tls"), &vars, &[]);
    let bearer = untrusted.bearer();
    let (status, _, body) =
        untrusted.get("/api/2.0/mlflow/runs/get", &[("Authorization", &bearer)]);
    assert_eq!(status, 502, "{body}");
    assert_eq!(kit.requests("tls").len(), 1);
}

/// A keep-alive upstream on 127.0.0.1: answers every request `200` with its
/// connection's number and the request's number on it, and says
/// `Connection: close` (then closes) with every third answer of a
/// connection. Returns its URL and the requests' heads as received.
fn counting_upstream() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&heads);
    std::thread::spawn(move || {
        for (connection, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { return };
            let seen = std::sync::Arc::clone(&seen);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                for n in 1.. {
                    let mut head = String::new();
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        head.push_str(&line);
                        if line == "\r\n" {
                            break;
                        }
                    }
                    seen.lock().unwrap().push(head);
                    let body = format!("connection {connection} request {n}");
                    let close = if n % 3 == 0 {
                        "Connection: close\r\n"
                    } else {
                        ""
                    };
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{close}\r\n{body}",
                        body.len()
                    );
                    if writer.write_all(answer.as_bytes()).is_err() || n % 3 == 0 {
                        return;
                    }
                }
            });
        }
    });
    (url, heads)
}

#[test]
fn upstream_connections_are_kept_until_the_upstream_closes_them() {
    let (url, heads) = counting_upstream();
    let dir = tempfile::tempdir().unwrap();
    let secret = token_file(dir.path());
    let proxy = Proxy::start(dir.path(), &url, &file_vars(&secret), &[]);
    let bearer = proxy.bearer();
    let mut bodies = Vec::new();
    for _ in 0..7 {
        let (status, _, body) =
            proxy.get("/api/2.0/mlflow/runs/get", &[("Authorization", &bearer)]);
        assert_eq!(status, 200, "{body}");
        bodies.push(body);
    }
    // Three requests a connection, each on the connection kept from the one
    // before, a new one only after the upstream said it closes.
    let expected: Vec<String> = (0..7)
        .map(|i| format!("connection {} request {}", i / 3, i % 3 + 1))
        .collect();
    assert_eq!(bodies, expected);
    let heads = heads.lock().unwrap();
    assert_eq!(heads.len(), 7);
    let authority = url.trim_start_matches("http://");
    for head in heads.iter() {
        assert!(
            head.starts_with("GET /api/2.0/mlflow/runs/get HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("host: {authority}\r\n")),
            "{head}"
        );
        assert!(head.contains(&format!("Bearer {TOKEN}")), "{head}");
        assert!(!head.contains(&proxy.token), "{head}");
    }
}

#[test]
fn an_upstream_connection_outlives_the_client_connection_that_used_it() {
    let (url, heads) = counting_upstream();
    let dir = tempfile::tempdir().unwrap();
    let secret = token_file(dir.path());
    let proxy = Proxy::start(dir.path(), &url, &file_vars(&secret), &[]);
    let get = format!(
        "GET /api/2.0/mlflow/runs/get HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\n\r\n",
        proxy.addr,
        proxy.bearer()
    );
    let mut bodies = Vec::new();
    let mut first = TcpStream::connect(proxy.addr).unwrap();
    for _ in 0..2 {
        bodies.push(answer(&mut first, get.as_bytes()).body);
    }
    drop(first);
    // Once the first client's connection is gone (a scrape then counts only
    // its own), its upstream connection waits in the pool.
    let deadline = Instant::now() + HANG_GUARD;
    while !proxy
        .get("/-/metrics", &[])
        .2
        .contains("mlflow_secrets_proxy_open_connections 1\n")
    {
        assert!(
            Instant::now() < deadline,
            "the first client's connection never ended"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut second = TcpStream::connect(proxy.addr).unwrap();
    for _ in 0..2 {
        bodies.push(answer(&mut second, get.as_bytes()).body);
    }
    assert_eq!(
        bodies,
        [
            "connection 0 request 1",
            "connection 0 request 2",
            // The next client gets the kept connection…
            "connection 0 request 3",
            // …and a new one after the upstream closed that one.
            "connection 1 request 1",
        ]
    );
    let heads = heads.lock().unwrap();
    assert_eq!(heads.len(), 4);
    for head in heads.iter() {
        assert!(head.contains(&format!("Bearer {TOKEN}")), "{head}");
        assert!(!head.contains(&proxy.token), "{head}");
    }
}

#[test]
fn a_proxy_from_the_environment_only_ever_tunnels_to_an_https_upstream() {
    let kit = HostileKit::start();
    // Any request it receives in the clear would hand it the credential.
    let middle = CaptureServer::start();
    let dir = tempfile::tempdir().unwrap();
    let secret = token_file(dir.path());
    let middle_url = middle.url();
    let via = [
        ("HTTP_PROXY", middle_url.as_str()),
        ("http_proxy", middle_url.as_str()),
        ("HTTPS_PROXY", middle_url.as_str()),
        ("ALL_PROXY", middle_url.as_str()),
    ];
    // Plain http: straight to the upstream, never through the proxy.
    let mut vars = file_vars(&secret);
    vars.extend(via);
    let plain = Proxy::start(dir.path(), &kit.url("allowed"), &vars, &[]);
    let bearer = plain.bearer();
    let (status, _, body) = plain.get("/api/2.0/mlflow/runs/get", &[("Authorization", &bearer)]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(kit.requests("allowed").len(), 1);
    assert!(
        middle.requests().is_empty(),
        "plain http went through the proxy"
    );

    // https: only a CONNECT reaches the proxy, naming the upstream; the
    // credential travels inside the tunnel or not at all.
    vars.retain(|(name, _)| *name != "MLFLOW_SECRETS_ALLOWED_HOSTS");
    vars.push(("MLFLOW_SECRETS_ALLOWED_HOSTS", "localhost"));
    let ca = kit.ca_path().display().to_string();
    let tls = kit.url("tls");
    let tunnelled = Proxy::start(dir.path(), &tls, &vars, &["--upstream-ca", &ca]);
    let bearer = tunnelled.bearer();
    let _ = tunnelled.get("/api/2.0/mlflow/runs/get", &[("Authorization", &bearer)]);
    let seen = middle.requests();
    assert!(
        !seen.is_empty(),
        "the https upstream was not reached through the proxy"
    );
    let authority = tls.trim_start_matches("https://").trim_end_matches('/');
    for request in &seen {
        assert_eq!(request.method, "CONNECT", "{:?}", request.path);
        assert_eq!(request.path, authority);
    }
    assert!(!middle.saw(TOKEN), "the credential reached the proxy");
    drop(tunnelled);

    // Any other kind of proxy for an https upstream: refused at start.
    let output = Command::new(BIN)
        .env_clear()
        .envs(
            vars.iter()
                .copied()
                .filter(|(name, _)| !name.ends_with("_PROXY") && !name.ends_with("_proxy")),
        )
        .env("ALL_PROXY", "socks5://127.0.0.1:1")
        .args([
            "proxy",
            "--upstream",
            &tls,
            "--listen",
            "127.0.0.1:0",
            "--local-token-file",
        ])
        .arg(dir.path().join("socks.token"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not an http:// proxy"), "{stderr}");
}

#[test]
fn a_refused_request_is_resent_once_only_when_its_body_was_kept() {
    let kit = HostileKit::start();
    let dir = tempfile::tempdir().unwrap();
    let secret = token_file(dir.path());
    let proxy = Proxy::start(dir.path(), &kit.url("allowed"), &file_vars(&secret), &[]);
    let bearer = proxy.bearer();
    let rotated = "tok-rotated-credential-0a4f77";

    // Small body: refused, refetched (the backend now holds a new
    // credential), resent whole with it.
    kit.script(
        "allowed",
        "/small",
        vec![Answer::status(401), Answer::status(200)],
    );
    std::fs::write(&secret, rotated).unwrap();
    let small = vec![b'x'; 64 * 1024];
    let (status, _, _) = call(
        proxy.addr,
        "POST",
        "/small",
        &[("Authorization", &bearer)],
        &small,
    );
    assert_eq!(status, 200);
    let seen = kit.requests("allowed");
    assert_eq!(seen.len(), 2, "sent, refused, resent once");
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(
        seen[1].header("authorization"),
        Some(format!("Bearer {rotated}").as_str())
    );
    assert!(seen[1].body_complete && seen[1].body_len == small.len());

    // Over 1 MiB: streamed, not kept; the refusal goes back as it is.
    kit.reset();
    kit.script(
        "allowed",
        "/large",
        vec![Answer::status(401), Answer::status(200)],
    );
    std::fs::write(&secret, "tok-third-credential-c3d2e1").unwrap();
    let large = vec![b'y'; 2 * 1024 * 1024];
    let (status, _, _) = call(
        proxy.addr,
        "POST",
        "/large",
        &[("Authorization", &bearer)],
        &large,
    );
    assert_eq!(status, 401, "a body that was not kept is not resent");
    let seen = kit.requests("allowed");
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].body_complete && seen[0].body_len == large.len(),
        "streamed whole"
    );

    // A chunked body, however small, is streamed and not kept either.
    kit.reset();
    kit.script(
        "allowed",
        "/chunked",
        vec![Answer::status(401), Answer::status(200)],
    );
    std::fs::write(&secret, "tok-fourth-credential-9b8a7f").unwrap();
    let head = format!(
        "POST /chunked HTTP/1.1\r\nHost: {}\r\nAuthorization: {bearer}\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n",
        proxy.addr
    );
    let body = "400\r\n".to_owned() + &"z".repeat(0x400) + "\r\n0\r\n\r\n";
    let answer = exchange(
        TcpStream::connect(proxy.addr).unwrap(),
        &[head.as_bytes(), body.as_bytes()].concat(),
    );
    assert_eq!(answer.status, 401, "a chunked body is not resent");
    let seen = kit.requests("allowed");
    assert_eq!(seen.len(), 1);
    assert!(seen[0].body_complete && seen[0].body_len == 0x400);
}

#[test]
fn request_targets_that_are_not_paths_are_refused() {
    let (_dir, upstream, proxy) = capture_proxy(&[]);
    let bearer = proxy.bearer();
    for target in [
        format!("http://{}/api/2.0/mlflow/experiments/search", proxy.addr),
        format!("http://127.0.0.2:{}/steal", upstream.port()),
        "*".to_owned(),
        "api/2.0/mlflow/experiments/search".to_owned(),
    ] {
        let head = format!(
            "GET {target} HTTP/1.1\r\nHost: {}\r\nAuthorization: {bearer}\r\nConnection: close\r\n\r\n",
            proxy.addr
        );
        let answer = exchange(TcpStream::connect(proxy.addr).unwrap(), head.as_bytes());
        assert_eq!(answer.status, 400, "{target}: {}", answer.head);
    }
    assert!(
        upstream.requests().is_empty(),
        "nothing reached the upstream"
    );
}

/// Both header styles against the hostile kit: an https upstream that
/// redirects to plain http on a thief host, and a resend after a refusal.
#[test]
fn hostile_upstream_downgrades_and_resends_in_both_header_styles() {
    // Each header style with the backend read by the proxy itself, and
    // through a node agent (the refetch then goes to the agent with the
    // refused value's fingerprint).
    for (custom, via_agent) in [(false, false), (true, false), (false, true), (true, true)] {
        let kit = HostileKit::start();
        let dir = tempfile::tempdir().unwrap();
        let secret = token_file(dir.path());
        let mut backend = file_vars(&secret);
        backend.retain(|(name, _)| *name != "MLFLOW_SECRETS_ALLOWED_HOSTS");
        backend.push(("MLFLOW_SECRETS_ALLOWED_HOSTS", "localhost"));
        let mut agent = via_agent.then(|| Agent::start(dir.path(), &backend));
        let mut vars = match &agent {
            Some(agent) => vec![
                ("MLFLOW_SECRETS_AGENT", agent.address.as_str()),
                ("MLFLOW_SECRETS_ALLOWED_HOSTS", "localhost"),
            ],
            None => backend.clone(),
        };
        if custom {
            vars.push(("MLFLOW_AUTH_HEADER_NAME", "X-MLflow-Auth"));
        }
        let case = format!("custom={custom} via_agent={via_agent}");
        let (name, value) = if custom {
            ("x-mlflow-auth", TOKEN.to_owned())
        } else {
            ("authorization", format!("Bearer {TOKEN}"))
        };
        let ca = kit.ca_path().display().to_string();
        let proxy = Proxy::start(dir.path(), &kit.url("tls"), &vars, &["--upstream-ca", &ca]);
        let bearer = proxy.bearer();

        // The credential's header as an upstream may echo it back, in
        // another spelling when it is the configured one: never relayed.
        let echo = if custom {
            "X_MLflow.Auth"
        } else {
            "Authorization"
        };

        // https → http on another host: passed back, never followed.
        let thief = format!("{}/steal", kit.url("thief"));
        kit.script(
            "tls",
            "/down",
            vec![Answer::redirect(302, &thief).header(echo, &value)],
        );
        let (status, head, _) = proxy.get("/down", &[("Authorization", &bearer)]);
        assert_eq!(status, 302, "{case}");
        assert!(head.contains(&format!("location: {thief}")), "{head}");
        assert!(
            !head.contains(TOKEN),
            "{case}: the credential came back: {head}"
        );
        assert!(
            kit.requests("thief").is_empty(),
            "{case}: the thief got a request"
        );
        assert!(!kit.saw("thief", TOKEN));

        // A refusal with a rotated backend value: one resend, new value, same style.
        let rotated = "tok-rotated-in-hostile-kit-77aa";
        let resent = if custom {
            rotated.to_owned()
        } else {
            format!("Bearer {rotated}")
        };
        kit.script(
            "tls",
            "/refuse",
            vec![
                Answer::status(401).header(echo, &value),
                Answer::status(200).header(echo, &resent),
            ],
        );
        std::fs::write(&secret, rotated).unwrap();
        let (status, head, _) = call(
            proxy.addr,
            "POST",
            "/refuse",
            &[("Authorization", &bearer)],
            b"{\"k\":1}",
        );
        assert_eq!(status, 200, "{case}");
        assert!(
            !head.contains(rotated) && !head.contains(TOKEN),
            "{case}: the credential came back: {head}"
        );
        let seen: Vec<_> = kit
            .requests("tls")
            .into_iter()
            .filter(|r| r.target == "/refuse")
            .collect();
        assert_eq!(seen.len(), 2, "{case}");
        assert_eq!(seen[0].header(name), Some(value.as_str()));
        assert_eq!(seen[1].header(name), Some(resent.as_str()));
        if custom {
            assert!(
                seen.iter().all(|r| r.header("authorization").is_none()),
                "local token or credential leaked in Authorization"
            );
        }
        assert!(!kit.saw("tls", &proxy.token) && !kit.saw("thief", rotated));

        // `Connection` naming headers beside a token spoiled by a byte no
        // name holds (and the credential's own name): each side's listed
        // header stays on its hop, the credential still goes.
        // It also echoes the credential in the headers a credential travels
        // in (the configured one in another spelling): none reaches the client.
        let mut hop = Answer::status(200)
            .header("Connection", "x-b\u{ff}, X-Upstream-Hop")
            .header("X-Upstream-Hop", "upstream-only")
            .header("Authorization", &resent)
            .header("Proxy-Authorization", &resent);
        if custom {
            hop = hop.header("X_MLflow.Auth", &resent);
        }
        kit.script("tls", "/hop", vec![hop]);
        let listing = format!("x-a\u{ff}, X-Client-Hop, {name}");
        let (status, head, _) = proxy.get(
            "/hop",
            &[
                ("Authorization", &bearer),
                ("Connection", &listing),
                ("X-Client-Hop", "client-only"),
            ],
        );
        assert_eq!(status, 200, "{case}: {head}");
        assert!(!head.contains("upstream-only"), "{case}: {head}");
        assert!(
            !head.contains(rotated),
            "{case}: the credential came back: {head}"
        );
        let hop = kit
            .requests("tls")
            .into_iter()
            .find(|r| r.target == "/hop")
            .expect("the request went upstream");
        assert!(
            !kit.saw("tls", "client-only"),
            "{case}: a listed header went upstream"
        );
        assert_eq!(hop.header(name), Some(resent.as_str()), "{case}");
        if let Some(agent) = &mut agent {
            let log = agent.stop();
            assert_eq!(
                log.matches("asked to fetch the credential again").count(),
                1,
                "{case}: {log}"
            );
        }
    }
}

#[test]
fn a_refusal_upstream_reaches_the_node_agent_behind_the_proxy() {
    let Some(mlflow) = MlflowServer::shared_serving_artifacts("proxy: rotation through the agent")
    else {
        return;
    };
    let Some(moto) = MotoServer::start("proxy: rotation through the agent") else {
        return;
    };
    let user = "agent-rotating";
    mlflow.create_user(user, "pw-agent-before-1");
    moto.create_secret("proxy-agent", &format!("{user}:pw-agent-before-1"));
    // Both counted where they answer: the secrets backend and MLflow.
    let backend = FaultProxy::start(moto.addr());
    let upstream = FaultProxy::start(mlflow.addr());
    let dir = tempfile::tempdir().unwrap();
    let backend_url = backend.url();
    let vars = [
        ("MLFLOW_SECRETS_AUTH_ENABLE", "aws-secrets-manager"),
        ("AWS_ENDPOINT_URL", backend_url.as_str()),
        ("AWS_REGION", moto::REGION),
        ("AWS_ACCESS_KEY_ID", moto::ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", moto::SECRET_KEY),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("MLFLOW_AWS_SECRET_NAME", "proxy-agent"),
        ("MLFLOW_AWS_AUTH_MODE", "basic"),
    ];
    // The agent holds the backend's settings; the proxy knows only the agent.
    let mut agent = Agent::start(dir.path(), &vars);
    let proxy_vars = [
        ("MLFLOW_SECRETS_AGENT", agent.address.as_str()),
        ("MLFLOW_SECRETS_ALLOWED_HOSTS", "127.0.0.1"),
    ];
    // Two clients of the agent, each with the value cached.
    let proxies = [
        Proxy::start(dir.path(), &upstream.url(), &proxy_vars, &[]),
        Proxy::start(dir.path(), &upstream.url(), &proxy_vars, &[]),
    ];
    let search = "/api/2.0/mlflow/experiments/search?max_results=1";
    for proxy in &proxies {
        let (status, _, body) = proxy.get(search, &[("Authorization", &proxy.bearer())]);
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(backend.forwarded(), 1, "one fetch for both proxies");

    // Rotated in MLflow and in the backend: the agent's cached value is now
    // refused. The proxy's refetch must reach the agent's backend, or the
    // agent would hand back the refused value until its TTL ends. The second
    // client's refusal of the same old value must not fetch again.
    mlflow.set_password(user, "pw-agent-after-2");
    moto.put_secret_value("proxy-agent", &format!("{user}:pw-agent-after-2"));
    let answers: Vec<_> = proxies
        .iter()
        .map(|proxy| proxy.get(search, &[("Authorization", &proxy.bearer())]))
        .collect();
    let agent_text = agent.stop();
    for (proxy, (status, _, body)) in proxies.iter().zip(&answers) {
        assert_eq!(*status, 200, "{body}\n{}\n{agent_text}", proxy.log_text());
    }
    assert_eq!(backend.forwarded(), 2, "one fetch after the rotation");
    // Each proxy met one refusal and resent once: 2 + 2 answers of 200.
    assert_eq!(upstream.relayed(401), 2);
    assert_eq!(upstream.relayed(200), 4);
}

#[test]
fn the_proxys_own_refusals_are_counted_in_its_metrics() {
    let (_dir, _upstream, proxy) = capture_proxy(&[]);
    let bearer = proxy.bearer();
    let host = proxy.addr.to_string();
    let forwarded = [
        ("Host", host.as_str()),
        ("Authorization", bearer.as_str()),
        ("X-Forwarded-For", "10.0.0.1"),
    ];
    let foreign = [
        ("Host", "attacker.example"),
        ("Authorization", bearer.as_str()),
    ];
    let no_token = [("Host", host.as_str())];
    for (headers, want) in [
        (&no_token[..], 401),
        (&forwarded[..], 400),
        (&foreign[..], 403),
    ] {
        assert_eq!(call(proxy.addr, "GET", "/api/x", headers, b"").0, want);
    }
    assert_eq!(
        call(
            proxy.addr,
            "TRACE",
            "/api/x",
            &[("Host", &host), ("Authorization", &bearer)],
            b""
        )
        .0,
        405
    );
    let (status, _, metrics) = proxy.get("/-/metrics", &[]);
    assert_eq!(status, 200);
    for code in [400, 401, 403, 405] {
        let line = format!("mlflow_secrets_proxy_requests_total{{status=\"{code}\"}} 1");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
}

#[test]
fn methods_that_may_echo_the_request_are_refused_and_nothing_reaches_the_upstream() {
    let (_dir, upstream, proxy) = capture_proxy(&[]);
    let bearer = proxy.bearer();
    let host = proxy.addr.to_string();
    for method in ["TRACE", "TRACK", "trace", "DEBUG", "PROPFIND", "CONNECT"] {
        let (status, _, body) = call(
            proxy.addr,
            method,
            "/api/2.0/mlflow/experiments/search",
            &[("Host", &host), ("Authorization", &bearer)],
            b"",
        );
        assert_eq!(status, 405, "{method}: {body}");
        assert!(!body.contains(TOKEN));
    }
    // The same request as GET does go through: the refusal is the method's;
    // headers that would make the upstream read another method or path
    // than the one checked are not passed on.
    let (status, _, _) = proxy.get(
        "/api/2.0/mlflow/experiments/search",
        &[
            ("Authorization", &bearer),
            ("X-HTTP-Method-Override", "TRACE"),
            ("X-Method-Override", "TRACE"),
            ("X-Original-URL", "/admin"),
            ("X-Rewrite-URL", "/admin"),
        ],
    );
    assert_eq!(status, 200);
    let seen = upstream.requests();
    let methods: Vec<&str> = seen.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(methods, ["GET"]);
    for name in [
        "x-http-method-override",
        "x-method-override",
        "x-original-url",
        "x-rewrite-url",
    ] {
        assert_eq!(seen[0].header(name), None, "{name}");
    }
}

/// The authority of an absolute `http://` URL as RFC 3986 reads it (up to
/// the first `/`, `?` or `#`), with `\` ending it too as browsers read it: a
/// reader that is not the proxy's.
fn authority(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("http://")?;
    let end = rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// The `Location` of a response head, if any.
fn location(head: &str) -> Option<String> {
    head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("location")
            .then(|| value.trim().to_owned())
    })
}

#[test]
fn locations_are_rewritten_only_into_the_proxy_itself_or_passed_back_unchanged() {
    let kit = HostileKit::start();
    let dir = tempfile::tempdir().unwrap();
    let secret = token_file(dir.path());
    let vars = file_vars(&secret);
    let upstream = kit.url("allowed");
    let host = upstream.trim_start_matches("http://").to_owned();
    let port = kit.port("allowed");
    let mut locations = kit.tricks();
    locations.extend([
        format!("http://127.1:{port}/"),
        format!("http://{host}/mlflow@evil.example/x"),
        format!("http:{host}//@evil.example/steal"),
        format!("http://{host}/mlflow/%2e%2e/admin"),
        format!("http://{host}/mlflowx/y"),
        format!("http://{host}/mlflow/ok?q=1"),
    ]);
    let mut rewritten = 0;
    for base in ["", "/mlflow"] {
        let proxy = Proxy::start(dir.path(), &format!("{upstream}{base}"), &vars, &[]);
        let bearer = proxy.bearer();
        for (i, target) in locations.iter().enumerate() {
            kit.script(
                "allowed",
                &format!("{base}/loc{i}"),
                vec![Answer::redirect(302, target)],
            );
            let (status, head, _) = proxy.get(&format!("/loc{i}"), &[("Authorization", &bearer)]);
            // A redirect, or 502 for an answer no HTTP parser takes (a line
            // break in the header) — never a request task that died.
            assert!(
                matches!(status, 302 | 502),
                "{base} {target:?}: {head}\n{}",
                proxy.log_text()
            );
            let Some(given) = location(&head) else {
                continue; // a value no client could use was dropped upstream
            };
            if given.starts_with(&proxy.url()) {
                rewritten += 1;
                assert_eq!(
                    authority(&given),
                    Some(proxy.addr.to_string().as_str()),
                    "{base} {target:?} became {given:?}"
                );
            } else {
                assert!(
                    target.trim_start().starts_with(&given),
                    "{base} {target:?} was changed into {given:?}"
                );
            }
        }
        assert!(
            !proxy.log_text().contains("panicked"),
            "{}",
            proxy.log_text()
        );
    }
    // `http://127.1:PORT/`, the base itself and `/mlflow/ok?q=1` at least.
    assert!(rewritten >= 3, "{rewritten} rewritten");
    assert!(!kit.saw("thief", TOKEN));
}

#[test]
fn requests_that_leave_the_base_path_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let secret = token_file(dir.path());
    let upstream = CaptureServer::start();
    let proxy = Proxy::start(
        dir.path(),
        &format!("{}/mlflow", upstream.url()),
        &file_vars(&secret),
        &[],
    );
    let curl = |path: &str| {
        let output = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--path-as-is",
                "-H",
            ])
            .arg(proxy.bearer().replace("Bearer ", "Authorization: Bearer "))
            .arg(format!("{}{path}", proxy.url()))
            .output()
            .expect("run curl");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    for path in [
        "/../admin/users",
        "/%2e%2e/admin/users",
        "/%2E%2E/admin/users",
        "/a/../../admin",
        "/..%2fadmin/users",
        "/.%2e/admin",
        "/..;/admin",
        "/%2e%2e;x/admin",
        "/%252e%252e/admin",
        "/%c0%ae%c0%ae/admin",
        // Out of the base and back in (Tomcat keeps the %20 segment).
        "/..;/admin/%20/..;/mlflow/x",
        "/%ef%b8%b0/admin",
        "/%25%D9%A2e%25%D9%A2e/admin",
        "/%20..%3fx",
        "/.%09.%3fx",
        "/x%20HTTP/1.1%0d%0aHost:%20a%0d%0a%0d%0aGET%20/admin",
    ] {
        assert_eq!(curl(path), "400", "{path}");
    }
    assert!(upstream.requests().is_empty(), "{:#?}", upstream.requests());
    assert_eq!(curl("/api/2.0/mlflow/experiments/search"), "200");
    assert_eq!(curl("/a/../api/x"), "200");
    assert_eq!(curl("/artifacts/1%E2%81%842%20report.pdf"), "200");
    assert_eq!(curl("/artifacts/top%2510%EF%BC%9F.csv"), "200");
    let targets: Vec<String> = upstream.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        targets,
        [
            "/mlflow/api/2.0/mlflow/experiments/search",
            "/mlflow/api/x",
            "/mlflow/artifacts/1%E2%81%842%20report.pdf",
            "/mlflow/artifacts/top%2510%EF%BC%9F.csv",
        ]
    );
}

#[test]
fn local_token_files_and_their_directories_are_checked_never_changed() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let secret = token_file(dir.path());
    let upstream = CaptureServer::start();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let in_use = taken.local_addr().unwrap().to_string();
    let command = |cwd: &Path, file: &Path, listen: &str| {
        let mut command = Command::new(BIN);
        command
            .env_clear()
            .envs(file_vars(&secret))
            .current_dir(cwd)
            .args(["proxy", "--upstream", &upstream.url(), "--listen", listen])
            .arg("--local-token-file")
            .arg(file);
        command
    };
    let start =
        |cwd: &Path, file: &Path| -> Output { command(cwd, file, &in_use).output().unwrap() };
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A port in use: refused before any token file is written.
    let output = start(&home, &home.join("proxy.token"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("binding {in_use}")), "{stderr}");
    assert!(!home.join("proxy.token").exists(), "{stderr}");
    // A home directory (0755): the token is written there, the directory
    // keeps its mode; a bare file name is taken in the current directory.
    for file in [home.join("proxy.token"), PathBuf::from("bare.token")] {
        let written = home.join(file.file_name().unwrap());
        let mut proxy = command(&home, &file, "127.0.0.1:0")
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::fs::metadata(&written).map_or(true, |m| m.len() == 0) {
            assert!(
                proxy.try_wait().unwrap().is_none(),
                "{file:?}: the proxy exited"
            );
            assert!(Instant::now() < deadline, "{file:?}: no token file");
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = proxy.kill();
        let _ = proxy.wait();
        assert_eq!(std::fs::metadata(&written).unwrap().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(&home).unwrap().mode() & 0o7777, 0o755);
    }
    // A token planted by someone else, or a link to one, is refused.
    let planted = home.join("planted.token");
    std::fs::write(&planted, "tok-planted-0123456789abcdef").unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o600)).unwrap();
    let link = home.join("link.token");
    std::os::unix::fs::symlink(home.join("proxy.token"), &link).unwrap();
    // Refused at start: the stderr of a proxy that must exit by itself.
    let refused = |file: &Path| -> String {
        let mut proxy = command(&home, file, "127.0.0.1:0")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while proxy.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = proxy.kill();
                panic!("{file:?} was accepted");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let output = proxy.wait_with_output().unwrap();
        assert_eq!(output.status.code(), Some(1));
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let stderr = refused(&link);
    assert!(stderr.contains("symbolic link"), "{stderr}");
    if std::fs::metadata("/proc/self").unwrap().uid() == 0 {
        let status = Command::new("chown")
            .arg("65534")
            .arg(&planted)
            .status()
            .unwrap();
        assert!(status.success());
        let stderr = refused(&planted);
        assert!(stderr.contains("belongs to uid 65534"), "{stderr}");
        assert!(!stderr.contains("tok-planted"), "{stderr}");
    }
}

#[test]
fn on_a_unix_socket_the_peer_uid_decides_and_no_token_is_needed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secret = token_file(dir.path());
    let upstream = CaptureServer::start();
    let socket = dir.path().join("run/proxy.sock");
    let log = dir.path().join("proxy.log");
    let mut child = Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(file_vars(&secret))
        .args(["proxy", "--upstream", &upstream.url(), "--socket"])
        .arg(&socket)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start the proxy");
    let deadline = Instant::now() + HANG_GUARD;
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(
            Instant::now() < deadline,
            "the proxy did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // curl as the client: the status it got.
    let status = |command: &mut Command| {
        let output = command
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--unix-socket",
            ])
            .arg(&socket)
            .arg("http://localhost/api/2.0/mlflow/experiments/search")
            .output()
            .expect("run curl");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    // This uid: served, without any token, with the credential upstream.
    assert_eq!(status(&mut Command::new("curl")), "200");
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    // Another uid, even with the socket opened up by mistake: refused by
    // its peer credentials, nothing forwarded.
    for (path, mode) in [
        (dir.path(), 0o755),
        (socket.parent().unwrap(), 0o755),
        (socket.as_path(), 0o666),
    ] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let mut nobody = Command::new("setpriv");
    nobody.args(["--reuid=65534", "--regid=65534", "--clear-groups", "curl"]);
    let refused = status(&mut nobody);
    assert_eq!(
        refused, "403",
        "uid 65534 is refused by its peer credentials"
    );
    assert_eq!(
        upstream.requests().len(),
        1,
        "nothing forwarded for uid 65534"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn sigterm_lets_the_request_in_flight_finish_then_exits_0() {
    use std::io::{BufRead, BufReader};
    use std::sync::mpsc;
    // An upstream that answers only when told to.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    let (arrived, on_arrival) = mpsc::channel();
    let (release, on_release) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
            line.clear();
        }
        arrived.send(()).unwrap();
        let _ = on_release.recv_timeout(HANG_GUARD);
        let mut stream = stream;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\ndone");
    });
    let dir = tempfile::tempdir().unwrap();
    let secret = token_file(dir.path());
    let mut proxy = Proxy::start(dir.path(), &upstream, &file_vars(&secret), &[]);
    let (addr, bearer) = (proxy.addr, proxy.bearer());
    let client = std::thread::spawn(move || {
        call(
            addr,
            "GET",
            "/api/2.0/mlflow/experiments/search",
            &[("Authorization", &bearer)],
            b"",
        )
    });
    on_arrival
        .recv_timeout(HANG_GUARD)
        .expect("the request reached the upstream");
    let status = Command::new("kill")
        .args(["-TERM", &proxy.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // The proxy drains: the request in flight still gets its answer.
    release.send(()).unwrap();
    let (status, _, body) = client.join().unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "done"),
        "{}",
        proxy.log_text()
    );
    let deadline = Instant::now() + HANG_GUARD;
    let exit = loop {
        if let Some(exit) = proxy.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the proxy did not exit after draining"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(exit.code(), Some(0), "{}", proxy.log_text());
}

#[test]
fn exec_proxy_passes_signals_on_and_exits_128_plus_the_signal() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let secret = token_file(dir.path());
    let upstream = CaptureServer::start();
    for (signal, number) in [("TERM", 15), ("INT", 2), ("HUP", 1)] {
        let mut exec = Command::new(BIN)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(file_vars(&secret))
            .args(["exec", "--proxy", "--url", &upstream.url(), "--"])
            .args(["sh", "-c", "echo ready; exec sleep 600"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // CMD runs (its first line came out) before the signal is sent.
        let mut line = String::new();
        BufReader::new(exec.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &exec.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + HANG_GUARD;
        let exit = loop {
            if let Some(exit) = exec.try_wait().unwrap() {
                break exit;
            }
            assert!(Instant::now() < deadline, "SIG{signal} did not end CMD");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(exit.code(), Some(128 + number), "SIG{signal}: {exit:?}");
    }
}

#[test]
fn an_oauth_token_the_idp_issued_reaches_the_upstream_and_the_client_never_does() {
    use secrets_testkit::oidc::{OidcClient, OidcServer};
    const SECRET: &str = "proxy-oauth-client-secret-9";
    let client = OidcClient::new("proxy-client", SECRET, "client_secret_post");
    let Some(idp) = OidcServer::start_one("proxy: OAuth2 token", &client, Duration::from_secs(600))
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let stored = client.store_in(dir.path());
    let token_url = idp.token_url();
    let mut vars = file_vars(&stored);
    vars.extend([
        ("MLFLOW_SECRETS_OAUTH_TOKEN_URL", token_url.as_str()),
        ("MLFLOW_SECRETS_OAUTH_CLIENT_AUTH", "client_secret_post"),
    ]);
    let upstream = CaptureServer::start();
    let proxy = Proxy::start(dir.path(), &upstream.url(), &vars, &[]);
    let (status, _, body) = proxy.get(
        "/api/2.0/mlflow/experiments/search",
        &[("Authorization", &proxy.bearer())],
    );
    assert_eq!(status, 200, "{body}");
    let seen = upstream.requests();
    let token = seen[0]
        .header("authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .expect("a Bearer token upstream");
    assert!(idp.issued_to(token, "proxy-client"));
    assert!(!upstream.saw(SECRET) && !upstream.saw(&proxy.token));
    assert!(!proxy.log_text().contains(SECRET));
}

/// A plain `curl` with the local token, for five token lifetimes, through the
/// proxy to MLflow behind a gateway that lets through only tokens the IdP
/// signed (`jose` against the IdP's JWKS): every answer is MLflow's, while
/// the token rotates underneath (counted at the IdP).
#[test]
fn curl_gets_mlflow_through_the_proxy_while_the_oauth_token_rotates() {
    use secrets_testkit::fault::FaultProxy;
    use secrets_testkit::mlflow::MlflowServer;
    use secrets_testkit::oidc::{OidcClient, OidcGateway, OidcServer};
    const TEST: &str = "proxy: OAuth2 token rotating";
    const LIFETIME: Duration = Duration::from_secs(4);
    const AUDIENCE: &str = "https://mlflow.example.test";
    let client = OidcClient::new(
        "rotating-client",
        "rotating-secret-4",
        "client_secret_basic",
    );
    let Some(idp) = OidcServer::start_one(TEST, &client, LIFETIME) else {
        return;
    };
    let Some(mlflow) = MlflowServer::shared(TEST) else {
        return;
    };
    let Some(gateway) = OidcGateway::start(TEST, &idp, AUDIENCE, mlflow) else {
        return;
    };
    let counter = FaultProxy::start(idp.addr());
    let dir = tempfile::tempdir().unwrap();
    let stored = client.store_in(dir.path());
    let token_url = format!("{}/token", counter.url());
    let mut vars = file_vars(&stored);
    vars.extend([
        ("MLFLOW_SECRETS_OAUTH_TOKEN_URL", token_url.as_str()),
        ("MLFLOW_SECRETS_OAUTH_RESOURCE", AUDIENCE),
    ]);
    let proxy = Proxy::start(dir.path(), &gateway.url(), &vars, &[]);
    let header = proxy.bearer().replace("Bearer ", "Authorization: Bearer ");
    let url = format!(
        "{}/api/2.0/mlflow/experiments/search?max_results=1",
        proxy.url()
    );
    let started = Instant::now();
    let mut answers = 0u64;
    while started.elapsed() < 5 * LIFETIME {
        let output = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", "-H", &header, &url])
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or((&text, ""));
        assert_eq!(status, "200", "answer {answers}: {body}");
        assert!(body.contains("experiments"), "MLflow's answer: {body}");
        answers += 1;
    }
    let runtime = started.elapsed();
    let stats = gateway.stats();
    stats.assert_none_refused();
    assert_eq!(stats.accepted, answers);
    let token_requests = counter.forwarded();
    secrets_testkit::oidc::assert_rotated(token_requests, runtime, LIFETIME);
}
