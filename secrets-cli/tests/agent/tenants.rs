//! A shared machine: one agent serves each Unix user the secret its tenants
//! file maps them to, keeps an audit trail, and reads the file again on
//! SIGHUP. Other users are the system's own accounts (daemon, bin, sys,
//! nobody) reached with `setpriv`; their clients are the CLI's processes.

use std::io::BufRead as _;

use super::*;

/// The accounts the tests act as (Debian's base system has them).
const DAEMON: u32 = 1;
const BIN_UID: u32 = 2;
const SYS: u32 = 3;
const NOBODY: u32 = 65534;

/// Each account's password in its file.
fn password_of(user: &str) -> String {
    format!("pw-tenant-{user}-5c8e")
}

/// A shared directory (0755) holding one credential file per user, the
/// agent's socket directory and its tenants file mapping daemon (by name),
/// the group bin (by group) and nobody (by uid) to `cred-{user}`.
struct Machine {
    dir: tempfile::TempDir,
    tenants: PathBuf,
    socket: PathBuf,
}

impl Machine {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        for user in ["daemon", "bin", "nobody", "root", "other"] {
            std::fs::write(
                dir.path().join(format!("cred-{user}")),
                format!("{user}:{}", password_of(user)),
            )
            .unwrap();
        }
        let tenants = dir.path().join("tenants.toml");
        let machine = Self {
            tenants,
            socket: dir.path().join("run/agent.sock"),
            dir,
        };
        machine.write_tenants(&machine.tenants_text("cred-{user}"));
        machine
    }

    fn tenants_text(&self, file: &str) -> String {
        let dir = self.dir.path().display();
        format!(
            r#"
[[tenant]]
name = "daemon"
users = ["daemon"]
secret = "{dir}/{file}"

[[tenant]]
name = "bin-group"
groups = ["bin"]
secret = "{dir}/{file}"

[[tenant]]
name = "nobody"
uids = [65534]
secret = "{dir}/{file}"
auth_mode = "basic"
"#
        )
    }

    fn write_tenants(&self, text: &str) {
        std::fs::write(&self.tenants, text).unwrap();
    }

    /// The agent, its own secret `cred-root`, with the tenants file.
    fn agent(&self, args: &[&str]) -> Agent {
        let own = self.dir.path().join("cred-root").display().to_string();
        let vars = [
            ("MLFLOW_SECRETS_AUTH_ENABLE", "file"),
            ("MLFLOW_SECRETS_FILE_PATH", own.as_str()),
            ("MLFLOW_FILE_AUTH_MODE", "basic"),
        ];
        let mut all = vec!["--tenants", self.tenants.to_str().unwrap()];
        all.extend_from_slice(args);
        Agent::start_at(&self.socket, self.dir.path(), &vars, &all)
    }

    fn address(&self) -> String {
        format!("unix:{}", self.socket.display())
    }

    /// The agent with the tenants file, which must refuse to start: its stderr.
    fn refused_at_start(&self) -> String {
        let output = Command::new(BIN)
            .env_clear()
            .env("MLFLOW_SECRETS_AUTH_ENABLE", "file")
            .env(
                "MLFLOW_SECRETS_FILE_PATH",
                self.dir.path().join("cred-root"),
            )
            .args(["agent", "--socket"])
            .arg(&self.socket)
            .arg("--tenants")
            .arg(&self.tenants)
            .output()
            .unwrap();
        let (_, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        stderr
    }
}

/// The CLI run as `uid` (and its gid), a client of the agent at `address`.
fn as_user(uid: u32, address: &str, args: &[&str]) -> Command {
    let mut command = Command::new("setpriv");
    command
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .args(["--clear-groups", BIN])
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("MLFLOW_SECRETS_ALLOWED_HOSTS", "127.0.0.1")
        .env("MLFLOW_SECRETS_AGENT", address);
    command
}

/// 20 `header` processes each as daemon, bin and nobody at once: each must
/// print its own user's credential.
fn twenty_clients_per_user_each_get_their_own(address: &str) {
    let mut children = Vec::new();
    for (uid, user) in [(DAEMON, "daemon"), (BIN_UID, "bin"), (NOBODY, "nobody")] {
        for _ in 0..20 {
            let child = as_user(uid, address, &header_args())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            children.push((user, child));
        }
    }
    for (user, child) in children {
        let output = child.wait_with_output().unwrap();
        let (stdout, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(0), "{user}: {stderr}");
        assert_eq!(
            stdout.trim(),
            basic_line(user, &password_of(user)),
            "{user}"
        );
    }
}

fn header_args() -> [&'static str; 3] {
    ["header", "--url", "http://127.0.0.1:5000/"]
}

/// `curl` run as `uid` against the socket: status and body.
fn curl_as(uid: u32, socket: &Path, path: &str) -> (u16, String) {
    let output = Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .args([
            "--clear-groups",
            "curl",
            "-s",
            "-w",
            "\n%{http_code}",
            "--unix-socket",
        ])
        .arg(socket)
        .arg(format!("http://localhost{path}"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// Every password of the machine: none may appear where a tenant must not see it.
fn all_passwords() -> Vec<String> {
    ["daemon", "bin", "nobody", "root", "other"]
        .iter()
        .map(|u| password_of(u))
        .collect()
}

#[test]
fn each_user_gets_its_own_credential_and_twenty_processes_make_one_fetch_per_tenant() {
    let machine = Machine::new();
    let agent = machine.agent(&[]);
    // The socket is shared (the uid map is the gate).
    assert_eq!(
        std::fs::metadata(&machine.socket).unwrap().mode() & 0o777,
        0o666
    );
    let address = machine.address();
    twenty_clients_per_user_each_get_their_own(&address);
    // The agent's own uid keeps the agent's own configuration.
    let output = client(&[("MLFLOW_SECRETS_AGENT", &address)])
        .output()
        .unwrap();
    assert_eq!(
        text(&output).0.trim(),
        basic_line("root", &password_of("root"))
    );
    // One fetch per tenant: each tenant's own status says so.
    for uid in [DAEMON, BIN_UID, NOBODY] {
        let output = as_user(uid, &address, &["cache", "status", "--json"])
            .output()
            .unwrap();
        let (stdout, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(0), "{stderr}");
        let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(status["counters"]["fetches"], 1, "uid {uid}: {stdout}");
    }
    drop(agent);
}

#[test]
fn an_unmapped_uid_is_refused_and_no_tenant_sees_another() {
    let machine = Machine::new();
    let agent = machine.agent(&[]);
    let address = machine.address();

    // sys is in no tenant: refused, as a foreign uid always was.
    let output = as_user(SYS, &address, &header_args()).output().unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("refused this client"), "{stderr}");
    let (status, body) = curl_as(SYS, &machine.socket, "/v1/secret");
    assert_eq!(status, 403, "{body}");
    for password in all_passwords() {
        assert!(!stdout.contains(&password) && !stderr.contains(&password));
        assert!(!body.contains(&password));
    }

    // daemon is served; its status, its secret and its cache clear are its own.
    let (status, body) = curl_as(DAEMON, &machine.socket, "/v1/secret");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&password_of("daemon")));
    let (status, body) = curl_as(DAEMON, &machine.socket, "/v1/status");
    assert_eq!(status, 200, "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["tenant"], "daemon");
    assert!(seen.get("tenants").is_none(), "{body}");
    for other in ["bin", "nobody", "cred-root", "bin-group"] {
        assert!(!body.contains(other), "{other} in {body}");
    }
    let (status, body) = curl_as(DAEMON, &machine.socket, "/metrics");
    assert_eq!(status, 403, "{body}");
    let output = as_user(DAEMON, &address, &["cache", "status"])
        .output()
        .unwrap();
    let (stdout, _) = text(&output);
    assert!(stdout.contains("daemon"), "{stdout}");
    assert!(
        !stdout.contains("nobody") && !stdout.contains("cred-root"),
        "{stdout}"
    );

    // daemon's `cache clear` refetches daemon's secret only.
    let output = as_user(DAEMON, &address, &["cache", "clear"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output).1);
    let (_, body) = curl_as(DAEMON, &machine.socket, "/v1/status");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["counters"]["fetches"], 2, "{body}");

    // The agent's own uid sees every tenant, and the metrics by tenant name.
    let (status, body) = get(&agent.socket, "/v1/status");
    assert_eq!(status, 200);
    let all: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(all["tenants"]["uids"], 3, "{body}");
    assert_eq!(all["tenants"]["names"].as_array().unwrap().len(), 3);
    let caches = all["tenants"]["caches"].as_array().unwrap();
    assert_eq!(caches.len(), 1, "daemon's only: {body}");
    assert_eq!(caches[0]["tenant"], "daemon");
    assert_eq!(
        all["counters"]["fetches"], 1,
        "the agent's own cache warmed at start, not refetched by daemon's clear: {body}"
    );
    let (status, metrics) = get(&agent.socket, "/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains(r#"mlflow_secrets_agent_tenant_secrets_served_total{tenant="daemon"} 1"#),
        "{metrics}"
    );
    assert!(!metrics.contains("uid"), "no raw uid as a label: {metrics}");
    for password in all_passwords() {
        assert!(!body.contains(&password) && !metrics.contains(&password));
    }

    // nobody's file replaced (by root) with a symlink into a directory
    // nobody owns: never read again, whatever nobody points it at.
    let theirs = machine.dir.path().join("home-nobody");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::write(theirs.join("cred"), "nobody:from-their-own-dir").unwrap();
    chown_65534(&theirs);
    let cred = machine.dir.path().join("cred-nobody");
    std::fs::remove_file(&cred).unwrap();
    std::os::unix::fs::symlink(theirs.join("cred"), &cred).unwrap();
    let (status, body) = curl_as(NOBODY, &machine.socket, "/v1/secret");
    assert_eq!(status, 502, "{body}");
    assert!(!body.contains("from-their-own-dir"), "{body}");
    assert!(agent.log_text().contains("a tenant's file is not read"));
}

#[test]
fn the_audit_log_has_one_line_per_hand_out_and_refusal_and_never_a_secret() {
    let machine = Machine::new();
    let log = machine.dir.path().join("audit/agent.jsonl");
    std::fs::create_dir(log.parent().unwrap()).unwrap();
    let agent = machine.agent(&["--audit-log", log.to_str().unwrap()]);
    let address = machine.address();

    let mut expected = Vec::new();
    for (uid, outcome) in [
        (DAEMON, "served"),
        (NOBODY, "served"),
        (SYS, "refused"),
        (BIN_UID, "served"),
    ] {
        let child = as_user(uid, &address, &header_args())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        expected.push((uid, child.id(), outcome));
        child.wait_with_output().unwrap();
    }
    let own = client(&[("MLFLOW_SECRETS_AGENT", &address)])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    expected.push((0, own.id(), "served"));
    own.wait_with_output().unwrap();

    let deadline = Instant::now() + HANG_GUARD;
    let lines = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.lines().count() >= expected.len() || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        std::fs::metadata(&log).unwrap().mode() & 0o777,
        0o600,
        "private"
    );
    let records: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(records.len(), expected.len(), "{lines}");
    let exe = std::fs::canonicalize(BIN).unwrap();
    for (uid, pid, outcome) in expected {
        let record = records
            .iter()
            .find(|r| r["pid"] == pid)
            .unwrap_or_else(|| panic!("no record of pid {pid}: {lines}"));
        assert_eq!(record["uid"], uid, "{record}");
        assert_eq!(record["outcome"], outcome, "{record}");
        assert_eq!(record["exe"], exe.display().to_string(), "{record}");
        assert!(record["time"].as_str().unwrap().ends_with('Z'), "{record}");
        match outcome {
            "served" if uid != 0 => {
                assert!(
                    record["fingerprint"]
                        .as_str()
                        .is_some_and(|f| f.len() == 16)
                );
                assert!(
                    record["secret"]
                        .as_str()
                        .unwrap()
                        .ends_with(&format!("cred-{}", record["user"].as_str().unwrap()))
                );
                assert!(record["tenant"].is_string());
            }
            "refused" => assert_eq!(record["user"], "sys"),
            _ => {}
        }
    }
    for password in all_passwords() {
        assert!(!lines.contains(&password), "a value in the audit log");
    }

    // A flood of refusals from one uid is a burst of 10 records, then one
    // per 10 s; every refusal is either written or counted as held back.
    let started = Instant::now();
    for _ in 0..100 {
        assert_eq!(curl_as(SYS, &machine.socket, "/v1/secret").0, 403);
    }
    let seconds = started.elapsed().as_secs();
    let deadline = Instant::now() + HANG_GUARD;
    let (from_sys, held) = loop {
        let written = std::fs::read_to_string(&log).unwrap();
        let from_sys = written
            .lines()
            .filter(|l| l.contains(r#""uid":3,"#))
            .count() as u64;
        let (_, metrics) = get(&agent.socket, "/metrics");
        let held: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("mlflow_secrets_agent_audit_suppressed_total "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        if from_sys + held == 101 || Instant::now() > deadline {
            break (from_sys, held);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(from_sys + held, 101, "{from_sys} written, {held} held back");
    assert!(
        from_sys <= 10 + seconds / 10 + 2,
        "{from_sys} lines in {seconds} s"
    );

    // An audit log that cannot be written does not stop service; its
    // failures are counted.
    drop(agent);
    std::fs::remove_file(&log).unwrap();
    std::fs::create_dir(&log).unwrap();
    let agent = machine.agent(&["--audit-log", log.to_str().unwrap()]);
    let output = as_user(DAEMON, &address, &header_args()).output().unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(stdout.trim(), basic_line("daemon", &password_of("daemon")));
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        let (_, metrics) = get(&agent.socket, "/metrics");
        if metrics.contains("mlflow_secrets_agent_audit_write_failures_total 2") {
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(agent.log_text().contains("cannot write the audit log"));
}

#[test]
fn sighup_applies_a_new_tenants_file_and_keeps_the_old_one_when_broken() {
    let machine = Machine::new();
    let agent = machine.agent(&[]);
    let address = machine.address();
    let header_of = |uid: u32| {
        let output = as_user(uid, &address, &header_args()).output().unwrap();
        text(&output).0.trim().to_owned()
    };
    assert_eq!(
        header_of(DAEMON),
        basic_line("daemon", &password_of("daemon"))
    );
    let hangup = || {
        let status = Command::new("kill")
            .args(["-HUP", &agent.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    // Connections held open across the reload are not dropped: the agent's
    // own, and nobody's — which the new file no longer maps.
    let held = UnixStream::connect(&machine.socket).unwrap();
    let go = machine.dir.path().join("go");
    let mut nobody = Command::new("setpriv")
        .arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        // The system Python: an interpreter other users may run.
        .args([
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            KEEP_ALIVE_CLIENT,
        ])
        .arg(&machine.socket)
        .arg(&go)
        .stdout(Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3");
    let mut answers = std::io::BufReader::new(nobody.stdout.take().unwrap()).lines();
    assert_eq!(answers.next().unwrap().unwrap(), "200");

    let daemon_and_bin = machine.tenants_text("cred-other");
    let daemon_and_bin = &daemon_and_bin[..daemon_and_bin
        .find("[[tenant]]\nname = \"nobody\"")
        .unwrap()];
    machine.write_tenants(daemon_and_bin);
    hangup();
    let deadline = Instant::now() + HANG_GUARD;
    while !agent.log_text().contains("tenants file read again") {
        assert!(Instant::now() < deadline, "{}", agent.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        header_of(DAEMON),
        basic_line("other", &password_of("other"))
    );
    let raw = exchange(
        held,
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(raw.status, 200);
    // nobody's next request on its open connection is refused, never
    // answered with the agent's own credential.
    std::fs::write(&go, "").unwrap();
    assert_eq!(answers.next().unwrap().unwrap(), "403");
    assert!(nobody.wait().unwrap().success());
    assert_eq!(header_of(NOBODY), "", "a new connection is refused too");

    machine.write_tenants("[[tenant]]\nusers = [\"daemon\"]\nsecrett = \"x\"\n");
    hangup();
    let deadline = Instant::now() + HANG_GUARD;
    while !agent.log_text().contains("previous mapping stays") {
        assert!(Instant::now() < deadline, "{}", agent.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(agent.log_text().contains("secrett"), "{}", agent.log_text());
    assert_eq!(
        header_of(DAEMON),
        basic_line("other", &password_of("other"))
    );
    assert_eq!(
        header_of(BIN_UID),
        basic_line("other", &password_of("other"))
    );
    assert_eq!(header_of(NOBODY), "");

    // A tenant that cannot be served (its file's directory is nobody's) is
    // left out of a reload; the rest applies.
    let home = machine.dir.path().join("home-nobody");
    std::fs::create_dir(&home).unwrap();
    chown_65534(&home);
    let dir = machine.dir.path().display();
    machine.write_tenants(&format!(
        "[[tenant]]\nusers = [\"daemon\"]\nsecret = \"{dir}/cred-daemon\"\n\n[[tenant]]\nname = \"nobody\"\nuids = [65534]\nsecret = \"{}/cred\"\n",
        home.display()
    ));
    hangup();
    let deadline = Instant::now() + HANG_GUARD;
    while !agent.log_text().contains("a tenant cannot be served") {
        assert!(Instant::now() < deadline, "{}", agent.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        agent.log_text().contains("belongs to uid 65534"),
        "{}",
        agent.log_text()
    );
    assert_eq!(
        header_of(DAEMON),
        basic_line("daemon", &password_of("daemon"))
    );
    assert_eq!(header_of(NOBODY), "");
}

/// A client keeping one connection to the agent's socket (`argv[1]`): it
/// prints the status of `GET /v1/secret`, waits for the file `argv[2]`, and
/// prints the status of a second request on the same connection.
const KEEP_ALIVE_CLIENT: &str = r#"
import os, socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.settimeout(60)
s.connect(sys.argv[1])
def ask():
    s.sendall(b"GET /v1/secret HTTP/1.1\r\nHost: localhost\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = [int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0]
    while len(body) < length:
        body += s.recv(65536)
    return head.split(b" ")[1].decode()
print(ask(), flush=True)
deadline = time.time() + 60
while not os.path.exists(sys.argv[2]) and time.time() < deadline:
    time.sleep(0.02)
print(ask(), flush=True)
"#;

#[test]
fn tenants_are_refused_on_tcp_and_a_schema_error_names_the_line() {
    let machine = Machine::new();
    // A tenant's file where its user could put another file (or a symlink
    // to one root may read) in its place.
    let home = machine.dir.path().join("home-nobody");
    std::fs::create_dir(&home).unwrap();
    chown_65534(&home);
    machine.write_tenants(&format!(
        "[[tenant]]\nuids = [65534]\nsecret = \"{}/cred\"\n",
        home.display()
    ));
    let stderr = machine.refused_at_start();
    assert!(
        stderr.contains("line 1") && stderr.contains("belongs to uid 65534"),
        "{stderr}"
    );

    machine.write_tenants(
        "[[tenant]]\nusers = [\"daemon\"]\nsecret = \"x\"\n\n[[tenant]]\nuids = [1]\nsecret = \"y\"\nttl = 3\n",
    );
    let stderr = machine.refused_at_start();
    assert!(stderr.contains("tenants.toml"), "{stderr}");
    assert!(stderr.contains("line 8"), "{stderr}");
    assert!(stderr.contains("unknown field `ttl`"), "{stderr}");
    assert!(!machine.socket.exists());

    let output = Command::new(BIN)
        .env_clear()
        .env("MLFLOW_SECRETS_AUTH_ENABLE", "file")
        .env(
            "MLFLOW_SECRETS_FILE_PATH",
            machine.dir.path().join("cred-root"),
        )
        .args(["agent", "--listen", "127.0.0.1:0", "--token-file"])
        .arg(machine.dir.path().join("token"))
        .arg("--tenants")
        .arg(&machine.tenants)
        .output()
        .unwrap();
    let (_, stderr) = text(&output);
    assert_ne!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("--tenants") && stderr.contains("--listen"),
        "{stderr}"
    );
}

/// OpenBao, a path template for a whole group and per-user tables: each
/// user gets their own secret, and 20 processes per user make one KV read
/// per tenant's path — counted by the proxy in front of OpenBao.
#[test]
fn with_vault_a_path_template_serves_each_user_with_one_read_per_path() {
    use secrets_testkit::openbao::{OpenBao, ROOT_TOKEN};

    let Some(bao) = OpenBao::start("agent: tenants") else {
        return;
    };
    for user in ["daemon", "bin", "nobody"] {
        bao.admin(
            "POST",
            &format!("secret/data/mlflow/{user}"),
            &format!(
                r#"{{"data": {{"username": "{user}", "password": "{}"}}}}"#,
                password_of(user)
            ),
        );
    }
    let proxy = FaultProxy::start(bao.addr());
    let machine = Machine::new();
    machine.write_tenants(
        r#"
[[tenant]]
name = "team"
users = ["daemon"]
groups = ["bin"]
secret = "secret/mlflow/{user}"

[[tenant]]
uids = [65534]
secret = "secret/mlflow/nobody"
"#,
    );
    let url = proxy.url();
    let vars = [
        ("MLFLOW_SECRETS_AUTH_ENABLE", "vault"),
        ("VAULT_ADDR", url.as_str()),
        ("VAULT_TOKEN", ROOT_TOKEN),
        ("MLFLOW_VAULT_SECRET_PATH", "secret/mlflow/agent-own"),
        ("MLFLOW_VAULT_AUTH_MODE", "basic"),
    ];
    let agent = Agent::start_at(
        &machine.socket,
        machine.dir.path(),
        &vars,
        &["--tenants", machine.tenants.to_str().unwrap()],
    );
    let address = machine.address();
    twenty_clients_per_user_each_get_their_own(&address);
    for user in ["daemon", "bin", "nobody"] {
        assert_eq!(
            proxy.forwarded_to(&format!("/v1/secret/data/mlflow/{user}")),
            1,
            "{user}"
        );
    }
    // The agent's own secret does not exist: its failing fetches never
    // stood in any tenant's way.
    drop(agent);
}
