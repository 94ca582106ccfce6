"""The plugin inside the unmodified MLflow client, against real servers."""

from __future__ import annotations

import secrets
import textwrap
import timeit

from conftest import run_python

LOG_RUN = textwrap.dedent(
    """
    import mlflow
    mlflow.set_experiment("{experiment}")
    with mlflow.start_run():
        mlflow.log_metric("accuracy", 0.5)
    print("logged")
    """
)


def last_line(done) -> str:
    """The script's own last line (MLflow prints run links before it)."""
    return done.stdout.strip().splitlines()[-1]


def user(mlflow_server, moto, name: str):
    """A new MLflow user whose credential is stored in moto under `name`."""
    password = "pw-" + secrets.token_hex(8)
    mlflow_server.create_user(name, password)
    moto.put(name, f'{{"username": "{name}", "password": "{password}"}}')
    return password


def plugin_env(mlflow_server, moto, secret: str, **extra: str):
    return {
        "MLFLOW_TRACKING_URI": mlflow_server.url,
        "MLFLOW_TRACKING_AUTH": "mlflow_secrets_auth",
        "MLFLOW_SECRETS_ALLOWED_HOSTS": "127.0.0.1",
        **moto.env(secret),
        **extra,
    }


def test_the_mlflow_client_logs_a_run_with_only_the_env_and_gets_401_without(
    mlflow_server, moto
):
    user(mlflow_server, moto, "plugin-user")
    env = plugin_env(mlflow_server, moto, "plugin-user")
    done = run_python(LOG_RUN.format(experiment="plugin-basic"), env)
    assert done.returncode == 0, done.stderr
    assert last_line(done) == "logged"

    without = {k: v for k, v in env.items() if k != "MLFLOW_TRACKING_AUTH"}
    refused = run_python(LOG_RUN.format(experiment="plugin-basic"), without)
    assert refused.returncode != 0
    assert "401" in refused.stderr


def test_no_credential_reaches_a_tracking_host_outside_the_allowlist(moto, capture):
    password = "pw-" + secrets.token_hex(8)
    moto.put("allowlist-user", f'{{"username": "allowlist-user", "password": "{password}"}}')
    env = {
        "MLFLOW_TRACKING_URI": capture.url,
        "MLFLOW_TRACKING_AUTH": "mlflow_secrets_auth",
        "MLFLOW_SECRETS_ALLOWED_HOSTS": "mlflow.example.com",
        **moto.env("allowlist-user"),
    }
    done = run_python("import mlflow\nprint(mlflow.search_experiments())", env)
    assert done.returncode == 0, done.stderr
    assert capture.requests, "MLflow called the tracking server"
    assert all("authorization" not in r for r in capture.requests)
    assert not capture.saw(password)
    assert not capture.saw(f"allowlist-user:{password}")


def test_a_redirect_to_a_disallowed_host_carries_no_custom_header(
    moto, capture, other_host
):
    password = "pw-" + secrets.token_hex(8)
    moto.put("redirect-user", f'{{"username": "redirect-user", "password": "{password}"}}')
    capture.redirect_to = other_host.url + "/landing"
    env = {
        "MLFLOW_SECRETS_ALLOWED_HOSTS": "127.0.0.1",
        "MLFLOW_AUTH_HEADER_NAME": "X-MLflow-Auth",
        **moto.env("redirect-user"),
    }
    code = textwrap.dedent(
        f"""
        import requests
        from mlflow_secrets_auth import SecretsAuthProviderFactory
        auth = SecretsAuthProviderFactory().get_auth()
        response = requests.get("{capture.url}/start", auth=auth, timeout=10)
        print(response.status_code, len(response.history))
        """
    )
    done = run_python(code, env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["200", "1"]
    assert "x-mlflow-auth" in capture.requests[0], "the allowed host got it"
    assert other_host.requests, "the redirect was followed"
    assert all("x-mlflow-auth" not in r for r in other_host.requests)
    assert not other_host.saw(password)
    assert not other_host.saw(f"redirect-user:{password}")


def test_a_rotated_password_is_fetched_again_exactly_once(mlflow_server, moto, counted_moto):
    old = user(mlflow_server, moto, "rotating-user")
    assert old
    new = "pw-" + secrets.token_hex(8)
    code = textwrap.dedent(
        f"""
        import base64, json, urllib.request
        import boto3, mlflow
        import mlflow_secrets_auth
        mlflow.set_experiment("plugin-rotation")
        with mlflow.start_run():
            mlflow.log_metric("before", 1.0)
        # Rotate: MLflow first, then the secret store.
        request = urllib.request.Request(
            "{mlflow_server.url}/api/2.0/mlflow/users/update-password",
            data=json.dumps({{"username": "rotating-user", "password": "{new}"}}).encode(),
            method="PATCH", headers={{"Content-Type": "application/json"}})
        token = base64.b64encode(b"admin:{mlflow_server.admin_password}").decode()
        request.add_header("Authorization", "Basic " + token)
        urllib.request.urlopen(request, timeout=30)
        boto3.client("secretsmanager", region_name="us-east-1", endpoint_url="{moto.url}",
                     aws_access_key_id="testing", aws_secret_access_key="testing").put_secret_value(
            SecretId="rotating-user",
            SecretString=json.dumps({{"username": "rotating-user", "password": "{new}"}}))
        with mlflow.start_run():
            mlflow.log_metric("after", 2.0)
        """
    )
    # Backend requests are counted by a proxy in front of moto, not by the
    # plugin: one fetch, then one after MLflow refused the old password.
    env = plugin_env(mlflow_server, moto, "rotating-user", AWS_ENDPOINT_URL=counted_moto.url)
    done = run_python(code, env)
    assert done.returncode == 0, done.stderr
    assert counted_moto.count == 2, done.stderr


def test_a_forked_child_logs_a_metric(mlflow_server, moto, counted_moto):
    user(mlflow_server, moto, "fork-user")
    code = textwrap.dedent(
        """
        import multiprocessing, sys
        import mlflow
        import mlflow_secrets_auth
        experiment = mlflow.set_experiment("plugin-fork")
        with mlflow.start_run():
            mlflow.log_metric("parent", 1.0)

        def child():
            with mlflow.start_run(experiment_id=experiment.experiment_id):
                mlflow.log_metric("child", 2.0)

        process = multiprocessing.get_context("fork").Process(target=child)
        process.start()
        process.join(120)
        print("child", process.exitcode)
        """
    )
    env = plugin_env(mlflow_server, moto, "fork-user", AWS_ENDPOINT_URL=counted_moto.url)
    done = run_python(code, env)
    assert done.returncode == 0, done.stderr
    assert last_line(done) == "child 0", done.stderr
    # The core is rebuilt in the child (its runtime's threads do not survive
    # a fork): one fetch in the parent and one in the child, not one per
    # request.
    assert counted_moto.count == 2, done.stderr


def test_sixteen_threads_on_a_cold_cache_cause_one_fetch(mlflow_server, moto, counted_moto):
    user(mlflow_server, moto, "threads-user")
    code = textwrap.dedent(
        """
        import threading
        from mlflow import MlflowClient
        import mlflow_secrets_auth
        client = MlflowClient()
        barrier = threading.Barrier(16)
        errors = []
        def work():
            barrier.wait()
            try:
                client.search_experiments(max_results=1)
            except Exception as error:
                errors.append(error)
        threads = [threading.Thread(target=work) for _ in range(16)]
        for t in threads: t.start()
        for t in threads: t.join()
        print("errors", len(errors))
        """
    )
    env = plugin_env(mlflow_server, moto, "threads-user", AWS_ENDPOINT_URL=counted_moto.url)
    done = run_python(code, env)
    assert done.returncode == 0, done.stderr
    assert last_line(done) == "errors 0", done.stderr
    assert counted_moto.count == 1, "sixteen threads, one backend request"


def test_per_request_overhead_on_a_warm_cache_is_reported(moto, capsys):
    """Not a speed assertion: prints the figure for the notes."""
    moto.put("timing-user", '{"username": "timing-user", "password": "pw-timing-1"}')
    code = textwrap.dedent(
        """
        import timeit, requests
        from mlflow_secrets_auth import SecretsAuthProviderFactory
        auth = SecretsAuthProviderFactory().get_auth()
        prepared = requests.Request("GET", "https://mlflow.example.com/api/2.0/mlflow/experiments/search").prepare()
        auth(prepared)  # warm
        n = 20000
        per_call = min(timeit.repeat(lambda: auth(prepared), number=n, repeat=5)) / n
        print(f"{per_call * 1e6:.2f}")
        """
    )
    env = {"MLFLOW_SECRETS_ALLOWED_HOSTS": "mlflow.example.com", **moto.env("timing-user")}
    done = run_python(code, env)
    assert done.returncode == 0, done.stderr
    per_call_us = float(done.stdout.strip())
    assert per_call_us > 0
    with capsys.disabled():
        print(f"\nplugin __call__ on a warm cache: {per_call_us:.2f} µs per request")
