"""The per-request cost of an MLflow auth plugin, for `cargo xtask bench`.

Run with the Python of a venv holding MLflow and one plugin named
``mlflow_secrets_auth`` (ours or the predecessor), configured by the
environment (BENCH_URL is the request's URL). Measures what MLflow does per
request — ``fetch_auth("mlflow_secrets_auth")``, then the auth on a prepared
request — on a warm cache; best of 7 runs. The request's header is removed
before each call (so neither plugin finds it set), which is counted in: no
baseline is subtracted, so the figure is never below zero. Prints one JSON
object: {"ns": ...}.
"""

import json
import os
import timeit

import requests
from mlflow.tracking.request_auth.registry import fetch_auth

prepared = requests.Request("GET", os.environ["BENCH_URL"]).prepare()
fetch_auth("mlflow_secrets_auth")(prepared)
assert "Authorization" in prepared.headers, "no credential"
headers = prepared.headers


def once():
    headers.pop("Authorization", None)
    fetch_auth("mlflow_secrets_auth")(prepared)


n = 20000
call = min(timeit.repeat(once, number=n, repeat=7)) / n
assert "Authorization" in prepared.headers, "no credential"
print(json.dumps({"ns": call * 1e9}))
