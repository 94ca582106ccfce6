"""Real servers on 127.0.0.1 for the plugin's tests: MLflow with basic auth,
moto (AWS Secrets Manager), and header-recording HTTP servers. Every scenario
runs the plugin in a fresh Python process configured only by environment
variables, as MLflow users run it."""

from __future__ import annotations

import base64
import http.server
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import boto3
import pytest

BIN = Path(sys.executable).parent
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def start(args: List[str], env: Dict[str, str], ready: str) -> subprocess.Popen:
    process = subprocess.Popen(
        args,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_for(ready, process)
    return process


def stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, 15)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)


class Mlflow:
    def __init__(self, url: str, admin_password: str) -> None:
        self.url = url
        self.admin_password = admin_password

    def admin(self, method: str, path: str, body: dict) -> dict:
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            method=method,
            headers={"Content-Type": "application/json"},
        )
        import base64

        token = base64.b64encode(f"admin:{self.admin_password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"{}")

    def create_user(self, user: str, password: str) -> None:
        self.admin("POST", "/api/2.0/mlflow/users/create", {"username": user, "password": password})

    def set_password(self, user: str, password: str) -> None:
        self.admin(
            "PATCH",
            "/api/2.0/mlflow/users/update-password",
            {"username": user, "password": password},
        )


@pytest.fixture(scope="session")
def mlflow_server() -> Iterator[Mlflow]:
    directory = Path(tempfile.mkdtemp(prefix="plugin-mlflow-"))
    password = "adm-" + secrets.token_hex(8) + "-Pw"
    ini = directory / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{directory / 'auth.db'}\n"
        f"admin_username = admin\nadmin_password = {password}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    port = free_port()
    process = start(
        [
            str(BIN / "mlflow"), "server", "--app-name", "basic-auth",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{directory / 'mlflow.db'}",
            "--default-artifact-root", str(directory / "artifacts"),
        ],
        {
            "MLFLOW_AUTH_CONFIG_PATH": str(ini),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
        },
        f"http://127.0.0.1:{port}/health",
    )
    try:
        yield Mlflow(f"http://127.0.0.1:{port}", password)
    finally:
        stop(process)
        shutil.rmtree(directory, ignore_errors=True)


class Moto:
    def __init__(self, url: str) -> None:
        self.url = url
        self.client = boto3.client(
            "secretsmanager",
            region_name=REGION,
            endpoint_url=url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def put(self, name: str, value: str) -> None:
        try:
            self.client.create_secret(Name=name, SecretString=value)
        except self.client.exceptions.ResourceExistsException:
            self.client.put_secret_value(SecretId=name, SecretString=value)

    def env(self, name: str) -> Dict[str, str]:
        return {
            "MLFLOW_SECRETS_AUTH_ENABLE": "aws-secrets-manager",
            "AWS_ENDPOINT_URL": self.url,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_EC2_METADATA_DISABLED": "true",
            "MLFLOW_AWS_SECRET_NAME": name,
            "MLFLOW_AWS_AUTH_MODE": "basic",
        }


@pytest.fixture(scope="session")
def moto() -> Iterator[Moto]:
    port = free_port()
    process = start(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        {},
        f"http://127.0.0.1:{port}/moto-api/",
    )
    try:
        yield Moto(f"http://127.0.0.1:{port}")
    finally:
        stop(process)


class Counting:
    """Forwards every request to `upstream` and counts them: the count of
    backend requests, taken outside the code under test."""

    def __init__(self, upstream: str) -> None:
        self.count = 0
        self.times: List[float] = []
        counting = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                counting.count += 1
                counting.times.append(time.monotonic())
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                request = urllib.request.Request(
                    upstream + self.path, data=body, method="POST",
                    headers={k: v for k, v in self.headers.items() if k.lower() != "host"},
                )
                try:
                    with urllib.request.urlopen(request, timeout=30) as answer:
                        status, data, kind = answer.status, answer.read(), answer.headers.get("Content-Type", "")
                except urllib.error.HTTPError as error:
                    status, data, kind = error.code, error.read(), error.headers.get("Content-Type", "")
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()



@pytest.fixture
def counted_moto(moto) -> Iterator[Counting]:
    proxy = Counting(moto.url)
    yield proxy
    proxy.close()



def secret_forms(secret: str) -> List[str]:
    """The forms a secret travels in: as is, base64 (standard, unpadded,
    URL-safe) and percent-encoded — as ``secrets_testkit::leak::forms``.
    Pass ``user:password`` as well as the password to catch a Basic header."""
    raw = secret.encode()
    standard = base64.b64encode(raw).decode()
    return sorted(
        {
            secret,
            standard,
            standard.rstrip("="),
            base64.urlsafe_b64encode(raw).decode().rstrip("="),
            urllib.parse.quote(secret, safe="-._~"),
        }
    )


def holds(recorded: str, secret: str) -> bool:
    """Whether any form of ``secret`` is in ``recorded``."""
    return any(form in recorded for form in secret_forms(secret))


class Capture:
    """Records every request (headers by name, and the whole request as
    text); answers from a route table."""

    def __init__(self, host: str) -> None:
        self.requests: List[Dict[str, str]] = []
        self.raw: List[str] = []
        self.redirect_to: Optional[str] = None
        capture = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                capture.requests.append({k.lower(): v for k, v in self.headers.items()})
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                capture.raw.append(
                    f"{self.requestline}\r\n{self.headers}\r\n"
                    + body.decode("utf-8", "replace")
                )
                if capture.redirect_to:
                    self.send_response(302)
                    self.send_header("Location", capture.redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = b'{"experiments": []}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def saw(self, needle: str) -> bool:
        """Whether any request held ``needle`` in any of its forms, anywhere:
        request line, headers or body."""
        return any(holds(raw, needle) for raw in self.raw)

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def capture() -> Iterator[Capture]:
    server = Capture("127.0.0.1")
    yield server
    server.close()


@pytest.fixture
def other_host() -> Iterator[Capture]:
    server = Capture("127.0.0.2")
    yield server
    server.close()


def run_python(code: str, env: Dict[str, str], timeout: float = 180.0) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter with only `env` (plus PATH/HOME)."""
    base = {k: os.environ[k] for k in ("PATH", "HOME", "TMPDIR") if k in os.environ}
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Hostile:
    """The Rust tests' hostile servers (`hostile-server`, driven by JSON lines):
    `allowed` (127.0.0.1), `tls` (https://localhost, a CA made for the run),
    `other` (127.0.0.3, allowed) and `thief` (127.0.0.2), each recording every
    request it receives; answers scripted per path."""

    def __init__(self) -> None:
        binary = os.environ.get("HOSTILE_SERVER") or str(
            Path(__file__).resolve().parents[2] / "target" / "debug" / "hostile-server"
        )
        if not Path(binary).is_file():
            raise RuntimeError(
                f"{binary} is missing: run `cargo build -p secrets-testkit --bin hostile-server`"
            )
        self.process = subprocess.Popen(
            [binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.urls: Dict[str, str] = json.loads(self.process.stdout.readline())
        self.ca: str = self.urls.pop("ca")

    def command(self, command: dict) -> dict:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        answer = json.loads(self.process.stdout.readline())
        assert "error" not in answer, answer
        return answer

    def script(self, listener: str, path: str, *answers: dict) -> None:
        self.command({"script": {"listener": listener, "path": path, "answers": list(answers)}})

    def requests(self, listener: str) -> List[dict]:
        return self.command({"requests": listener})["requests"]

    def saw(self, listener: str, needle: str) -> bool:
        """Whether any request ``listener`` received held ``needle`` in any of
        its forms, anywhere: request line, headers or body."""
        return any(holds(r["raw"], needle) for r in self.requests(listener))

    def host(self, listener: str) -> str:
        return self.urls[listener].split("://", 1)[1]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=10)


@pytest.fixture
def hostile() -> Iterator[Hostile]:
    server = Hostile()
    yield server
    server.close()
