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

from conftest import free_port, run_python, start, stop

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


@pytest.fixture(scope="module")
def idp() -> Iterator[Idp]:
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
        {"OIDC_CLIENTS": json.dumps(clients), "OIDC_TOKEN_TTL": "600"},
        f"http://127.0.0.1:{port}/.well-known/openid-configuration",
    )
    try:
        yield Idp(f"http://127.0.0.1:{port}")
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
