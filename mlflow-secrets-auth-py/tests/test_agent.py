"""The node agent (`python -m mlflow_secrets_auth agent`, the wheel's own
CLI) serving MLflow's client with the plugin: the clients hold no backend
variables, backend requests are counted by a forwarding proxy in front of
moto, and /metrics is read by Prometheus's own parser."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from conftest import stop
from test_plugin import LOG_RUN, user


class UnixConnection(http.client.HTTPConnection):
    """HTTP over the agent's Unix socket."""

    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=30)
        self.path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def get(path: Path, endpoint: str):
    connection = UnixConnection(path)
    try:
        connection.request("GET", endpoint)
        response = connection.getresponse()
        return response.status, response.read().decode()
    except OSError:
        return 0, ""
    finally:
        connection.close()


class Agent:
    def __init__(self, directory: Path, env: Dict[str, str]) -> None:
        self.socket = directory / "run" / "agent.sock"
        base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow_secrets_auth", "agent", "--socket", str(self.socket)],
            env={**base, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while get(self.socket, "/healthz")[0] != 200:
            assert self.process.poll() is None, "the agent exited"
            assert time.monotonic() < deadline, "the agent did not start"
            time.sleep(0.05)

    @property
    def address(self) -> str:
        return f"unix:{self.socket}"


@pytest.fixture
def agent_for(tmp_path, moto, counted_moto):
    started = []

    def start(secret: str) -> Agent:
        env = {**moto.env(secret), "AWS_ENDPOINT_URL": counted_moto.url}
        agent = Agent(tmp_path, env)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        stop(agent.process)


def test_mlflow_clients_with_the_plugin_share_the_agents_one_fetch(
    mlflow_server, moto, counted_moto, agent_for
):
    user(mlflow_server, moto, "agent-user")
    agent = agent_for("agent-user")
    env = {
        "MLFLOW_TRACKING_URI": mlflow_server.url,
        "MLFLOW_TRACKING_AUTH": "mlflow_secrets_auth",
        "MLFLOW_SECRETS_ALLOWED_HOSTS": "127.0.0.1",
        "MLFLOW_SECRETS_AGENT": agent.address,
    }
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME")}
    clients = [
        subprocess.Popen(
            # One experiment each: MLflow grants its creator's permission
            # only after the create returns, so racing creators get 403.
            [sys.executable, "-c", LOG_RUN.format(experiment=f"agent-clients-{i}")],
            env={**base, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    for client in clients:
        out, err = client.communicate(timeout=300)
        assert client.returncode == 0, err
        assert out.strip().splitlines()[-1] == "logged"
    assert counted_moto.count == 1, "eight MLflow clients, one backend request"


def test_metrics_are_read_by_prometheus_parser_and_match_what_happened(
    mlflow_server, moto, counted_moto, agent_for
):
    password = user(mlflow_server, moto, "metrics-user")
    agent = agent_for("metrics-user")
    for _ in range(3):
        status, body = get(agent.socket, "/v1/secret")
        assert status == 200
        assert password in body
    status, text = get(agent.socket, "/metrics")
    assert status == 200
    assert password not in text
    families = {f.name: f for f in text_string_to_metric_families(text)}

    def value(family: str, sample: str, **labels: str) -> float:
        for s in families[family].samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
        raise AssertionError(f"{sample} {labels} not in {families[family].samples}")

    prefix = "mlflow_secrets_agent_"
    assert value(prefix + "requests", prefix + "requests_total", endpoint="/v1/secret", status="200") == 3
    assert value(prefix + "cache_fetches", prefix + "cache_fetches_total") == counted_moto.count == 1
    assert value(prefix + "fetch_duration_seconds", prefix + "fetch_duration_seconds_count",
                 provider="aws-secrets-manager") == 1
    assert value(prefix + "breaker_state", prefix + "breaker_state",
                 provider="aws-secrets-manager", state="closed") == 1
    assert value(prefix + "ready", prefix + "ready") == 1
    assert value(prefix + "credential_remaining_seconds", prefix + "credential_remaining_seconds") > 0
