"""Measures the predecessor (mlflow-secrets-auth 0.2.0) for `cargo xtask bench`.

Configured by the environment like the package itself (the caller sets the same
variables it gives ours); prints one JSON object. Modes:
  warm           per-call cost of get_request_auth(url) on a warm cache
  burst N        N threads call it at once on a cold cache
  timed          one call, its duration and whether a credential came back
  stale          one call, then waits for a line on stdin, then a timed call
"""

import json
import os
import sys
import threading
import time
import timeit

import mlflow_secrets_auth

factory = mlflow_secrets_auth.SecretsAuthProviderFactory()
url = os.environ["BENCH_URL"]
mode = sys.argv[1]


def timed_call():
    started = time.perf_counter()
    auth = factory.get_request_auth(url)
    return {"seconds": time.perf_counter() - started, "served": auth is not None}


if mode == "warm":
    assert factory.get_request_auth(url) is not None, "no credential"
    n = 20000
    best = min(timeit.repeat(lambda: factory.get_request_auth(url), number=n, repeat=5))
    print(json.dumps({"ns": best / n * 1e9}))
elif mode == "burst":
    n = int(sys.argv[2])
    barrier = threading.Barrier(n)
    served = []

    def work():
        barrier.wait()
        served.append(factory.get_request_auth(url) is not None)

    threads = [threading.Thread(target=work) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"served": sum(served)}))
elif mode == "timed":
    print(json.dumps(timed_call()))
elif mode == "stale":
    first = timed_call()
    print("ready", flush=True)
    sys.stdin.readline()
    print(json.dumps({"first": first, "after": timed_call()}))
else:
    sys.exit(f"unknown mode {mode}")
