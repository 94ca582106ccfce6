"""The plugin, as MLflow's registry hands it out, against the Rust tests'
hostile servers: redirects with parser tricks, refusals followed by redirects,
https→http downgrades, chains across allowed hosts, refusal storms, streamed
uploads and a blank allowlist — with `Authorization` and a custom header.

The client runs in a fresh interpreter configured only by the environment
(the file provider, so the credential can be rotated from the script). Two
oracles that are not the code under test: what the thief recorded, and
urllib3's own parse of every URL a response came from."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Dict

import pytest

from conftest import run_python

OLD = "tok-py-hostile-old-51c7e2"
NEW = "tok-py-hostile-new-a93b08"
HEADERS = ["Authorization", "X-MLflow-Auth"]
ALLOWED = "127.0.0.1,localhost,127.0.0.3"

CLIENT = textwrap.dedent(
    """
    import json, os, sys, time
    import requests, urllib3
    from mlflow.tracking.request_auth.registry import fetch_auth
    import mlflow_secrets_auth

    urls = json.loads(os.environ["HOSTILE_URLS"])
    secret_file = os.environ["MLFLOW_SECRETS_FILE_PATH"]
    header = os.environ["MLFLOW_AUTH_HEADER_NAME"]
    session = requests.Session()
    session.auth = fetch_auth("mlflow_secrets_auth")  # as MLflow does
    allowed_hosts = {"127.0.0.1", "localhost", "127.0.0.3"}
    oracle = []  # credential seen on a request urllib3 sends to another host

    def check(response):
        for r in [*response.history, response]:
            host = urllib3.util.parse_url(r.url).host
            if host not in allowed_hosts and any(
                secret in v for v in r.request.headers.values() for secret in SECRETS
            ):
                oracle.append(r.url)

    SECRETS = [os.environ["OLD"], os.environ["NEW"]]

    def get(url, **kwargs):
        try:
            response = session.get(url, timeout=10, verify=urls["ca"], **kwargs)
        except requests.RequestException as error:
            return type(error).__name__
        check(response)
        return response.status_code

    def rotate(value):
        with open(secret_file, "w") as f:
            f.write(value)

    out = {}
    {case}
    out["oracle"] = oracle
    out["fetches"] = mlflow_secrets_auth._shared_core().fetch_count()
    print(json.dumps(out))
    """
)


def run_case(hostile, tmp_path: Path, header: str, case: str, **extra: str) -> Dict:
    secret = tmp_path / "token"
    secret.write_text(OLD)
    urls = {**hostile.urls, "ca": hostile.ca}
    env = {
        "MLFLOW_SECRETS_AUTH_ENABLE": "file",
        "MLFLOW_SECRETS_FILE_PATH": str(secret),
        "MLFLOW_SECRETS_ALLOWED_HOSTS": ALLOWED,
        "MLFLOW_AUTH_HEADER_NAME": header,
        "HOSTILE_URLS": json.dumps(urls),
        "OLD": OLD,
        "NEW": NEW,
        **extra,
    }
    code = CLIENT.replace("{case}", textwrap.indent(textwrap.dedent(case), "").strip())
    done = run_python(code, env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["stderr"] = done.stderr
    assert result["oracle"] == [], result
    return result


def value(header: str, token: str) -> str:
    return f"Bearer {token}" if header == "Authorization" else token


def leaked(hostile, listener: str) -> bool:
    return hostile.saw(listener, OLD) or hostile.saw(listener, NEW)


def tricks(hostile):
    allowed, thief = hostile.host("allowed"), hostile.host("thief")
    port = thief.rsplit(":", 1)[1]
    return [
        f"http://{allowed}\\@{thief}/steal",
        f"http://{allowed}\t@{thief}/steal",
        f"http://{allowed}%40{thief}/steal",
        f"http://{allowed}@{thief}/steal",
        f"http://user:pw@{thief}/steal",
        f"//{thief}/steal",
        f"http:{thief}/steal",
        f"https:\\\\{thief}/steal",
        f"http:\\\\{thief}/steal",
        f"http://127%2E0%2E0%2E2:{port}/steal",
        f"http://127\u30020\u30020\u30022:{port}/steal",
        f"http://127\uff0e0\uff0e0\uff0e2:{port}/steal",
        f"http://[::ffff:127.0.0.2]:{port}/steal",
        f"http://2130706434:{port}/steal",
        f"http://{thief}/steal?next=http://{allowed}/",
        f"HTTP://{thief}/steal",
        f"http://{thief}#@{allowed}/",
        f"http://{thief}\\\\{allowed}/",
        f"http://{allowed}/x\r\nLocation: http://{thief}/steal",
        f"http://{thief}\r\n/steal",
        f"http://{allowed}\n@{thief}/steal",
    ]


@pytest.mark.parametrize("header", HEADERS)
def test_redirect_tricks_never_carry_the_credential_to_the_thief(hostile, tmp_path, header):
    targets = tricks(hostile)
    for i, location in enumerate(targets):
        hostile.script("allowed", f"/trick{i}/", {"status": 302, "headers": [["Location", location]]})
    case = f"""
    out["statuses"] = [get(urls["allowed"] + f"/trick{{i}}/") for i in range({len(targets)})]
    """
    result = run_case(hostile, tmp_path, header, case)
    thief = hostile.requests("thief")
    print(f"\n{header}: {len(targets)} tricks, {len(thief)} reached the thief: {result['statuses']}")
    assert len(thief) >= 8, result["statuses"]
    assert not leaked(hostile, "thief"), thief
    assert hostile.saw("allowed", OLD)


@pytest.mark.parametrize("header", HEADERS)
@pytest.mark.parametrize("status", [401, 403])
def test_a_refusal_then_a_redirect_to_the_thief_carries_nothing(hostile, tmp_path, header, status):
    hostile.script(
        "allowed",
        "/refuse",
        {"status": status},
        {"status": 302, "headers": [["Location", "http://{thief}/steal"]]},
    )
    case = """
    out["warm"] = get(urls["allowed"] + "/warm")
    rotate(os.environ["NEW"])
    out["status"] = get(urls["allowed"] + "/refuse")
    """
    result = run_case(hostile, tmp_path, header, case)
    assert result["status"] == 200, result
    refuse = [r for r in hostile.requests("allowed") if r["target"] == "/refuse"]
    assert len(refuse) == 2, "sent, then resent once"
    assert dict(refuse[1]["headers"]).get(header.lower()) == value(header, NEW)
    assert len(hostile.requests("thief")) == 1, "the redirect was followed"
    assert not leaked(hostile, "thief")


@pytest.mark.parametrize("header", HEADERS)
def test_an_https_to_http_downgrade_gets_nothing_even_on_an_allowed_host(hostile, tmp_path, header):
    port = hostile.host("allowed").rsplit(":", 1)[1]
    hostile.script(
        "tls", "/down", {"status": 302, "headers": [["Location", f"http://localhost:{port}/landing"]]}
    )
    hostile.script("allowed", "/landing", {"status": 302, "headers": [["Location", "/again"]]})
    result = run_case(hostile, tmp_path, header, 'out["status"] = get(urls["tls"] + "/down")')
    assert result["status"] == 200, result
    assert hostile.saw("tls", OLD), "the https hop had it"
    assert len(hostile.requests("allowed")) == 2
    assert not leaked(hostile, "allowed"), hostile.requests("allowed")


@pytest.mark.parametrize("header", HEADERS)
def test_redirects_across_allowed_hosts_keep_it_and_a_third_hop_to_the_thief_drops_it(
    hostile, tmp_path, header
):
    hostile.script("allowed", "/start", {"status": 307, "headers": [["Location", "http://{other}/hop"]]})
    hostile.script("other", "/hop", {"status": 302, "headers": [["Location", "http://{thief}/end"]]})
    result = run_case(hostile, tmp_path, header, 'out["status"] = get(urls["allowed"] + "/start")')
    assert result["status"] == 200, result
    other = dict(hostile.requests("other")[0]["headers"]).get(header.lower())
    # requests itself drops `Authorization` on any change of host (after the
    # hook ran), so only a custom header reaches the second allowed host.
    assert other == (None if header == "Authorization" else value(header, OLD))
    assert len(hostile.requests("thief")) == 1
    assert not leaked(hostile, "thief")


@pytest.mark.parametrize("header", HEADERS)
def test_twenty_refusals_of_a_valid_credential_cause_at_most_two_fetches(hostile, tmp_path, header):
    hostile.script("allowed", "/forbidden", {"status": 403})
    case = """
    out["statuses"] = [get(urls["allowed"] + "/forbidden") for _ in range(20)]
    """
    result = run_case(hostile, tmp_path, header, case)
    print(f"\n{header}: 20 consecutive 403s → {result['fetches']} backend fetches")
    assert result["statuses"] == [403] * 20
    assert result["fetches"] <= 2, result
    assert len(hostile.requests("allowed")) == 20, "the same credential is never resent"


@pytest.mark.parametrize("header", HEADERS)
def test_a_streamed_upload_is_resent_whole_after_a_refusal(hostile, tmp_path, header):
    hostile.script("allowed", "/upload", {"status": 401, "pass_if": [header, value(header, NEW)]})
    upload = tmp_path / "artifact.bin"
    upload.write_bytes(b"\x07" * 65536)
    case = f"""
    get(urls["allowed"] + "/warm")
    rotate(os.environ["NEW"])
    started = time.monotonic()
    with open({str(upload)!r}, "rb") as body:
        response = session.put(urls["allowed"] + "/upload", data=body, timeout=10)
    out["seconds"] = time.monotonic() - started
    out["status"] = response.status_code
    """
    result = run_case(hostile, tmp_path, header, case)
    print(f"\n{header}: streamed PUT with one resend took {result['seconds'] * 1000:.1f} ms")
    assert result["status"] == 200, result
    uploads = [r for r in hostile.requests("allowed") if r["target"] == "/upload"]
    assert len(uploads) == 2
    assert all(r["body_complete"] and r["body_len"] == 65536 for r in uploads), uploads
    assert result["seconds"] < 5, "no hang"


@pytest.mark.parametrize("header", HEADERS)
def test_an_unrewindable_stream_is_not_resent(hostile, tmp_path, header):
    hostile.script("allowed", "/upload", {"status": 401})
    case = """
    get(urls["allowed"] + "/warm")
    rotate(os.environ["NEW"])
    def chunks():
        yield b"a" * 4096
        yield b"b" * 4096
    response = session.put(urls["allowed"] + "/upload", data=chunks(), timeout=10)
    out["status"] = response.status_code
    """
    result = run_case(hostile, tmp_path, header, case)
    assert result["status"] == 401, "the refusal comes back as it is"
    uploads = [r for r in hostile.requests("allowed") if r["target"] == "/upload"]
    assert len(uploads) == 1 and uploads[0]["body_complete"], uploads


def test_a_withheld_credential_is_said_once_per_host_and_reason(hostile, tmp_path):
    port = hostile.host("allowed").rsplit(":", 1)[1]
    hostile.script(
        "tls", "/down", {"status": 302, "headers": [["Location", f"http://localhost:{port}/landing"]]}
    )
    case = """
    out["statuses"] = [get(urls["other"] + "/api") for _ in range(3)]
    out["down"] = [get(urls["tls"] + "/down") for _ in range(3)]
    """
    # 127.0.0.3 (the `other` listener) not allowed this time.
    result = run_case(
        hostile, tmp_path, "Authorization", case,
        MLFLOW_SECRETS_ALLOWED_HOSTS="127.0.0.1,localhost",
    )
    assert result["statuses"] == [200] * 3 and result["down"] == [200] * 3, result
    assert not leaked(hostile, "other") and not leaked(hostile, "allowed")
    said = [line for line in result["stderr"].splitlines() if "no credential sent to" in line]
    other = hostile.host("other").rsplit(":", 1)[0]
    assert len(said) == 2, result["stderr"]
    assert other in said[0] and "host not allowed" in said[0], said
    assert "localhost" in said[1] and "left https" in said[1], said
    assert all("MLFLOW_SECRETS_ALLOWED_HOSTS" in line for line in said), said
    assert OLD not in result["stderr"] and NEW not in result["stderr"]


def test_a_blank_allowlist_sends_nothing_and_says_so_once(hostile, tmp_path):
    case = """
    out["statuses"] = [get(urls["allowed"] + "/api") for _ in range(3)]
    """
    secret = tmp_path / "token"
    secret.write_text(OLD)
    code = CLIENT.replace("{case}", textwrap.dedent(case).strip()).replace(
        'out["fetches"] = mlflow_secrets_auth._shared_core().fetch_count()', ""
    )
    env = {
        "MLFLOW_SECRETS_AUTH_ENABLE": "file",
        "MLFLOW_SECRETS_FILE_PATH": str(secret),
        "MLFLOW_SECRETS_ALLOWED_HOSTS": " ",
        "MLFLOW_AUTH_HEADER_NAME": "Authorization",
        "HOSTILE_URLS": json.dumps({**hostile.urls, "ca": hostile.ca}),
        "OLD": OLD,
        "NEW": NEW,
    }
    done = run_python(code, env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["statuses"] == [200] * 3
    assert not leaked(hostile, "allowed")
    errors = [line for line in done.stderr.splitlines() if "MLFLOW_SECRETS_ALLOWED_HOSTS" in line]
    assert len(errors) == 1, done.stderr


def test_a_host_the_client_reads_differently_gets_nothing(tmp_path, monkeypatch):
    secret = tmp_path / "token"
    secret.write_text(OLD)
    for name, value in {
        "MLFLOW_SECRETS_AUTH_ENABLE": "file",
        "MLFLOW_SECRETS_FILE_PATH": str(secret),
        "MLFLOW_SECRETS_ALLOWED_HOSTS": ALLOWED,
    }.items():
        monkeypatch.setenv(name, value)
    from mlflow_secrets_auth import SecretsAuth, _client_hosts

    core = SecretsAuth()
    url = "http://127.0.0.1:5000/api"
    strip, left_https, header, withheld = core.hop(url, None, False, _client_hosts(url))
    assert header == ("Authorization", f"Bearer {OLD}") and withheld is None
    # A client that would connect elsewhere (or to another port) gets nothing.
    for hosts in ([("127.0.0.2", 5000)], [("127.0.0.1", 5001)], [("127.0.0.1", 5000), ("evil", 5000)]):
        strip, _, header, withheld = core.hop(url, None, False, hosts)
        assert header is None and strip, hosts
        assert "disagree" in withheld
    # https → http on the same allowed host: nothing, and the chain remembers it.
    first = "https://localhost:8443/a"
    _, left_https, header, _ = core.hop(first, None, False, _client_hosts(first))
    assert header is not None and not left_https
    second = "http://localhost:8080/b"
    strip, left_https, header, withheld = core.hop(second, first, left_https, _client_hosts(second))
    assert header is None and strip and left_https and "left https" in withheld
    # Unparsable URLs send nothing.
    assert _client_hosts("http://[::1/") is None
    assert core.hop("not a url", None, False, [])[2] is None


def test_withheld_warnings_are_bounded_as_in_the_rust_core(caplog):
    # Redirects a server chooses name as many hosts as it likes: the plugin
    # remembers (and warns about) at most 64 pairs, as the Rust core does.
    import logging

    from mlflow_secrets_auth import _plugin

    _plugin._withheld_said.clear()
    with caplog.at_level(logging.DEBUG, logger="mlflow_secrets_auth"):
        for i in range(200):
            _plugin._say_withheld(f"http://h{i}.example/x", "host not allowed")
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(_plugin._withheld_said) == 64
    assert len(warned) == 64
    assert any(r.levelno == logging.DEBUG and "h199.example" in r.getMessage() for r in caplog.records)
    _plugin._withheld_said.clear()
