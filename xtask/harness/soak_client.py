"""One Python process of `cargo xtask soak`: MLflow's request path per call
(`fetch_auth("mlflow_secrets_auth")`, then the auth on a prepared request),
in a loop, while the backend keeps failing.

Configured by the environment (the plugin's variables and SOAK_URL). Warms
the cache, prints "ready", waits for a line on stdin, calls for argv[1]
seconds (pausing 1 ms between calls), then prints one JSON object: calls,
failed (calls that got no credential or a different one), first_failure,
buckets (latency histogram, the soak's log-linear buckets) and max_ns.
"""

import json
import os
import sys
import time

import requests
from mlflow.tracking.request_auth.registry import fetch_auth

URL = os.environ["SOAK_URL"]
PREPARED = requests.Request("GET", URL).prepare()


def header():
    request = PREPARED.copy()
    fetch_auth("mlflow_secrets_auth")(request)
    return request.headers.get("Authorization")


def bucket(ns):
    """The soak's histogram bucket of `ns` (3 significant bits)."""
    if ns < 8:
        return ns
    log = ns.bit_length() - 1
    return (log - 2) * 8 + ((ns >> (log - 3)) & 7)


def main():
    seconds = float(sys.argv[1])
    expected = header()
    if expected is None:
        sys.exit("no credential at the start")
    print("ready", flush=True)
    sys.stdin.readline()
    calls = failed = max_ns = 0
    first_failure = None
    buckets = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter_ns()
        got = header()
        took = time.perf_counter_ns() - started
        calls += 1
        if got != expected:
            failed += 1
            first_failure = first_failure or ("no credential" if got is None else "a different credential")
        b = bucket(took)
        buckets[b] = buckets.get(b, 0) + 1
        max_ns = max(max_ns, took)
        time.sleep(0.001)
    print(json.dumps({
        "calls": calls,
        "failed": failed,
        "first_failure": first_failure,
        "buckets": buckets,
        "max_ns": max_ns,
    }), flush=True)


main()
