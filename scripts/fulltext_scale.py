"""Full-text latency at scale without the vectors: ``bench scale``'s texts and full-text loop.

    python scripts/fulltext_scale.py sqlite 1000000 [--path F]
    python scripts/fulltext_scale.py postgres 1000000 --dsn postgresql://...   # an empty db

Loads ``n`` text-only items (the bench's Zipf texts over 2,000 made-up words) into one scope
unless the store already holds them, then times 100 three-word queries (k 10) at the
store's full-text budget and window, and at any ``--try BUDGET:WINDOW`` pairs. Without
vectors a 1M PostgreSQL store loads in well under the full bench's time (no HNSW build).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from mnemic.bench.scale import BATCH, CUBE, USER, _texts, _vocab
from mnemic.models import MemoryItem


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("backend", choices=["sqlite", "postgres"])
    ap.add_argument("n", type=int)
    ap.add_argument("--path", type=Path, default=None, help="SQLite file (default ./ft-N.db)")
    ap.add_argument("--dsn", default=None)
    ap.add_argument("--try", dest="variants", action="append", default=[])
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    vocab = _vocab(2000, rng)
    store: Any
    if args.backend == "sqlite":
        from mnemic.infra.store.sqlite import SQLiteStore

        store = SQLiteStore(args.path or Path(f"ft-{args.n}.db"))
    else:
        from mnemic.infra.store.postgres import PostgresStore

        store = PostgresStore(args.dsn, pool_size=2)
    if store.count_items(USER, CUBE) == 0:
        started = time.perf_counter()
        for start in range(0, args.n, BATCH):
            items = [
                MemoryItem(user_id=USER, cube_id=CUBE, text=t, session_id=f"s{(start + i) // 20}")
                for i, t in enumerate(_texts(BATCH, start, rng, vocab))
            ]
            store.add_items(items, None, actor="bench")
            if start % 100_000 == 0:
                print(f"{start} items, {start / (time.perf_counter() - started):.0f}/s", flush=True)
        print(f"added in {time.perf_counter() - started:.0f} s", flush=True)
        if args.backend == "postgres":
            import psycopg

            with psycopg.connect(args.dsn, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE items, postings, term_stats")
    texts = _texts(100, 0, np.random.default_rng(1), vocab)
    queries = [" ".join(t.split()[2:5]) for t in texts]
    variants = [(store.fulltext_budget, store.fulltext_window)]
    variants += [(int(b), int(w)) for b, w in (v.split(":") for v in args.variants)]
    for budget, window in variants:
        store.fulltext_budget, store.fulltext_window = budget, window
        for q in queries[:5]:
            store.fulltext_search(USER, CUBE, q, 10)
        ms = []
        for q in queries:
            t = time.perf_counter()
            store.fulltext_search(USER, CUBE, q, 10)
            ms.append((time.perf_counter() - t) * 1e3)
        p50, p95 = np.percentile(ms, 50), np.percentile(ms, 95)
        print(f"budget {budget} window {window}: p50 {p50:.1f} ms, p95 {p95:.1f} ms", flush=True)


if __name__ == "__main__":
    main()
