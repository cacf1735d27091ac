"""How a store behaves as it grows: ``mnemic bench scale --store sqlite|postgres --n ...``.

Synthetic items (short texts over a 2,000-word vocabulary) with precomputed vectors from
:class:`mnemic.bench.vectors.Corpus` (clustered unit vectors through a random orthogonal
projection, shaped like sentence embeddings), so the embedder is not what is measured. All
items go into one (user, cube) scope through the store's own ``add_items``, in batches of
1,000. For each size and backend:

* add throughput (items/s through ``add_items``, indexes maintained as a user would see);
* vector index build time from the rows (SQLite: the first search after the HNSW snapshot
  is lost; PostgreSQL: ``REINDEX`` of the HNSW index);
* ``vector_search`` and ``fulltext_search`` latency p50/p95 through the Store API;
* recall@10 of ``vector_search`` against exact top-10 (numpy over the same vectors);
* disk size (SQLite: database, WAL and index snapshot; PostgreSQL: pg_database_size).

With ``embedder`` (``--embedder``), items are template sentences about people, activities,
places and times, embedded by that embedder (timed apart: its texts/s is logged, not in add/s),
and the vector queries are fresh sentences embedded the same way: real sentence vectors
instead of synthetic ones, for recall on the distribution a store actually holds.

PostgreSQL: ``--dsn`` names a server where this role may create databases (one
``mnemic_scale_<n>`` per size, dropped afterwards unless ``--keep``); without it a
throwaway server is started with pgserver (``pip install pgserver``).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from mnemic.bench.vectors import Corpus, exact_topk
from mnemic.models import MemoryItem

USER, CUBE = "bench", "bench/default"
BATCH = 1000
WARMUP = 5


@dataclass
class ScaleRow:
    store: str
    n: int
    add_items_per_s: float
    index_build_s: float
    vector_p50_ms: float
    vector_p95_ms: float
    recall_at_10: float
    fulltext_p50_ms: float
    fulltext_p95_ms: float
    disk_mb: float
    queries: int
    # indexed: HNSW kept up during add; deferred: built after; lazy: by the first search
    add_mode: str = "indexed"
    vectors: str = "synthetic"  # or the embedder's id
    embed_texts_per_s: float | None = None


def _texts(n: int, start: int, rng: np.random.Generator, vocab: list[str]) -> list[str]:
    words = rng.zipf(1.3, size=(n, 12)) % len(vocab)
    return [f"note {start + i}: " + " ".join(vocab[w] for w in row) for i, row in enumerate(words)]


# fmt: off
_NAMES = ["Ana", "Ben", "Caroline", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jon",
          "Kemal", "Lena", "Marco", "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tariq",
          "Uma", "Victor", "Wen", "Ximena", "Yusuf", "Zoe", "my sister", "my boss", "Melanie",
          "the neighbours"]
_DOING = ["went hiking", "started learning", "bought", "talked about", "painted", "cooked",
          "lost", "fixed", "read a book about", "signed up for a class on", "adopted",
          "wrote a song about", "visited a museum about", "complained about", "sold",
          "planned a trip around", "took photos of", "volunteered for", "argued about",
          "dreamed about", "ordered", "built", "researched", "gave a talk on", "borrowed"]
_THINGS = ["pottery", "a red bicycle", "sourdough bread", "the violin", "a golden retriever",
           "climate policy", "Japanese", "a vintage camera", "chess openings", "marathon training",
           "a vegetable garden", "jazz records", "the new job", "an old laptop", "tax forms",
           "yoga", "a camping tent", "birdwatching", "a leaking roof", "salsa dancing",
           "quantum computing", "a wedding cake", "knitting patterns", "the school play",
           "electric cars", "a charity run", "oil painting", "a rescue cat", "board games",
           "a podcast", "street food", "the piano", "rock climbing", "a novel", "coffee beans",
           "a kayak", "French cooking", "the garden shed", "a job interview", "a sci-fi film"]
_PLACES = ["in Porto", "at the lake", "downtown", "at the library", "in Kyoto", "at work",
           "at the community centre", "in the mountains", "at home", "in Berlin", "by the sea",
           "at the market", "in Lisbon", "at the gym", "in the park", "at school",
           "at a friend's place", "in Toronto", "on the train", "at the festival"]
_WHEN = ["last weekend", "yesterday", "in May 2023", "this morning", "two weeks ago",
         "on Monday", "last summer", "after dinner", "in 2022", "over the holidays",
         "before work", "on her birthday", "on his birthday", "last night", "next month"]
_HOW = ["happily", "for the first time", "again", "with friends", "alone", "reluctantly",
        "with the kids", "after a long break", "on a whim", "with great care"]
# fmt: on


def _sentences(n: int, rng: np.random.Generator) -> list[str]:
    """Template sentences of the kind a memory store holds (people, doings, places, times)."""
    parts = [_NAMES, _DOING, _THINGS, _PLACES, _WHEN, _HOW]
    picks = [rng.integers(0, len(p), n) for p in parts]
    return [" ".join(p[i[j]] for p, i in zip(parts, picks, strict=True)) for j in range(n)]


def _vocab(size: int, rng: np.random.Generator) -> list[str]:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    return ["".join(rng.choice(letters, size=int(rng.integers(3, 9)))) for _ in range(size)]


@contextlib.contextmanager
def _postgres_admin(dsn: str | None) -> Iterator[str]:
    if dsn:
        yield dsn
        return
    try:
        import pgserver
    except ImportError as exc:  # pragma: no cover - dev extra
        raise SystemExit("--store postgres needs --dsn or pgserver (pip install pgserver)") from exc
    folder = tempfile.mkdtemp(prefix="mnemic-scale-pg-")
    server = pgserver.get_server(folder, cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


def _time(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def _percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = np.asarray(seconds) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def run_one(
    backend: str,
    n: int,
    *,
    dim: int,
    queries: int,
    workdir: Path,
    admin_dsn: str | None,
    seed: int,
    log: Callable[[str], None],
    keep: bool = False,
    defer_index: bool = False,
    embedder: Any | None = None,
) -> ScaleRow:
    rng = np.random.default_rng(seed)
    if embedder is not None:
        dim = int(embedder.dim)
    corpus = Corpus(dim, max(100, n // 1000), seed)
    vocab = _vocab(2000, rng)
    ids: list[str] = []
    open_store: Callable[[], Any]
    dbname = f"mnemic_scale_{n}"
    if backend == "sqlite":
        from mnemic.infra.store.sqlite import SQLiteStore

        path = workdir / f"scale-{n}.db"
        open_store = lambda: SQLiteStore(path, dim=dim)  # noqa: E731
    else:
        import psycopg
        from psycopg.conninfo import make_conninfo

        from mnemic.infra.store.postgres import PostgresStore

        assert admin_dsn is not None
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {dbname}")
        dsn = make_conninfo(admin_dsn, dbname=dbname)
        open_store = lambda: PostgresStore(dsn, dim=dim, pool_size=2)  # noqa: E731

    store: Any = open_store()
    deferred = backend == "postgres" and defer_index
    if deferred:  # a bulk import: no HNSW upkeep per row, one build at the end
        with store._tx() as db:
            db.execute("DROP INDEX items_embedding")
    data = np.empty((n, dim), dtype=np.float32)
    add_seconds = embed_seconds = 0.0
    for start in range(0, n, BATCH):
        m = min(BATCH, n - start)
        if embedder is None:
            texts = _texts(m, start, rng, vocab)
            vectors = corpus.draw(m, seed + 10 + start // BATCH, chunk=BATCH)
        else:
            texts = _sentences(m, rng)
            spent, vectors = _time(partial(embedder.embed, texts))
            embed_seconds += spent
        data[start : start + m] = vectors
        items = [
            MemoryItem(user_id=USER, cube_id=CUBE, text=t, session_id=f"s{(start + i) // 20}")
            for i, t in enumerate(texts)
        ]
        ids.extend(i.id for i in items)
        spent, _ = _time(partial(store.add_items, items, vectors, actor="bench"))
        add_seconds += spent
        if start and start % (BATCH * 50) == 0:
            embedded = f", embedded {start / embed_seconds:.0f}/s" if embed_seconds else ""
            log(f"{backend} n={n}: {start} items, {start / add_seconds:.0f}/s{embedded}")
    log(f"{backend} n={n}: added in {add_seconds:.1f}s; building the vector index")

    # index build from the rows
    if backend == "sqlite":
        store.close()
        shutil.rmtree(workdir / f"scale-{n}.db.vectors", ignore_errors=True)
        store = open_store()
        build_s, _ = _time(lambda: store.vector_search(USER, CUBE, data[0], 10))
    else:
        with store._tx() as db:
            db.execute("SET LOCAL maintenance_work_mem = '4GB'")
            db.execute("SET LOCAL max_parallel_maintenance_workers = 1")
            if deferred:
                from mnemic.infra.store.postgres import HNSW_EF_CONSTRUCTION, HNSW_M

                build_s, _ = _time(
                    partial(
                        db.execute,
                        "CREATE INDEX items_embedding ON items "
                        "USING hnsw (embedding vector_cosine_ops) "
                        f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})",
                    )
                )
            else:
                build_s, _ = _time(partial(db.execute, "REINDEX INDEX items_embedding"))
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as conn:  # fresh planner statistics
            # (and visibility maps, for index-only scans of the postings)
            conn.execute("VACUUM ANALYZE items, postings, term_stats")
    log(f"{backend} n={n}: index built in {build_s:.1f}s; searching")

    if embedder is None:
        qs = corpus.draw(queries + WARMUP, seed + 1)
    else:
        qs = embedder.embed(_sentences(queries + WARMUP, np.random.default_rng(seed + 1)))
    truth = exact_topk(data, qs[WARMUP:], 10)
    row_of = {item_id: i for i, item_id in enumerate(ids)}
    for q in qs[:WARMUP]:
        store.vector_search(USER, CUBE, q, 10)
    times, hits = [], 0
    for q, expected in zip(qs[WARMUP:], truth, strict=True):
        spent, found = _time(partial(store.vector_search, USER, CUBE, q, 10))
        times.append(spent)
        hits += len({row_of[s.item_id] for s in found} & set(expected.tolist()))
    v50, v95 = _percentiles(times)
    recall = hits / (10 * len(times))

    ft_times = []
    ft_texts = _texts(queries, 0, rng, vocab) if embedder is None else _sentences(queries, rng)
    for text in ft_texts:
        query = " ".join(text.split()[2:5])
        spent, _ = _time(partial(store.fulltext_search, USER, CUBE, query, 10))
        ft_times.append(spent)
    f50, f95 = _percentiles(ft_times)

    if backend == "sqlite":
        store.close()
        disk = sum(p.stat().st_size for p in workdir.glob(f"scale-{n}.db*") if p.is_file()) + sum(
            p.stat().st_size for p in (workdir / f"scale-{n}.db.vectors").glob("*") if p.is_file()
        )
    else:
        with store._conn() as db:
            disk = int(
                db.execute("SELECT pg_database_size(current_database()) AS s").fetchone()["s"]
            )
        store.close()
        if not keep:
            import psycopg

            with psycopg.connect(admin_dsn, autocommit=True) as conn:  # type: ignore[arg-type]
                conn.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
    return ScaleRow(
        store=backend,
        n=n,
        add_items_per_s=round(n / add_seconds, 1),
        index_build_s=round(build_s, 2),
        vector_p50_ms=round(v50, 2),
        vector_p95_ms=round(v95, 2),
        recall_at_10=round(recall, 4),
        fulltext_p50_ms=round(f50, 2),
        fulltext_p95_ms=round(f95, 2),
        disk_mb=round(disk / 2**20, 1),
        queries=len(times),
        # SQLite's HNSW is derived state, built by the first search (the build column)
        add_mode="deferred" if deferred else "indexed" if backend == "postgres" else "lazy",
        vectors="synthetic" if embedder is None else str(embedder.id),
        embed_texts_per_s=None if embedder is None else round(n / embed_seconds, 1),
    )


def run(
    backends: list[str],
    sizes: list[int],
    *,
    dim: int = 384,
    queries: int = 100,
    dsn: str | None = None,
    workdir: Path | None = None,
    seed: int = 0,
    defer_index: bool = False,
    embedder: Any | None = None,
    log: Callable[[str], None] = lambda _: None,
    on_row: Callable[[ScaleRow], None] = lambda _: None,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=workdir, prefix="mnemic-scale-") as tmp:
        for backend in backends:
            with contextlib.ExitStack() as stack:
                admin = stack.enter_context(_postgres_admin(dsn)) if backend == "postgres" else None
                for n in sizes:
                    row = run_one(
                        backend,
                        n,
                        dim=dim,
                        queries=queries,
                        workdir=Path(tmp),
                        admin_dsn=admin,
                        seed=seed,
                        log=log,
                        defer_index=defer_index,
                        embedder=embedder,
                    )
                    on_row(row)
                    rows.append(asdict(row))
    return rows
