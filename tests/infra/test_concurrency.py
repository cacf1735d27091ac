"""Several processes writing one SQLite store at once: nothing lost, no "database is locked"."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import numpy as np

from mnemic.infra.store.base import ItemFilter
from mnemic.infra.store.sqlite import SQLiteStore
from mnemic.models import MemoryItem

WRITERS = 4
BATCHES = 25
PER_BATCH = 8
DIM = 16


def _writer(path: str, worker: int, errors: mp.Queue) -> None:
    try:
        rng = np.random.default_rng(worker)
        with SQLiteStore(path, dim=DIM) as store:
            for batch in range(BATCHES):
                items = [
                    MemoryItem(
                        user_id="ana", cube_id="shared", text=f"w{worker} b{batch} n{n} apples"
                    )
                    for n in range(PER_BATCH)
                ]
                vectors = rng.normal(size=(PER_BATCH, DIM)).astype(np.float32)
                store.add_items(items, vectors, actor=f"worker-{worker}")
                # read while others write: searches must not fail either
                store.fulltext_search("ana", "shared", "apples", 5)
                store.vector_search("ana", "shared", vectors[0], 5)
    except Exception as exc:  # reported to the parent, which fails the test
        errors.put(f"worker {worker}: {type(exc).__name__}: {exc}")


def test_four_writer_processes_lose_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    SQLiteStore(path, dim=DIM).close()  # created once, as a deployment would
    ctx = mp.get_context("spawn")
    errors: mp.Queue = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(path, w, errors)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert found == []
    assert all(p.exitcode == 0 for p in procs)

    total = WRITERS * BATCHES * PER_BATCH
    with SQLiteStore(path) as store:
        assert store.count_items("ana", "shared", ItemFilter.any_status()) == total
        texts = {i.text for i in store.list_items("ana", "shared", limit=total + 1)}
        assert len(texts) == total  # every write is there, none twice
        # the vector index agrees with the rows: every item is reachable by vector search
        assert len(store.vector_search("ana", "shared", np.ones(DIM, np.float32), total)) == total
        assert len(store.fulltext_search("ana", "shared", "apples", total)) == total
