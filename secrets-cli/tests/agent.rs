//! The node agent as a real process: clients are the CLI's own processes
//! (and, in the Python tests, MLflow's client with the plugin); the backend
//! is moto behind a counting proxy, so backend requests are counted by a
//! party that is not the code under test.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use secrets_testkit::HANG_GUARD;
use secrets_testkit::fault::{Fault, FaultProxy};
use secrets_testkit::moto::{self, MotoServer};
use secrets_testkit::net::{answer, exchange, free_addr};

#[path = "agent/tenants.rs"]
mod tenants;

const BIN: &str = env!("CARGO_BIN_EXE_mlflow-secrets-auth");
const USER: &str = "agent-user";
const PASSWORD: &str = "pw-agent-test-77c1d2";
const DIRECT_PASSWORD: &str = "pw-direct-test-1b9e40";

/// The header a client must print for `user:password`.
fn basic_line(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Authorization: Basic {encoded}")
}

/// A running agent; killed on drop.
struct Agent {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Agent {
    fn start(dir: &Path, vars: &[(&str, &str)], args: &[&str]) -> Self {
        Self::start_at(&dir.join("run/agent.sock"), dir, vars, args)
    }

    fn start_at(socket: &Path, dir: &Path, vars: &[(&str, &str)], args: &[&str]) -> Self {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let log = dir.join(format!(
            "agent-{}.log",
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        let child = Command::new(BIN)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(vars.iter().copied())
            .args(["agent", "--socket"])
            .arg(socket)
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the agent");
        let agent = Self {
            child,
            socket: socket.to_owned(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while get(&agent.socket, "/healthz").0 != 200 {
            assert!(
                Instant::now() < deadline,
                "the agent did not start: {}",
                agent.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        agent
    }

    fn address(&self) -> String {
        format!("unix:{}", self.socket.display())
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit code.
    fn terminate(mut self) -> Option<i32> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn get(socket: &Path, path: &str) -> (u16, String) {
    request(socket, "GET", path)
}

fn request(socket: &Path, method: &str, path: &str) -> (u16, String) {
    let Ok(stream) = UnixStream::connect(socket) else {
        return (0, String::new());
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let raw = exchange(
        stream,
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    (raw.status, raw.body)
}

fn tcp(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut text = format!("GET {path} HTTP/1.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    let raw = exchange(stream, text.as_bytes());
    (raw.status, raw.body)
}

/// The CLI as a client: `header` for an allowed loopback URL.
fn client(vars: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("MLFLOW_SECRETS_ALLOWED_HOSTS", "127.0.0.1")
        .envs(vars.iter().copied())
        .args(["header", "--url", "http://127.0.0.1:5000/"]);
    command
}

/// `n` client processes of the agent at `address` at once: the header
/// line each printed, after checking that each exited 0.
fn headers_from_clients(n: usize, address: &str) -> Vec<String> {
    let children: Vec<Child> = (0..n)
        .map(|_| {
            client(&[("MLFLOW_SECRETS_AGENT", address)])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|child| {
            let output = child.wait_with_output().unwrap();
            let (stdout, stderr) = text(&output);
            assert_eq!(output.status.code(), Some(0), "{stderr}");
            stdout.trim().to_owned()
        })
        .collect()
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A file holding `user:password`; the variables of the file provider.
fn file_vars(dir: &Path, name: &str, password: &str) -> (String, Vec<(&'static str, String)>) {
    let path = dir.join(name);
    std::fs::write(&path, format!("{USER}:{password}")).unwrap();
    let path = path.display().to_string();
    let vars = vec![
        ("MLFLOW_SECRETS_AUTH_ENABLE", "file".to_owned()),
        ("MLFLOW_SECRETS_FILE_PATH", path.clone()),
        ("MLFLOW_FILE_AUTH_MODE", "basic".to_owned()),
    ];
    (path, vars)
}

fn borrowed<'a>(vars: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    vars.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The AWS provider's variables for secret `name` behind `endpoint`.
fn aws_vars(endpoint: &str, name: &str) -> Vec<(&'static str, String)> {
    [
        ("MLFLOW_SECRETS_AUTH_ENABLE", "aws-secrets-manager"),
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_REGION", moto::REGION),
        ("AWS_ACCESS_KEY_ID", moto::ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", moto::SECRET_KEY),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("MLFLOW_AWS_SECRET_NAME", name),
        ("MLFLOW_AWS_AUTH_MODE", "basic"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_owned()))
    .collect()
}

#[test]
fn fifty_client_processes_make_one_backend_fetch_per_ttl() {
    let Some(moto) = MotoServer::start("agent: fifty clients") else {
        return;
    };
    moto.create_secret("agent-fifty", &format!("{USER}:{PASSWORD}"));
    let proxy = FaultProxy::start(moto.addr());
    let dir = tempfile::tempdir().unwrap();
    let vars = aws_vars(&proxy.url(), "agent-fifty");
    let agent = Agent::start(dir.path(), &borrowed(&vars), &[]);
    let expected = basic_line(USER, PASSWORD);

    // The clients hold no backend variables at all.
    let address = agent.address();
    for header in headers_from_clients(50, &address) {
        assert_eq!(header, expected);
    }
    assert_eq!(proxy.forwarded(), 1, "50 processes, one backend fetch");

    let (status, body) = get(&agent.socket, "/v1/status");
    assert_eq!(status, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["counters"]["fetches"], 1);
    assert_eq!(status["clients"], 50, "{status}");
    assert!(!body.contains(PASSWORD) && !body.contains(&expected));
}

/// A pod's node agent with no static secret: it logs in to OpenBao with its
/// projected service-account token (Kubernetes auth, asked of the testkit's
/// TokenReview endpoint). Fifty client processes bring one login and one
/// review, counted by the proxy and the cluster, not by the agent; `doctor`
/// run the same way says who it is and how long the session lasts.
#[test]
fn fifty_clients_through_the_agent_bring_one_kubernetes_login() {
    use secrets_testkit::kubernetes::{ServiceAccount, TokenReviewApi};
    use secrets_testkit::openbao::OpenBao;

    let Some(bao) = OpenBao::start("agent: kubernetes login") else {
        return;
    };
    bao.admin(
        "POST",
        "secret/data/mlflow/auth",
        &format!(r#"{{"data": {{"username": "{USER}", "password": "{PASSWORD}"}}}}"#),
    );
    let cluster = TokenReviewApi::start();
    let account = ServiceAccount::new("ml", "trainer");
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, cluster.admit(&account)).unwrap();
    bao.read_policy("secret/data/mlflow/auth");
    bao.kubernetes_auth(&cluster, "trainer", &account);
    let proxy = FaultProxy::start(bao.addr());
    let file = token_file.display().to_string();
    let vars = [
        ("MLFLOW_SECRETS_AUTH_ENABLE", "vault".to_owned()),
        ("VAULT_ADDR", proxy.url()),
        ("MLFLOW_VAULT_SECRET_PATH", "secret/mlflow/auth".to_owned()),
        ("MLFLOW_VAULT_AUTH_METHOD", "kubernetes".to_owned()),
        ("MLFLOW_VAULT_AUTH_ROLE", "trainer".to_owned()),
        ("MLFLOW_VAULT_JWT_FILE", file),
        ("MLFLOW_VAULT_AUTH_MODE", "basic".to_owned()),
    ];
    let agent = Agent::start(dir.path(), &borrowed(&vars), &[]);
    let expected = basic_line(USER, PASSWORD);
    for header in headers_from_clients(50, &agent.address()) {
        assert_eq!(header, expected);
    }
    assert_eq!(proxy.forwarded_to("/v1/auth/kubernetes/login"), 1);
    assert_eq!(cluster.reviews(), 1, "OpenBao asked the cluster once");

    let doctor = Command::new(BIN)
        .env_clear()
        .env("MLFLOW_SECRETS_ALLOWED_HOSTS", "127.0.0.1")
        .envs(borrowed(&vars))
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&doctor);
    let report: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("{stdout}{stderr}"));
    let identity = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "identity")
        .unwrap_or_else(|| panic!("{report:#}"));
    let detail = identity["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("vault: auth=kubernetes (mount kubernetes, role trainer"),
        "{detail}"
    );
    assert!(detail.contains("session=token valid for "), "{detail}");
    assert_eq!(
        proxy.forwarded_to("/v1/auth/kubernetes/login"),
        2,
        "doctor's own"
    );
}

#[test]
fn after_the_ttl_still_one_fetch_per_ttl() {
    let Some(moto) = MotoServer::start("agent: per ttl") else {
        return;
    };
    moto.create_secret("agent-ttl", &format!("{USER}:{PASSWORD}"));
    let proxy = FaultProxy::start(moto.addr());
    let dir = tempfile::tempdir().unwrap();
    let mut vars = aws_vars(&proxy.url(), "agent-ttl");
    vars.push(("MLFLOW_SECRETS_TTL_MIN_SEC", "1".to_owned()));
    vars.push(("MLFLOW_AWS_TTL_SEC", "1".to_owned()));
    let agent = Agent::start(dir.path(), &borrowed(&vars), &[]);
    let address = agent.address();
    let started = Instant::now();
    let mut served = 0;
    while started.elapsed() < Duration::from_secs(3) {
        let children: Vec<Child> = (0..10)
            .map(|_| {
                client(&[("MLFLOW_SECRETS_AGENT", &address)])
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut child in children {
            assert!(child.wait().unwrap().success());
            served += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let fetches = proxy.forwarded();
    // One at start, then about one per TTL (refreshed ahead at 80 % of a
    // TTL jittered by up to 10 %): never one per client.
    let most = 2 + (elapsed / 0.7).ceil() as usize;
    assert!(
        (2..=most).contains(&fetches),
        "{fetches} fetches for {served} clients in {elapsed:.1}s (at most {most})"
    );
}

#[test]
fn the_socket_is_private_and_other_uids_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, vars) = file_vars(dir.path(), "secret", PASSWORD);
    let agent = Agent::start(dir.path(), &borrowed(&vars), &[]);
    let run = agent.socket.parent().unwrap().to_owned();
    assert_eq!(std::fs::metadata(&run).unwrap().mode() & 0o777, 0o700);
    assert_eq!(
        std::fs::metadata(&agent.socket).unwrap().mode() & 0o777,
        0o600
    );

    let as_nobody = |socket: &str| {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
            .args(["header", "--url", "http://127.0.0.1:5000/"])
            .env_clear()
            .env("MLFLOW_SECRETS_ALLOWED_HOSTS", "127.0.0.1")
            .env("MLFLOW_SECRETS_AGENT", socket);
        command
    };
    // As made, another uid cannot even reach the socket.
    let output = as_nobody(&agent.address()).output().expect("run setpriv");
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("unreachable"), "{stderr}");

    // Opened up by mistake, the agent still refuses the uid (SO_PEERCRED).
    for (path, mode) in [
        (dir.path(), 0o755),
        (run.as_path(), 0o755),
        (agent.socket.as_path(), 0o666),
    ] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let output = as_nobody(&agent.address()).output().expect("run setpriv");
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("refused this client"), "{stderr}");
    assert!(!stdout.contains(PASSWORD) && !stderr.contains(PASSWORD));
    assert!(agent.log_text().contains("uid that is not allowed"));

    // A refusal is an answer, not an outage: the client does not fail over
    // to a provider of its own.
    let own = dir.path().join("own-secret");
    std::fs::write(&own, "tok-own-provider-5e6f7a").unwrap();
    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = as_nobody(&agent.address())
        .env("MLFLOW_SECRETS_AUTH_ENABLE", "file")
        .env("MLFLOW_SECRETS_FILE_PATH", &own)
        .output()
        .expect("run setpriv");
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("refused this client"), "{stderr}");
    assert!(!stdout.contains("tok-own-provider"), "{stdout}");

    // Allowed by --allow-uid, it is served.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o755)).unwrap();
    let allowed = Agent::start_at(
        &other.join("run/agent.sock"),
        dir.path(),
        &borrowed(&vars),
        &["--allow-uid", "65534"],
    );
    // Shared: the directory 0711, the socket 0666; the uid check is the gate.
    let run = allowed.socket.parent().unwrap().to_owned();
    assert_eq!(std::fs::metadata(&run).unwrap().mode() & 0o777, 0o711);
    assert_eq!(
        std::fs::metadata(&allowed.socket).unwrap().mode() & 0o777,
        0o666
    );
    let output = as_nobody(&allowed.address()).output().expect("run setpriv");
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(stdout.trim(), basic_line(USER, PASSWORD));
}

#[test]
fn tcp_needs_the_token_a_loopback_host_and_no_forwarding() {
    let dir = tempfile::tempdir().unwrap();
    let (_, vars) = file_vars(dir.path(), "secret", PASSWORD);
    let addr = free_addr();
    let token_file = dir.path().join("token");
    let agent = Agent::start(
        dir.path(),
        &borrowed(&vars),
        &[
            "--listen",
            &addr.to_string(),
            "--token-file",
            token_file.to_str().unwrap(),
            "--log-format",
            "json",
        ],
    );
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().mode() & 0o777,
        0o600
    );
    let token = std::fs::read_to_string(&token_file).unwrap();
    let bearer = format!("Bearer {token}");
    let host = addr.to_string();
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16);
    let cases: [Case<'_>; 6] = [
        ("no token", vec![("Host", &host)], 401),
        (
            "wrong token",
            vec![
                ("Host", &host),
                ("Authorization", "Bearer 0000000000000000"),
            ],
            401,
        ),
        (
            "X-Forwarded-For",
            vec![
                ("Host", &host),
                ("Authorization", &bearer),
                ("X-Forwarded-For", "10.1.2.3"),
            ],
            400,
        ),
        (
            "Forwarded",
            vec![
                ("Host", &host),
                ("Authorization", &bearer),
                ("Forwarded", "for=10.1.2.3"),
            ],
            400,
        ),
        (
            "foreign Host",
            vec![("Host", "attacker.example:80"), ("Authorization", &bearer)],
            403,
        ),
        ("no Host", vec![("Authorization", &bearer)], 403),
    ];
    for (what, headers, want) in &cases {
        let (status, body) = tcp(addr, "/v1/secret", headers);
        assert_eq!(status, *want, "{what}: {body}");
        assert!(
            !body.contains(PASSWORD) && !body.contains(token.trim()),
            "{what}: {body}"
        );
    }
    // The control: the right token, a loopback Host.
    let (status, body) = tcp(
        addr,
        "/v1/secret",
        &[("Host", &host), ("Authorization", &bearer)],
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(PASSWORD));
    // Liveness needs no token.
    assert_eq!(tcp(addr, "/healthz", &[("Host", &host)]).0, 200);

    // The provider over TCP, with and without the right token file.
    let url = format!("http://{addr}");
    let good = token_file.display().to_string();
    let output = client(&[
        ("MLFLOW_SECRETS_AGENT", &url),
        ("MLFLOW_SECRETS_AGENT_TOKEN_FILE", &good),
    ])
    .output()
    .unwrap();
    assert_eq!(
        text(&output).0.trim(),
        basic_line(USER, PASSWORD),
        "{}",
        text(&output).1
    );
    let wrong = dir.path().join("wrong-token");
    std::fs::write(&wrong, "0123456789abcdef0123").unwrap();
    let output = client(&[
        ("MLFLOW_SECRETS_AGENT", &url),
        ("MLFLOW_SECRETS_AGENT_TOKEN_FILE", wrong.to_str().unwrap()),
    ])
    .output()
    .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr.contains("refused this client")
            && stderr.contains("MLFLOW_SECRETS_AGENT_TOKEN_FILE"),
        "{stderr}"
    );
    assert!(!stdout.contains(PASSWORD) && !stderr.contains("0123456789abcdef0123"));

    // Every log line is JSON, and none carries the secret or the token.
    let log = agent.log_text();
    assert!(!log.is_empty());
    for line in log.lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "{line}"
        );
        assert!(
            !line.contains(PASSWORD) && !line.contains(token.trim()),
            "{line}"
        );
    }
}

#[test]
fn a_non_loopback_listen_address_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (_, vars) = file_vars(dir.path(), "secret", PASSWORD);
    for listen in ["0.0.0.0:0", "[::]:0"] {
        let output = Command::new(BIN)
            .env_clear()
            .envs(borrowed(&vars))
            .args(["agent", "--socket"])
            .arg(dir.path().join("run/agent.sock"))
            .args(["--listen", listen, "--token-file"])
            .arg(dir.path().join("token"))
            .output()
            .unwrap();
        let (_, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(1), "{listen}: {stderr}");
        assert!(
            stderr.contains("only loopback addresses"),
            "{listen}: {stderr}"
        );
        assert!(
            !dir.path().join("token").exists(),
            "{listen}: refused before a token is written for it"
        );
    }
}

#[test]
fn killed_agent_fails_over_and_a_restarted_one_is_used_again() {
    let dir = tempfile::tempdir().unwrap();
    let (_, agent_vars) = file_vars(dir.path(), "agent-secret", PASSWORD);
    let (_, direct_vars) = file_vars(dir.path(), "direct-secret", DIRECT_PASSWORD);
    let agent = Agent::start(dir.path(), &borrowed(&agent_vars), &[]);
    let address = agent.address();
    let mut with_direct = borrowed(&direct_vars);
    with_direct.push(("MLFLOW_SECRETS_AGENT", &address));
    let header = |vars: &[(&str, &str)]| {
        let output = client(vars).output().unwrap();
        (output.status.code(), text(&output))
    };
    assert_eq!(header(&with_direct).1.0.trim(), basic_line(USER, PASSWORD));

    let socket = agent.socket.clone();
    drop(agent); // SIGKILL: the socket file stays behind.
    assert!(socket.exists());
    let (code, (stdout, stderr)) = header(&with_direct);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stdout.trim(),
        basic_line(USER, DIRECT_PASSWORD),
        "failed over to the file"
    );
    let (code, (_, stderr)) = header(&[("MLFLOW_SECRETS_AGENT", &address)]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("agent") && stderr.contains("unreachable"),
        "{stderr}"
    );

    // A new agent replaces the dead one's socket; clients use it again.
    let agent = Agent::start(dir.path(), &borrowed(&agent_vars), &[]);
    assert_eq!(header(&with_direct).1.0.trim(), basic_line(USER, PASSWORD));
    // A second agent on a live socket refuses to start.
    let output = Command::new(BIN)
        .env_clear()
        .envs(borrowed(&agent_vars))
        .args(["agent", "--socket"])
        .arg(&agent.socket)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).1.contains("in use by a running server"),
        "{}",
        text(&output).1
    );
    // SIGTERM: exit 0, the socket removed.
    assert_eq!(agent.terminate(), Some(0));
    assert!(!socket.exists());
}

#[test]
fn readyz_is_false_before_a_first_fetch_against_a_down_backend() {
    let dir = tempfile::tempdir().unwrap();
    let closed = free_addr();
    let mut vars = aws_vars(&format!("http://{closed}"), "nothing");
    vars.push(("MLFLOW_SECRETS_MAX_RETRIES", "0".to_owned()));
    vars.push(("MLFLOW_SECRETS_REQUEST_TIMEOUT_SEC", "1".to_owned()));
    let agent = Agent::start(dir.path(), &borrowed(&vars), &[]);
    assert_eq!(get(&agent.socket, "/healthz").0, 200);
    let (status, body) = get(&agent.socket, "/readyz");
    assert_eq!(status, 503, "{body}");
    let (status, body) = get(&agent.socket, "/v1/secret");
    assert_eq!(status, 503, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["kind"], "transient", "{body}");
}

#[test]
fn a_backend_outage_is_bridged_with_the_cached_value() {
    let Some(moto) = MotoServer::start("agent: outage") else {
        return;
    };
    moto.create_secret("agent-outage", &format!("{USER}:{PASSWORD}"));
    let proxy = FaultProxy::start(moto.addr());
    let dir = tempfile::tempdir().unwrap();
    let mut vars = aws_vars(&proxy.url(), "agent-outage");
    vars.push(("MLFLOW_SECRETS_MAX_RETRIES", "0".to_owned()));
    let agent = Agent::start(dir.path(), &borrowed(&vars), &[]);
    let address = agent.address();
    assert_eq!(get(&agent.socket, "/v1/secret").0, 200);
    proxy.inject(Fault::new("/", 503, "down"));
    // Cleared while the backend is down: the refetch fails, the old value stays.
    let output = Command::new(BIN)
        .env_clear()
        .env("MLFLOW_SECRETS_AGENT", &address)
        .args(["cache", "clear"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{:?}", text(&output));
    let output = client(&[("MLFLOW_SECRETS_AGENT", &address)])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(stdout.trim(), basic_line(USER, PASSWORD));
    assert!(proxy.answered() >= 1, "the backend was asked and failed");
    let (_, body) = get(&agent.socket, "/v1/status");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        status["counters"]["stale_served"].as_u64().unwrap() >= 1,
        "{status}"
    );
    assert_eq!(
        get(&agent.socket, "/readyz").0,
        200,
        "a stale value is a usable value"
    );
    // A stale answer is valid for one second only: clients ask again soon,
    // rather than caching it for a TTL.
    let (code, body) = get(&agent.socket, "/v1/secret");
    assert_eq!(code, 200);
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        answer["valid_for_secs"].as_f64(),
        Some(1.0),
        "{}",
        answer["provider"]
    );
}

#[test]
fn connections_over_the_cap_get_503_and_slow_clients_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let (_, vars) = file_vars(dir.path(), "secret", PASSWORD);
    let agent = Agent::start(
        dir.path(),
        &borrowed(&vars),
        &["--max-connections", "2", "--read-timeout", "60"],
    );
    // Two kept-alive clients take the two slots: the second one's scrape
    // counts two open connections (the start-up probes' are gone).
    let scrape = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let deadline = Instant::now() + HANG_GUARD;
    let holders = loop {
        let mut first = UnixStream::connect(&agent.socket).unwrap();
        let mut second = UnixStream::connect(&agent.socket).unwrap();
        let (one, two) = (answer(&mut first, scrape), answer(&mut second, scrape));
        if one.status == 200
            && two.status == 200
            && two
                .body
                .contains("mlflow_secrets_agent_open_connections 2\n")
        {
            break [first, second];
        }
        assert!(Instant::now() < deadline, "the slots never came free");
        std::thread::sleep(Duration::from_millis(20));
    };
    let (status, body) = get(&agent.socket, "/v1/secret");
    assert_eq!(status, 503, "{body}");
    assert!(!body.contains(PASSWORD));
    drop(holders);
    // Once they are gone the agent serves again.
    let deadline = Instant::now() + HANG_GUARD;
    while get(&agent.socket, "/v1/secret").0 != 200 {
        assert!(Instant::now() < deadline, "the agent did not recover");
        std::thread::sleep(Duration::from_millis(50));
    }

    // A client sending its headers a byte at a time is cut off by the
    // read timeout (1 s), long before it finishes.
    let agent = Agent::start_at(
        &dir.path().join("run/slow.sock"),
        dir.path(),
        &borrowed(&vars),
        &["--read-timeout", "1"],
    );
    let mut slow = UnixStream::connect(&agent.socket).unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let request = b"GET /v1/secret HTTP/1.1\r\nHost: localhost\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut closed = false;
    for byte in request {
        if slow.write_all(&[*byte]).is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 256];
        match slow.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                assert!(!text.contains(PASSWORD), "{text}");
                closed = true;
                break;
            }
            Err(_) => {}
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(closed, "the slow client was never cut off");
    // And the agent serves the next client.
    let deadline = Instant::now() + HANG_GUARD;
    while get(&agent.socket, "/v1/secret").0 != 200 {
        assert!(Instant::now() < deadline, "the agent did not recover");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `program args…` run as uid and gid 65534.
fn as_uid_65534(program: &str) -> Command {
    let mut command = Command::new("setpriv");
    command.args(["--reuid=65534", "--regid=65534", "--clear-groups", program]);
    command
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

fn chown_65534(path: &Path) {
    let status = Command::new("chown")
        .arg("65534:65534")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

/// A directory in `dir` with `mode`, owned by root (this test's uid).
fn dir_with_mode(dir: &Path, name: &str, bits: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::create_dir(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(bits)).unwrap();
    path
}

#[test]
fn socket_directories_are_checked_never_changed_and_a_pods_empty_dir_works() {
    assert_eq!(own_uid(), 0, "these tests run as root (CI does)");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (secret, vars) = file_vars(dir.path(), "secret", PASSWORD);
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();

    // A shared sticky directory such as /tmp: used as it is (it used to
    // be made 0700, locking every other user out).
    let sticky = dir_with_mode(dir.path(), "tmp", 0o1777);
    let agent = Agent::start_at(
        &sticky.join("agent.sock"),
        dir.path(),
        &borrowed(&vars),
        &[],
    );
    assert_eq!(mode(&sticky), 0o1777);
    drop(agent);

    // The shape of a pod's emptyDir: root's, 0777; the agent and its
    // client run as another uid.
    let empty = dir_with_mode(dir.path(), "emptydir", 0o777);
    let socket = empty.join("agent.sock");
    let log = dir.path().join("nobody-agent.log");
    let child = as_uid_65534(BIN)
        .env_clear()
        .envs(borrowed(&vars))
        .args(["agent", "--socket"])
        .arg(&socket)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let agent = Agent {
        child,
        socket: socket.clone(),
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "{}", agent.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = as_uid_65534(BIN)
        .args(["header", "--url", "http://127.0.0.1:5000/"])
        .env_clear()
        .env("MLFLOW_SECRETS_ALLOWED_HOSTS", "127.0.0.1")
        .env("MLFLOW_SECRETS_AGENT", agent.address())
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(stdout.trim(), basic_line(USER, PASSWORD), "{stderr}");
    assert_eq!(mode(&empty), 0o777);
    assert_eq!(std::fs::metadata(&empty).unwrap().uid(), 0);
    drop(agent);

    // Another user's directory that others may write in: refused, unchanged.
    let theirs = dir_with_mode(dir.path(), "theirs", 0o777);
    chown_65534(&theirs);
    // As root: not our directory. As its owner: others may write in it.
    for (mut command, refusal) in [
        (Command::new(BIN), "belongs to uid 65534"),
        (as_uid_65534(BIN), "chmod go-w"),
    ] {
        let output = command
            .env_clear()
            .envs(borrowed(&vars))
            .args(["agent", "--socket"])
            .arg(theirs.join("agent.sock"))
            .output()
            .unwrap();
        let (_, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(refusal), "{stderr}");
    }
    assert_eq!(mode(&theirs), 0o777);
    assert!(!theirs.join("agent.sock").exists());
}

fn own_uid() -> u32 {
    std::fs::metadata("/proc/self").unwrap().uid()
}

/// A listener squatting on the agent's TCP port: it answers every request
/// on a connection with 200 and a fixed 64-character body (so a client
/// taking it for a challenge signs it) and records every request head.
fn tcp_squatter() -> (SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::BufRead;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&heads);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut writer = stream;
            loop {
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    head.push_str(&line);
                    if line == "\r\n" {
                        break;
                    }
                }
                if head.is_empty() {
                    break;
                }
                seen.lock().unwrap().push(head);
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: 64\r\n\r\n{}",
                    "a".repeat(64)
                );
                if writer.write_all(answer.as_bytes()).is_err() {
                    break;
                }
            }
        }
    });
    (addr, heads)
}

#[test]
fn clients_never_hand_the_token_to_a_listener_squatting_in_the_agents_place() {
    let dir = tempfile::tempdir().unwrap();
    let token = "tok-agent-squat-8d2e61f0a9b7c3e5";
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, token).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let token_path = token_file.display().to_string();

    // On TCP: the squatter sees a challenge request and a signature of its
    // own challenge, never the token.
    let (addr, heads) = tcp_squatter();
    let url = format!("http://{addr}");
    let output = client(&[
        ("MLFLOW_SECRETS_AGENT", &url),
        ("MLFLOW_SECRETS_AGENT_TOKEN_FILE", &token_path),
    ])
    .output()
    .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    let heads = heads.lock().unwrap().clone();
    assert_eq!(
        heads.len(),
        2,
        "a challenge, then the signed request: {heads:#?}"
    );
    assert!(heads.iter().all(|h| !h.contains(token)), "{heads:#?}");
    let signed = heads[1]
        .lines()
        .find_map(|l| l.strip_prefix("authorization: "))
        .expect("the request is signed")
        .to_owned();
    assert!(signed.starts_with("MSA-HMAC-SHA256 "), "{signed}");

    // What the squatter got is worth nothing to the real agent: replayed
    // alone, or after a fresh challenge on the same connection.
    let (_, vars) = file_vars(dir.path(), "secret", PASSWORD);
    let listen = free_addr();
    let agent = Agent::start(
        dir.path(),
        &borrowed(&vars),
        &["--listen", &listen.to_string(), "--token-file", &token_path],
    );
    let host = listen.to_string();
    let (status, body) = tcp(
        listen,
        "/v1/secret",
        &[("Host", &host), ("Authorization", &signed)],
    );
    assert_eq!(status, 401, "{body}");
    let mut stream = TcpStream::connect(listen).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(stream, "GET /v1/challenge HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
    let mut first = [0u8; 4096];
    let n = stream.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    write!(
        stream,
        "GET /v1/secret HTTP/1.1\r\nHost: {host}\r\nAuthorization: {signed}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut rest = String::new();
    let _ = stream.read_to_string(&mut rest);
    assert!(rest.starts_with("HTTP/1.1 401"), "{rest}");
    assert!(!rest.contains(PASSWORD));
    // A stand-in on another address relaying both ways to the real agent:
    // the client signs for the address it dialled, the agent refuses it.
    let relay = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let carried = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let back = std::sync::Arc::clone(&carried);
    std::thread::spawn(move || {
        for client in relay.incoming().flatten() {
            let agent = TcpStream::connect(listen).unwrap();
            let (mut client_read, mut agent_write) =
                (client.try_clone().unwrap(), agent.try_clone().unwrap());
            std::thread::spawn(move || std::io::copy(&mut client_read, &mut agent_write));
            let (mut agent_read, mut client_write) = (agent, client);
            let back = std::sync::Arc::clone(&back);
            std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                while let Ok(n) = agent_read.read(&mut buffer) {
                    if n == 0 || client_write.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                    back.lock().unwrap().extend_from_slice(&buffer[..n]);
                }
            });
        }
    });
    let output = client(&[
        ("MLFLOW_SECRETS_AGENT", &format!("http://{relay_addr}")),
        ("MLFLOW_SECRETS_AGENT_TOKEN_FILE", &token_path),
    ])
    .output()
    .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("refused this client"), "{stderr}");
    let relayed = String::from_utf8_lossy(&carried.lock().unwrap()).into_owned();
    assert!(relayed.contains("HTTP/1.1 401"), "{relayed}");
    assert!(!relayed.contains(PASSWORD) && !stdout.contains(PASSWORD));
    // The real client with the same token file is served.
    let output = client(&[
        ("MLFLOW_SECRETS_AGENT", &format!("http://{listen}")),
        ("MLFLOW_SECRETS_AGENT_TOKEN_FILE", &token_path),
    ])
    .output()
    .unwrap();
    assert_eq!(
        text(&output).0.trim(),
        basic_line(USER, PASSWORD),
        "{}",
        text(&output).1
    );
    drop(agent);

    // On the socket: a listener of another uid at the agent's path gets
    // nothing; named as the agent's uid, it is talked to.
    let run = dir_with_mode(dir.path(), "run-squat", 0o777);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = run.join("agent.sock");
    let record = run.join("received");
    let script = r"
        use Socket;
        my ($path, $record) = @ARGV;
        socket(my $s, PF_UNIX, SOCK_STREAM, 0) or die;
        bind($s, pack_sockaddr_un($path)) or die;
        chmod 0666, $path;
        listen($s, 8) or die;
        while (accept(my $c, $s)) {
            my ($data, $rin) = ('', '');
            vec($rin, fileno($c), 1) = 1;
            sysread($c, $data, 65536) if select(my $rout = $rin, undef, undef, 5);
            open(my $f, '>>', $record) or die;
            print $f $data;
            close $f;
            close $c;
        }
    ";
    let mut squatter = as_uid_65534("perl")
        .args(["-e", script])
        .arg(&socket)
        .arg(&record)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "the squatter did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let address = format!("unix:{}", socket.display());
    let output = client(&[("MLFLOW_SECRETS_AGENT", &address)])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("served by uid 65534"), "{stderr}");
    assert!(stderr.contains("MLFLOW_SECRETS_AGENT_UID"), "{stderr}");
    let output = client(&[
        ("MLFLOW_SECRETS_AGENT", &address),
        ("MLFLOW_SECRETS_AGENT_UID", "65534"),
    ])
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let _ = squatter.kill();
    let _ = squatter.wait();
    // Only the client told to trust uid 65534 sent it anything.
    let received = std::fs::read_to_string(&record).unwrap_or_default();
    assert_eq!(
        received.matches("GET /v1/secret").count(),
        1,
        "{received:?}"
    );
}

#[test]
fn a_worker_with_only_the_agent_is_told_what_the_agent_serves() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut vars) = file_vars(dir.path(), "secret", PASSWORD);
    vars.push(("MLFLOW_FILE_TTL_SEC", "300".to_owned()));
    // The agent sends the credential to no host: the allowlist is its
    // clients' business, and it does not warn about it.
    let agent = Agent::start(dir.path(), &borrowed(&vars), &[]);
    let worker = |command: &str| {
        let output = Command::new(BIN)
            .env_clear()
            .env("MLFLOW_SECRETS_AGENT", agent.address())
            .env("MLFLOW_SECRETS_ALLOWED_HOSTS", "127.0.0.1")
            .arg(command)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{command}: {output:?}");
        let (stdout, stderr) = text(&output);
        format!("{stdout}{stderr}")
    };
    for command in ["info", "doctor"] {
        let said = worker(command);
        assert!(!said.contains("no provider is enabled"), "{said}");
        assert!(said.contains(&agent.address()), "{said}");
        // The agent's provider, mode and TTL, not this process's defaults.
        assert!(
            said.contains("serves file [basic mode, TTL 300s]"),
            "{command}: {said}"
        );
        assert!(
            !said.contains("bearer") && !said.contains("TTL 3600s"),
            "{command}: {said}"
        );
    }
    let output = client(&[("MLFLOW_SECRETS_AGENT", &agent.address())])
        .output()
        .unwrap();
    assert_eq!(
        text(&output).0.trim(),
        basic_line(USER, PASSWORD),
        "{}",
        text(&output).1
    );
    assert!(
        !agent.log_text().contains("MLFLOW_SECRETS_ALLOWED_HOSTS"),
        "{}",
        agent.log_text()
    );
}

#[test]
fn twenty_client_processes_share_one_oauth_token_request() {
    use secrets_testkit::oidc::{OidcClient, OidcServer};
    let client = OidcClient::new("node-client", "node-client-secret-5", "client_secret_basic");
    let Some(idp) = OidcServer::start_one(
        "agent: one OAuth2 token for the node",
        &client,
        Duration::from_secs(600),
    ) else {
        return;
    };
    // Token requests counted where they arrive.
    let counted = FaultProxy::start(idp.addr());
    let dir = tempfile::tempdir().unwrap();
    let stored = client.store_in(dir.path());
    let token_url = format!("{}/token", counted.url());
    let agent = Agent::start(
        dir.path(),
        &[
            ("MLFLOW_SECRETS_AUTH_ENABLE", "file"),
            ("MLFLOW_SECRETS_FILE_PATH", &stored),
            ("MLFLOW_SECRETS_OAUTH_TOKEN_URL", &token_url),
        ],
        &[],
    );
    let address = agent.address();
    let headers: std::collections::HashSet<String> =
        headers_from_clients(20, &address).into_iter().collect();
    assert_eq!(headers.len(), 1, "one token for every process: {headers:?}");
    let header = headers.into_iter().next().unwrap();
    let token = header
        .strip_prefix("Authorization: Bearer ")
        .unwrap_or_else(|| panic!("a Bearer header: {header}"));
    assert!(idp.issued_to(token, "node-client"), "the IdP issued it");
    assert_eq!(counted.forwarded(), 1, "20 processes, one token request");
    assert!(!agent.log_text().contains("node-client-secret-5"));
}
