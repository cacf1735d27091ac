"""Load on the REST API (``mnemic bench serve``): concurrent clients send a mix of adds and
searches over loopback; every request must succeed and every acknowledged add must be
readable afterwards (the count is checked per user). Reports p50/p95 latency per operation.

By default a fresh server runs in a subprocess (its own interpreter, as in production) on a
free port with a temporary home; ``url`` + ``admin_key`` load an already running server.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

_VOCABULARY = """cat dog trip Lisbon Porto sister brother cello pottery marathon garden recipe
ramen meeting launch Friday Sunday concert museum book movie painting hiking beach job"""
WORDS = _VOCABULARY.split()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(home: Path, admin_key: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {
        **os.environ,
        "MNEMIC_HOME": str(home),
        "MNEMIC_ADMIN_KEY": admin_key,
        # the bench measures the server, not the per-key rate bound
        "MNEMIC_SERVER__RATE_LIMIT": "1000000",
        "MNEMIC_SERVER__RATE_BURST": "1000000",
        "HF_HUB_OFFLINE": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "mnemic.interface.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(url + "/v1/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"the server did not start: {err[-2000:]}")
        time.sleep(0.1)


def run(
    *,
    requests: int = 2000,
    clients: int = 8,
    add_share: float = 0.5,
    url: str | None = None,
    admin_key: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    proc = None
    tmp = None
    if url is None:
        tmp = tempfile.TemporaryDirectory(prefix="mnemic-bench-serve-")
        admin_key = "bench-admin-" + os.urandom(8).hex()
        proc, url = start_server(Path(tmp.name), admin_key)
    if not admin_key:
        raise ValueError("pass the server's admin key with url")
    try:
        return _load(url, admin_key, requests, clients, add_share, seed)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)
        if tmp is not None:
            tmp.cleanup()


def _load(
    url: str, admin_key: str, requests: int, clients: int, add_share: float, seed: int
) -> dict[str, Any]:
    run_id = os.urandom(4).hex()
    admin = httpx.Client(base_url=url, headers={"authorization": f"Bearer {admin_key}"})
    keys = []
    for n in range(clients):
        r = admin.post("/v1/users", json={"user_id": f"bench-{run_id}-{n}"})
        r.raise_for_status()
        keys.append((r.json()["user_id"], r.json()["api_key"]))
    per_client = [
        requests // clients + (1 if i < requests % clients else 0) for i in range(clients)
    ]
    latencies: dict[str, list[float]] = {"add": [], "search": []}
    errors: list[str] = []
    acked = [0] * clients
    lock = threading.Lock()
    start_gate = threading.Barrier(clients)

    def work(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        _, key = keys[i]
        http = httpx.Client(base_url=url, headers={"authorization": f"Bearer {key}"}, timeout=120)
        start_gate.wait()
        for n in range(per_client[i]):
            words = " ".join(rng.choices(WORDS, k=8))
            op = "add" if n == 0 or rng.random() < add_share else "search"
            t0 = time.perf_counter()
            try:
                if op == "add":
                    body: dict[str, Any] = {"messages": f"note {n}: {words}", "session_id": "s"}
                    r = http.post("/v1/memories", json=body)
                else:
                    r = http.post("/v1/memories/search", json={"query": words, "top_k": 10})
            except httpx.HTTPError as exc:
                with lock:
                    errors.append(f"{op}: {exc!r}")
                continue
            elapsed = time.perf_counter() - t0
            with lock:
                if r.status_code >= 400:
                    errors.append(f"{op}: HTTP {r.status_code} {r.text[:200]}")
                else:
                    latencies[op].append(elapsed)
                    if op == "add":
                        acked[i] += len(r.json())
        http.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0

    lost = 0
    for i, (_, key) in enumerate(keys):
        r = httpx.get(
            url + "/v1/memories",
            params={"limit": 10_000},
            headers={"authorization": f"Bearer {key}"},
            timeout=120,
        )
        stored = len(r.json()) if r.status_code == 200 else 0
        lost += max(0, acked[i] - stored)
    admin.close()

    def stats(values: list[float]) -> dict[str, float]:
        if not values:
            return {"n": 0, "p50_ms": 0.0, "p95_ms": 0.0, "max_ms": 0.0}
        arr = np.array(values) * 1000
        return {
            "n": len(values),
            "p50_ms": float(np.percentile(arr, 50)),
            "p95_ms": float(np.percentile(arr, 95)),
            "max_ms": float(arr.max()),
        }

    everything = latencies["add"] + latencies["search"]
    return {
        "requests": requests,
        "clients": clients,
        "wall_s": wall,
        "throughput_rps": len(everything) / wall if wall else 0.0,
        "errors": len(errors),
        "error_samples": errors[:5],
        "acknowledged_items": sum(acked),
        "lost_writes": lost,
        "ops": {
            "add": stats(latencies["add"]),
            "search": stats(latencies["search"]),
            "all": stats(everything),
        },
    }
