//! `exec` and `header` hand text on to other programs (a child's
//! `MLFLOW_TRACKING_URI`, a header for a client that reads the URL itself).
//! The oracle is where curl — a parser that is not ours — connects: a URL
//! it reads as the thief (127.0.0.2) must be refused, and the thief must
//! never see the credential.

use std::process::Command;

use secrets_testkit::hostile::HostileKit;

use super::{cli, stderr, stdout};

const TOKEN: &str = "tok-handed-on-3c9a7e51";

/// `ip:port` curl connected to for `url`, empty when it connected nowhere.
fn curl_reaches(url: &str) -> String {
    let output = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-m", "5"])
        .args(["-w", "%{remote_ip}:%{remote_port}"])
        .arg(url)
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn exec_and_header_refuse_urls_another_parser_reads_as_another_host() {
    let kit = HostileKit::start();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("token");
    std::fs::write(&secret, TOKEN).unwrap();
    let secret = secret.display().to_string();
    let vars = [
        ("MLFLOW_SECRETS_AUTH_ENABLE", "file"),
        ("MLFLOW_SECRETS_FILE_PATH", secret.as_str()),
        ("MLFLOW_FILE_AUTH_MODE", "bearer"),
        ("MLFLOW_SECRETS_ALLOWED_HOSTS", "127.0.0.1"),
    ];
    let thief = format!("127.0.0.2:{}", kit.port("thief"));
    let mut urls = kit.tricks();
    urls.push(format!("{}/plain", kit.url("allowed")));
    let mut read_as_thief = 0;
    for url in &urls {
        // exec: the child reads MLFLOW_TRACKING_URI with curl.
        let mut env = vars.to_vec();
        env.push(("MLFLOW_TRACKING_URI", url));
        let exec = cli(
            &env,
            &[
                "exec",
                "--",
                "sh",
                "-c",
                r#"curl -s -o /dev/null -m 5 -H "Authorization: Bearer $MLFLOW_TRACKING_TOKEN" "$MLFLOW_TRACKING_URI""#,
            ],
        );
        // header: the printed header, sent by curl to the same text.
        let header = cli(&vars, &["header", "--url", url]);
        if header.status.success() {
            Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-m", "5", "-H"])
                .arg(stdout(&header).trim())
                .arg(url)
                .status()
                .expect("run curl");
        }
        if curl_reaches(url) == thief {
            read_as_thief += 1;
            assert_eq!(exec.status.code(), Some(1), "{url:?}: {}", stderr(&exec));
            // Refused as not plain (naming where the URL came from) or as
            // a host not allowed.
            let named = |text: String, source: &str| {
                text.contains(source) || text.contains("not in MLFLOW_SECRETS_ALLOWED_HOSTS")
            };
            assert!(
                named(stderr(&exec), "MLFLOW_TRACKING_URI"),
                "{url:?}: {}",
                stderr(&exec)
            );
            assert_eq!(header.status.code(), Some(1), "{url:?}");
            assert!(stdout(&header).is_empty(), "{url:?}");
            assert!(
                named(stderr(&header), "--url"),
                "{url:?}: {}",
                stderr(&header)
            );
        }
        for output in [&exec, &header] {
            assert!(!stderr(output).contains(TOKEN), "{url:?}");
        }
    }
    assert!(
        read_as_thief >= 5,
        "curl reads several of the URLs as the thief ({read_as_thief} did)"
    );
    assert!(!kit.saw("thief", TOKEN), "{:#?}", kit.requests("thief"));
    // The plain allowed URL got it both ways: the oracle sees a credential.
    let carried = kit
        .requests("allowed")
        .iter()
        .filter(|seen| seen.header("authorization") == Some(&format!("Bearer {TOKEN}")))
        .count();
    assert_eq!(carried, 2, "{:#?}", kit.requests("allowed"));
}

#[test]
fn exec_gives_the_child_the_tracking_uri_it_judged_even_when_the_variable_is_set_twice() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("token");
    std::fs::write(&secret, TOKEN).unwrap();
    // std::process::Command cannot set a variable twice; execve can.
    let script = r#"
import ctypes, sys
bin, secret = sys.argv[1], sys.argv[2]
env = [b"PATH=/usr/bin:/bin", b"MLFLOW_SECRETS_AUTH_ENABLE=file",
       b"MLFLOW_SECRETS_FILE_PATH=" + secret.encode(), b"MLFLOW_FILE_AUTH_MODE=bearer",
       b"MLFLOW_SECRETS_ALLOWED_HOSTS=127.0.0.1",
       b"MLFLOW_TRACKING_URI=http://127.0.0.1:5000/judged",
       b"MLFLOW_TRACKING_URI=http://127.0.0.2:5000/other"]
argv = [bin.encode(), b"exec", b"--", b"sh", b"-c", b'printf %s "$MLFLOW_TRACKING_URI"']
libc = ctypes.CDLL(None, use_errno=True)
a = (ctypes.c_char_p * (len(argv) + 1))(*argv, None)
e = (ctypes.c_char_p * (len(env) + 1))(*env, None)
libc.execve(argv[0], a, e)
sys.exit("execve failed")
"#;
    let output = Command::new("python3")
        .args(["-c", script, env!("CARGO_BIN_EXE_mlflow-secrets-auth")])
        .arg(&secret)
        .output()
        .expect("run python3");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "http://127.0.0.1:5000/judged");
}
