"""The per-request cost of an MLflow auth plugin, for `cargo xtask bench`.

Run with the Python of a venv holding MLflow and one plugin named
``mlflow_secrets_auth`` (ours or the predecessor), configured by the
environment (BENCH_URL is the request's URL). Measures what MLflow does per
request — ``fetch_auth("mlflow_secrets_auth")``, then the auth on a prepared
request — on a warm cache, minus copying the request; best of 7 runs. Prints
one JSON object: {"ns": ...}.
"""

import json
import os
import timeit

import requests
from mlflow.tracking.request_auth.registry import fetch_auth

prepared = requests.Request("GET", os.environ["BENCH_URL"]).prepare()
warm = prepared.copy()
fetch_auth("mlflow_secrets_auth")(warm)
assert "Authorization" in warm.headers, "no credential"
n = 20000
copy = min(timeit.repeat(lambda: prepared.copy(), number=n, repeat=7)) / n
call = min(
    timeit.repeat(lambda: fetch_auth("mlflow_secrets_auth")(prepared.copy()), number=n, repeat=7)
) / n
print(json.dumps({"ns": (call - copy) * 1e9}))
