"""Crash safety of the organizer: SIGKILL a process while it adds items and reorganizes.

A child process adds batches of items to one scope (facts, some near-duplicates of stored
ones so that passes merge them, and turns of sessions that name people, so that passes link
them) and runs a reorganization pass after each batch, with a small topic bound so passes
split topics. It prints each batch once the store acknowledged it. The parent kills it with
SIGKILL at a random moment, ``KILLS`` times, then reopens the store and checks that it is
consistent:

- no item lost: every acknowledged item is there, active or merged (nothing else), so
  active + merged is the number of items stored;
- the tree holds only active items, under topics that exist, and the topics' sizes add up;
- every merged item points to an item that exists, its last history row is the merge, and
  a ``merged_into`` edge records it; every edge joins items that exist;
- each item's history versions rise one by one to its version;
- a pass over the recovered store works, and a second pass changes nothing.

The child prints "A" then runs a pass at once, so a kill whose last line was "A" landed
inside a pass. Every other kill is aimed there (within 2 ms of reading an "A"), the others
come at a random moment; at least a quarter of the kills must land inside a pass
(``pytest -s`` prints how many).

SQLite (``MNEMIC_ORG_KILLS``, default 25) and PostgreSQL (a third as many).
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

import pytest

from mnemic.config import OrganizerConfig
from mnemic.infra.store.base import ItemFilter
from mnemic.models import MemoryStatus
from mnemic.operation.organizer import Organizer

KILLS = int(os.environ.get("MNEMIC_ORG_KILLS", "25"))
DIM = 8
U, C = "ana", "c"
CONFIG = OrganizerConfig(max_topic_size=6, topic_similarity=0.2, duplicate_similarity=0.97)

CHILD = r"""
import random, sys, numpy as np
from mnemic.config import OrganizerConfig
from mnemic.models import MemoryItem, MemoryKind
from mnemic.operation.organizer import Organizer
backend, where, seed = sys.argv[3], sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
gen = np.random.default_rng(seed)
if backend == "postgres":
    from mnemic.infra.store.postgres import PostgresStore
    store = PostgresStore(where, dim=8, pool_size=1)
else:
    from mnemic.infra.store.sqlite import SQLiteStore
    store = SQLiteStore(where, dim=8)
org = Organizer(store, OrganizerConfig(**__import__("json").loads(sys.argv[4])))
names = ["Oscar", "Lena", "Tomas", "Ines", "Hugo"]
print("ready", flush=True)
n = 0
while True:
    n += 1
    facts = [i for i in store.list_items("ana", "c", limit=10**6) if i.kind == "fact"]
    items, vecs = [], []
    for k in range(4):
        if facts and rng.random() < 0.4:  # a near-duplicate of a stored fact
            base = rng.choice(facts)
            v = store.get_vectors("ana", "c", [base.id]).get(base.id)
            if v is None:
                continue
            items.append(MemoryItem(user_id="ana", cube_id="c", text=base.text + " indeed",
                                    kind=MemoryKind.FACT))
            vecs.append(v + gen.normal(size=8).astype(np.float32) * 0.01)
        elif rng.random() < 0.5:
            items.append(MemoryItem(user_id="ana", cube_id="c", kind=MemoryKind.RAW_TURN,
                                    session_id=f"s{seed}", speaker="Ana",
                                    text=f"Yesterday {rng.choice(names)} came by ({n}, {k})"))
            vecs.append(gen.normal(size=8).astype(np.float32))
        else:
            items.append(MemoryItem(user_id="ana", cube_id="c", kind=MemoryKind.FACT,
                                    text=f"fact {seed}-{n}-{k}"))
            vecs.append(gen.normal(size=8).astype(np.float32))
    if items:
        arr = np.stack(vecs)
        arr /= np.linalg.norm(arr, axis=1, keepdims=True)
        store.add_items(items, arr, actor="crash")
        print("A " + " ".join(i.id for i in items), flush=True)
    org.run("ana", "c")
    print("R", flush=True)
"""


def open_store(backend: str, where: str) -> Any:
    if backend == "postgres":
        from mnemic.infra.store.postgres import PostgresStore

        return PostgresStore(where, dim=DIM)
    from mnemic.infra.store.sqlite import SQLiteStore

    return SQLiteStore(where, dim=DIM)


def check_consistent(store: Any, acknowledged: list[str]) -> None:
    everything = store.list_items(U, C, ItemFilter.any_status(), limit=10**6)
    by_id = {i.id: i for i in everything}
    assert set(acknowledged) <= set(by_id), "an acknowledged item was lost"
    statuses = {i.status for i in everything}
    assert statuses <= {MemoryStatus.ACTIVE, MemoryStatus.MERGED}, statuses
    active = store.count_items(U, C)
    merged = store.count_items(U, C, ItemFilter(statuses=(MemoryStatus.MERGED,)))
    assert active + merged == len(everything)
    members = store.topic_members(U, C)
    topics = {t.id: t for t in store.topics(U, C)}
    assert set(members.values()) <= set(topics), "an item sits under a topic that is gone"
    assert all(by_id[i].status == MemoryStatus.ACTIVE for i in members), "a merged leaf"
    assert sum(t.size for t in topics.values()) == len(members)
    assert all(t.size > 0 for t in topics.values()), "an empty topic was left"
    edges = store.links(U, C)
    assert all(e.src in by_id and e.dst in by_id for e in edges)
    merged_edges = {(e.src, e.dst) for e in edges if e.kind == "merged_into"}
    for item in everything:
        history = store.history(U, C, item.id)
        versions = [h.after["version"] for h in history if h.after and "version" in h.after]
        assert versions == list(range(1, item.version + 1)), (item.id, versions)
        if item.status == MemoryStatus.MERGED:
            target = item.metadata["merged_into"]
            assert target in by_id and (item.id, target) in merged_edges
            assert history[-1].action == "merge"
            assert item.id in by_id[target].metadata["absorbed"]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_sigkill_mid_reorganization_leaves_a_consistent_store(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    import json

    where = request.getfixturevalue("pg_dsn") if backend == "postgres" else str(tmp_path / "o.db")
    kills = KILLS if backend == "sqlite" else max(1, KILLS // 3)
    open_store(backend, where).close()
    rng = random.Random(11)
    acknowledged: list[str] = []
    passes = mid_pass = 0
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    config = json.dumps(CONFIG.model_dump())
    for kill in range(kills):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, where, str(kill), backend, config],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert child.stdout is not None
        ready = child.stdout.readline()
        assert ready == "ready\n", child.stderr.read() if child.stderr else "child died"
        # read 1 to 3 acknowledged batches: the child is in the pass after the last one
        seen: list[str] = []
        for _ in range(rng.randint(1, 3)):
            line = child.stdout.readline()
            while line.startswith("R"):
                seen.append(line)
                line = child.stdout.readline()
            assert line.startswith("A "), child.stderr.read() if child.stderr else "child died"
            seen.append(line)
        # every other kill is aimed into that pass (a pass takes milliseconds at least);
        # the others land at a random moment of the add-and-reorganize loop
        time.sleep(rng.uniform(0.0, 0.002) if kill % 2 == 0 else rng.uniform(0.0, 0.3))
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate(timeout=60)
        lines = [*seen, *out.splitlines()]
        # after "A" the child runs a pass at once: a kill after an "A" landed inside a pass
        mid_pass += lines[-1].startswith("A ")
        for line in lines:
            kind, *rest = line.split()
            if kind == "A":
                acknowledged.extend(rest)
            else:
                passes += 1
        with open_store(backend, where) as store:
            check_consistent(store, acknowledged)

    with open_store(backend, where) as store:
        org = Organizer(store, CONFIG)
        org.run(U, C)
        check_consistent(store, acknowledged)
        assert not org.run(U, C).changed, "a second pass still changed something"
        assert store.count_items(U, C, ItemFilter(statuses=(MemoryStatus.MERGED,))) > 0
        assert len(store.topics(U, C)) > 1
        if backend == "sqlite":
            assert store._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # many passes completed, and many kills landed inside one
    print(f"{backend}: {kills} kills, {mid_pass} inside a pass, {passes} passes completed")
    assert passes >= kills // 2 and len(acknowledged) >= 4 * kills, (passes, len(acknowledged))
    assert mid_pass >= kills // 4, (mid_pass, kills)
