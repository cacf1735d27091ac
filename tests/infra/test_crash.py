"""Crash safety: SIGKILL a writer at random moments; every acknowledged write survives.

A child process runs a random mix of writes on one store — batches of adds, updates (new
versions, checked against the version it read) and deletes — and prints each one once the
store call has returned (acknowledged). The parent kills it with SIGKILL at a random moment,
``KILLS`` times over the same store, then reopens it and checks:

- every acknowledged add is there, and no batch is half written;
- every acknowledged update or delete is there: the item's version is at least the
  acknowledged one, and an item whose last acknowledged write was its delete is deleted;
- history is consistent: each item's first entry is its add, versions in history rise one
  by one without gaps and end at the item's version;
- the indexes agree with the rows: full-text search (by each child's own word) and vector
  search over every status return every item.

Both backends: 200 kills on SQLite, 100 on PostgreSQL (a real server from pgserver);
``MNEMIC_CRASH_KILLS`` overrides the SQLite number (PostgreSQL takes half).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mnemic.infra.store.base import ItemFilter
from mnemic.infra.store.sqlite import SQLiteStore

KILLS = int(os.environ.get("MNEMIC_CRASH_KILLS", "200"))
DIM = 8
BATCH = 3

CHILD = r"""
import random, sys, numpy as np
from mnemic.models import MemoryItem, MemoryStatus
backend, where, seed = sys.argv[4], sys.argv[1], int(sys.argv[2])
known = open(sys.argv[3]).read().split()  # ids acknowledged before
rng = random.Random(seed)
vec = np.random.default_rng(seed)
if backend == "postgres":
    from mnemic.infra.store.postgres import PostgresStore
    store = PostgresStore(where, dim=8, pool_size=1)
else:
    from mnemic.infra.store.sqlite import SQLiteStore
    store = SQLiteStore(where, dim=8)
print("ready", flush=True)
n = 0
while True:
    n += 1
    op = rng.random()
    if op < 0.5 or not known:
        items = [MemoryItem(user_id="ana", cube_id="c", text=f"s{seed} n{n} k{k} pears",
                            metadata={"batch": f"{seed}-{n}"}) for k in range(3)]
        store.add_items(items, vec.normal(size=(3, 8)).astype(np.float32), actor="crash")
        known += [i.id for i in items]
        print("A " + " ".join(i.id for i in items), flush=True)
    else:
        item_id = rng.choice(known)
        (old,) = store.get_items("ana", "c", [item_id])
        if op < 0.85:
            new = old.model_copy(update={"text": f"{old.text} u{seed}-{n}",
                                         "version": old.version + 1})
            store.update_item(new, vec.normal(size=8).astype(np.float32), actor="crash",
                              expected_version=old.version)
            print(f"U {item_id} {new.version}", flush=True)
        elif old.status != MemoryStatus.DELETED:
            new = old.model_copy(update={"status": MemoryStatus.DELETED,
                                         "version": old.version + 1})
            store.update_item(new, None, actor="crash", action="delete",
                              expected_version=old.version)
            print(f"D {item_id} {new.version}", flush=True)
"""


def open_store(backend: str, where: str) -> Any:
    if backend == "postgres":
        from mnemic.infra.store.postgres import PostgresStore

        return PostgresStore(where, dim=DIM)
    return SQLiteStore(where, dim=DIM)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_sigkill_never_loses_an_acknowledged_write(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    where = request.getfixturevalue("pg_dsn") if backend == "postgres" else str(tmp_path / "c.db")
    kills = KILLS if backend == "sqlite" else max(1, KILLS // 2)
    open_store(backend, where).close()
    rng = random.Random(7)
    added: list[str] = []
    last_write: dict[str, tuple[str, int]] = {}  # id -> (U|D, acknowledged version)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    acks = 0
    known = tmp_path / "known.txt"
    for kill in range(kills):
        known.write_text(" ".join(added))
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, where, str(kill), str(known), backend],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert child.stdout is not None
        ready = child.stdout.readline()
        assert ready == "ready\n", child.stderr.read() if child.stderr else "child died"
        # once it has acknowledged a first write, kill it at a random moment of its loop
        first = child.stdout.readline()
        assert first, child.stderr.read() if child.stderr else "child died"
        time.sleep(rng.uniform(0.0, 0.08))
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate(timeout=30)
        for line in [first, *out.splitlines()]:
            kind, *rest = line.split()
            acks += 1
            if kind == "A":
                added.extend(rest)
            else:
                last_write[rest[0]] = (kind, int(rest[1]))

    with open_store(backend, where) as store:
        rows = store.list_items("ana", "c", ItemFilter.any_status(), limit=1_000_000)
        by_id = {i.id: i for i in rows}
        assert set(added) <= set(by_id), "an acknowledged add was lost"
        batches: dict[str, int] = {}
        for item in rows:
            batches[item.metadata["batch"]] = batches.get(item.metadata["batch"], 0) + 1
        assert set(batches.values()) == {BATCH}, "a batch was half written"
        for item_id, (kind, version) in last_write.items():
            item = by_id[item_id]
            assert item.version >= version, f"acknowledged version {version} of {item_id} lost"
            if kind == "D" and item.version == version:
                assert item.status == "deleted"
        for item in rows:
            history = store.history("ana", "c", item.id)
            assert history[0].action == "add"
            versions = [h.after["version"] for h in history if h.after is not None]
            assert versions == list(range(1, item.version + 1)), (item.id, versions)
        total = len(rows)
        everything = ItemFilter.any_status()
        # each child's rows share its word s<kill>: a narrow word, whose rows full text ranks
        # all of them (a word in every row is looked up only among the newest rows of a
        # table past FTS_PRUNE_ROWS, and a fast machine writes more rows than that)
        found: set[str] = set()
        for kill in range(kills):
            found |= {
                h.item_id for h in store.fulltext_search("ana", "c", f"s{kill}", total, everything)
            }
        assert found == set(by_id), "full text lost or kept rows that are not there"
        probe = np.ones(DIM, dtype=np.float32)
        assert len(store.vector_search("ana", "c", probe, total + 10, everything)) == total
        if backend == "sqlite":
            assert store._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # the kills landed while writes were going on: many acknowledged of each kind
    assert acks >= kills and len(last_write) >= kills // 4, (acks, len(last_write))
