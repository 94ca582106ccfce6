"""The ``mlflow-secrets-auth`` command shipped in the wheel, run from a fresh
virtual environment holding only the wheel and MLflow's client: the console
script and ``python -m mlflow_secrets_auth`` run the Rust command line, with
the same output as the Rust binary (its golden transcripts are replayed
here), the wheel's version, and ``exec`` handing the exit code through."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "secrets-cli" / "tests" / "cli" / "golden"
CONSTRAINTS = ROOT / "xtask" / "test-env-constraints.txt"


def built_wheel() -> Path:
    """The wheel `cargo xtask ci` built (MSA_WHEEL), else the one `cargo xtask wheel` built in target/wheels/debug."""
    named = os.environ.get("MSA_WHEEL")
    wheels = [Path(named)] if named else sorted((ROOT / "target" / "wheels" / "debug").glob("*.whl"))
    if len(wheels) != 1 or not wheels[0].is_file():
        pytest.fail(f"no single built wheel (MSA_WHEEL or target/wheels/debug): {wheels}; run `cargo xtask wheel`")
    return wheels[0]


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv with only the wheel and MLflow's client (pinned as the tests' MLflow)."""
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
         "--disable-pip-version-check", str(built_wheel()), "mlflow-skinny",
         "-c", str(CONSTRAINTS)],
        check=True,
    )
    return venv / "bin"


def clean_env(**extra: str) -> Dict[str, str]:
    """Only PATH (and HOME): nothing of this test run's configuration leaks in."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    env.update(extra)
    return env


def transcript(name: str) -> Tuple[Dict[str, str], List[Tuple[List[str], int, str]]]:
    """A Rust golden transcript: its environment and (args, exit code, output)."""
    text = (GOLDEN / f"{name}.txt").read_text()
    head, *runs = text.split("\n$ mlflow-secrets-auth ")
    env = dict(line.split("=", 1) for line in head.splitlines()[1:] if "=" in line)
    commands = []
    for run in runs:
        command, exit_line, output = run.split("\n", 2)
        code = int(re.fullmatch(r"\[exit (\d+)\]", exit_line).group(1))
        commands.append((command.split(" "), code, output))
    return env, commands


def normalise(text: str, version: str) -> str:
    """As the Rust golden tests normalise: the version and timings."""
    text = text.replace(version, "<version>")
    return re.sub(r"\d+\.\d ms", "<t> ms", text)


def wheel_version(bin_dir: Path) -> str:
    return subprocess.run(
        [str(bin_dir / "python"), "-c",
         "import importlib.metadata as m; print(m.version('mlflow-secrets-auth'))"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()


def test_the_console_script_replays_the_rust_golden_transcript(fresh: Path) -> None:
    version = wheel_version(fresh)
    env, commands = transcript("nothing-configured")
    assert commands, "the transcript has commands"
    for args, code, expected in commands:
        done = subprocess.run(
            [str(fresh / "mlflow-secrets-auth"), *args],
            env=clean_env(**env), capture_output=True, text=True,
        )
        shown = normalise(done.stdout, version)
        if done.stderr:
            shown += "[stderr]\n" + normalise(done.stderr, version)
        # The transcript separates commands with a blank line.
        assert (done.returncode, shown.rstrip("\n")) == (code, expected.rstrip("\n")), args


def test_python_m_reports_the_wheels_version(fresh: Path) -> None:
    done = subprocess.run(
        [str(fresh / "python"), "-m", "mlflow_secrets_auth", "--version"],
        env=clean_env(), capture_output=True, text=True, check=True,
    )
    assert done.stdout.strip() == f"mlflow-secrets-auth {wheel_version(fresh)}"
    imported = subprocess.run(
        [str(fresh / "python"), "-c", "import mlflow_secrets_auth as m; print(m.__version__)"],
        env=clean_env(), capture_output=True, text=True, check=True,
    )
    assert imported.stdout.strip() == wheel_version(fresh)


def test_the_wheel_and_the_rust_binary_are_one_version(fresh: Path) -> None:
    import tomllib

    workspace = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]["version"]
    binary = ROOT / "target" / "debug" / "mlflow-secrets-auth"
    if not binary.is_file():
        pytest.fail(f"{binary} is not built; run `cargo build -p mlflow-secrets-auth-cli`")
    shown = [
        subprocess.run([str(command), "--version"], env=clean_env(), capture_output=True,
                       text=True, check=True).stdout.strip()
        for command in (fresh / "mlflow-secrets-auth", binary)
    ]
    assert shown == [f"mlflow-secrets-auth {workspace}"] * 2
    assert wheel_version(fresh) == workspace


def test_exec_hands_over_the_credential_and_the_exit_code(fresh: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text('{"username": "cli-user", "password": "cli-password-3e1"}')
    secret.chmod(0o600)
    env = clean_env(
        MLFLOW_SECRETS_AUTH_ENABLE="file",
        MLFLOW_SECRETS_FILE_PATH=str(secret),
        MLFLOW_FILE_AUTH_MODE="basic",
        MLFLOW_SECRETS_ALLOWED_HOSTS="127.0.0.1",
        MLFLOW_TRACKING_URI="http://127.0.0.1:5000",
    )
    check = ("import os, sys; "
             "sys.exit(7 if os.environ['MLFLOW_TRACKING_USERNAME'] == 'cli-user' else 1)")
    for command in ([str(fresh / "mlflow-secrets-auth")],
                    [str(fresh / "python"), "-m", "mlflow_secrets_auth"]):
        done = subprocess.run([*command, "exec", "--", str(fresh / "python"), "-c", check],
                              env=env, capture_output=True, text=True)
        assert done.returncode == 7, done.stderr
        assert "cli-password-3e1" not in done.stdout + done.stderr
    refused = subprocess.run(
        [str(fresh / "mlflow-secrets-auth"), "exec", "--url", "http://elsewhere.example/",
         "--", str(fresh / "python"), "-c", "raise SystemExit(0)"],
        env=env, capture_output=True, text=True,
    )
    assert refused.returncode == 1
    assert "MLFLOW_SECRETS_ALLOWED_HOSTS" in refused.stderr


def test_the_plugin_still_loads_through_mlflow(fresh: Path, tmp_path: Path) -> None:
    code = ("from mlflow.tracking.request_auth.registry import fetch_auth; "
            "print(type(fetch_auth('mlflow_secrets_auth')).__name__)")
    done = subprocess.run([str(fresh / "python"), "-c", code],
                          env=clean_env(), capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "MlflowSecretsAuth"
