"""Crash safety: SIGKILL a writer at random moments; every acknowledged write survives.

A child process adds batches of items to a SQLite store and prints the ids of each batch
once ``add_items`` has returned (acknowledged). The parent kills it with SIGKILL at a random
moment, many times over the same file, then checks: every acknowledged item is there, no
half-written batch exists, each item has its history row, and the full-text and vector
indexes agree with the rows.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mnemic.infra.store.base import ItemFilter
from mnemic.infra.store.sqlite import SQLiteStore

KILLS = 25
DIM = 8

CHILD = r"""
import sys, numpy as np
from mnemic.infra.store.sqlite import SQLiteStore
from mnemic.models import MemoryItem
path, seed = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(seed)
store = SQLiteStore(path, dim=8)
batch = 0
while True:
    items = [MemoryItem(user_id="ana", cube_id="c", text=f"s{seed} b{batch} n{n} pears",
                        metadata={"batch": f"{seed}-{batch}"}) for n in range(5)]
    store.add_items(items, rng.normal(size=(5, 8)).astype(np.float32), actor="crash")
    print(" ".join(i.id for i in items), flush=True)
    batch += 1
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_sigkill_never_loses_an_acknowledged_write(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    SQLiteStore(path, dim=DIM).close()
    rng = random.Random(7)
    acknowledged: list[str] = []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for kill in range(KILLS):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), str(kill)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        # wait until it writes, then kill it at a random moment in its write loop
        first = child.stdout.readline() if child.stdout else ""
        assert first, child.stderr.read() if child.stderr else "child died"
        time.sleep(rng.uniform(0.0, 0.15))
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate(timeout=30)
        for line in [first, *out.splitlines()]:
            acknowledged.extend(line.split())

    with SQLiteStore(path) as store:
        rows = store.list_items("ana", "c", ItemFilter.any_status(), limit=1_000_000)
        ids = {i.id for i in rows}
        assert set(acknowledged) <= ids, "an acknowledged write was lost"
        batches: dict[str, int] = {}
        for item in rows:
            batches[item.metadata["batch"]] = batches.get(item.metadata["batch"], 0) + 1
        assert set(batches.values()) == {5}, "a batch was half written"
        assert all(store.history("ana", "c", i)[0].action == "add" for i in list(ids)[:50])
        total = len(rows)
        assert len(store.fulltext_search("ana", "c", "pears", total + 10)) == total
        probe = np.ones(DIM, dtype=np.float32)
        assert len(store.vector_search("ana", "c", probe, total + 10)) == total
        db = store._db  # direct counts: the index tables agree with the rows
        assert db.execute("SELECT count(*) FROM items_fts").fetchone()[0] == total
        assert db.execute("SELECT count(*) FROM vectors").fetchone()[0] == total
        assert db.execute("SELECT count(*) FROM history").fetchone()[0] == total
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert len(acknowledged) >= KILLS * 5
