"""OAuth2 through the plugin: the secret manager (moto) holds an OAuth2
client, the plugin sends MLflow an access token obtained with it from a real
OpenID provider (panva's oidc-provider on Node), and the provider itself
confirms the token (introspection) — the oracle is not the plugin."""

from __future__ import annotations

import base64
import json
import shutil
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from conftest import Counting, free_port, run_python, start, stop

ROOT = Path(__file__).resolve().parents[2]
IDP = ROOT / "secrets-testkit" / "oidc"
CLIENT_ID = "py-client"
CLIENT_SECRET = "py-client-secret-3 +:%"


class Idp:
    def __init__(self, url: str) -> None:
        self.url = url

    def issued_to(self, token: str) -> bool:
        """Whether the provider says `token` is active and issued to our client."""
        body = urllib.parse.urlencode({"token": token}).encode()
        request = urllib.request.Request(f"{self.url}/token/introspection", data=body)
        basic = base64.b64encode(b"inspector:inspector-secret").decode()
        request.add_header("Authorization", f"Basic {basic}")
        with urllib.request.urlopen(request, timeout=30) as answer:
            said = json.load(answer)
        return said.get("active") is True and said.get("client_id") == CLIENT_ID


def start_idp(ttl: int) -> tuple:
    """The provider with our client, tokens living `ttl` seconds: (process, url)."""
    node = shutil.which("node")
    if node is None or not (IDP / "node_modules" / "oidc-provider").is_dir():
        pytest.fail("Node.js or oidc-provider missing: run `cargo xtask test-env`")
    port = free_port()
    clients = [
        {
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "token_endpoint_auth_method": "client_secret_basic",
            "scope": "mlflow",
        }
    ]
    process = start(
        [node, str(IDP / "server.mjs"), str(port)],
        {"OIDC_CLIENTS": json.dumps(clients), "OIDC_TOKEN_TTL": str(ttl)},
        f"http://127.0.0.1:{port}/.well-known/openid-configuration",
    )
    return process, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def idp() -> Iterator[Idp]:
    process, url = start_idp(600)
    try:
        yield Idp(url)
    finally:
        stop(process)


def test_mlflow_gets_an_access_token_the_idp_issued_and_never_the_client(moto, capture, idp):
    moto.put(
        "oauth-client",
        json.dumps({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}),
    )
    env = {
        "MLFLOW_TRACKING_URI": capture.url,
        "MLFLOW_TRACKING_AUTH": "mlflow_secrets_auth",
        "MLFLOW_SECRETS_ALLOWED_HOSTS": "127.0.0.1",
        **moto.env("oauth-client"),
        "MLFLOW_SECRETS_OAUTH_ISSUER": idp.url,
        "MLFLOW_SECRETS_OAUTH_SCOPE": "mlflow",
    }
    done = run_python("import mlflow\nprint(mlflow.search_experiments())", env)
    assert done.returncode == 0, done.stderr
    assert capture.requests, "MLflow called the tracking server"
    sent = {r.get("authorization", "") for r in capture.requests}
    assert len(sent) == 1, sent
    (header,) = sent
    assert header.startswith("Bearer "), "a Bearer token whatever the provider's mode"
    assert idp.issued_to(header.removeprefix("Bearer "))
    assert not capture.saw(CLIENT_SECRET)
    assert CLIENT_SECRET not in done.stdout + done.stderr


LIFETIME = 4
AUDIENCE = "https://mlflow.example.test"

LONG_RUN = """
import time, mlflow
mlflow.set_experiment("long-run")
started = time.monotonic()
logged = 0
with mlflow.start_run() as run:
    while time.monotonic() - started < float(LIFETIME) * 5:
        mlflow.log_metric("loss", logged, step=logged)
        logged += 1
history = mlflow.tracking.MlflowClient().get_metric_history(run.info.run_id, "loss")
assert len(history) == logged, (len(history), logged)
print(logged, time.monotonic() - started)
"""


def test_a_run_lasting_five_token_lifetimes_meets_no_refusal(moto, mlflow_server):
    """MLflow's own client logs for five token lifetimes through the plugin,
    to MLflow behind a gateway that lets through only tokens the IdP signed
    (`jose` against the IdP's JWKS: the oracle). Nothing is refused, and the
    IdP is asked about once per 80 % of a lifetime, never once per request."""
    process, issuer = start_idp(LIFETIME)
    counted = Counting(issuer)
    node = shutil.which("node")
    port = free_port()
    basic = base64.b64encode(f"admin:{mlflow_server.admin_password}".encode()).decode()
    gateway = start(
        [node, str(IDP / "gateway.mjs"), str(port)],
        {
            "GATEWAY_ISSUER": issuer,
            "GATEWAY_AUDIENCE": AUDIENCE,
            "GATEWAY_UPSTREAM": mlflow_server.url,
            "GATEWAY_UPSTREAM_AUTH": f"Basic {basic}",
        },
        f"http://127.0.0.1:{port}/gateway/stats",
    )
    try:
        moto.put("long-run-client", json.dumps({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}))
        env = {
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}",
            "MLFLOW_TRACKING_AUTH": "mlflow_secrets_auth",
            "MLFLOW_SECRETS_ALLOWED_HOSTS": "127.0.0.1",
            **moto.env("long-run-client"),
            "MLFLOW_SECRETS_OAUTH_TOKEN_URL": f"{counted.url}/token",
            "MLFLOW_SECRETS_OAUTH_RESOURCE": AUDIENCE,
        }
        done = run_python(LONG_RUN.replace("LIFETIME", str(LIFETIME)), env)
        assert done.returncode == 0, done.stderr
        logged, runtime = done.stdout.split()[-2:]
        logged, runtime = int(logged), float(runtime)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/gateway/stats", timeout=30) as answer:
            stats = json.load(answer)
        assert stats["refused"] == 0, stats["reasons"]
        assert stats["accepted"] >= logged
        requests = counted.count
        # The provider counts `exp` from the whole second it issued a token
        # in: a token lives between LIFETIME - 1 and LIFETIME seconds, and
        # is refreshed at 80 % of that (as `secrets_testkit::oidc::assert_rotated`).
        gaps = [round(b - a, 2) for a, b in zip(counted.times, counted.times[1:])]
        assert requests <= runtime / (0.8 * (LIFETIME - 1)) + 2, (requests, runtime, gaps)
        assert requests >= runtime / LIFETIME, f"the token did not rotate: {requests} in {runtime:.1f} s"
        # Tokens were reused (how many metrics a token serves depends on the
        # machine's speed; the bound above caps token requests by time).
        assert logged > requests, f"{logged} metrics, {requests} token requests"
    finally:
        stop(gateway)
        counted.close()
        stop(process)
