"""Vector search engines compared: numpy exact vs sqlite-vec (vec0) vs VectorIndex (usearch).

    python -m mnemic.bench.vectors --n 10000,100000,1000000 --dim 384 [--json OUT]

Data: synthetic unit vectors shaped like sentence embeddings: ``--centers`` gaussian topic
centres plus per-item noise whose variance decays as a power law over a random basis (so the
intrinsic dimension is far below ``dim``, as with real embedders). Nearest-neighbour cosine
is ~0.7, the 10th ~0.6. Fixed seed. Queries are fresh draws from the same distribution.

For each engine: build time (everything needed before the first query), single-query
latency p50/p95 (one thread per query, after 5 warm-up queries), recall@10 against exact
numpy top-10, memory held in process and bytes on disk. ``--max-query-seconds`` stops a
slow engine's query loop early (at least 20 queries); the table says how many were timed.

numpy's matrix-vector product runs on OpenBLAS threads; on a busy 2-core box
``OPENBLAS_NUM_THREADS=1`` was ~4x faster at 20k rows, so set it to give numpy its best case.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from mnemic.infra.store.vector_index import DEFAULT_EXACT_THRESHOLD, VectorIndex

ALL_ENGINES = ("numpy", "sqlite-vec", "usearch-f32", "usearch-f16", "usearch-i8")
WARMUP = 5
MIN_QUERIES = 20


@dataclass
class Row:
    n: int
    engine: str
    mode: str
    build_s: float
    inserts_per_s: float
    p50_ms: float
    p95_ms: float
    queries: int
    recall_at_k: float
    mem_mb: float | None
    disk_mb: float | None
    save_s: float | None = None
    load_s: float | None = None
    note: str = ""


# -- data -------------------------------------------------------------------------------


class Corpus:
    """Clustered unit vectors, generated in chunks from a fixed seed."""

    def __init__(self, dim: int, centers: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.dim = dim
        c = rng.standard_normal((centers, dim)).astype(np.float32)
        self.centers = c / np.linalg.norm(c, axis=1, keepdims=True)
        spectrum = np.arange(1, dim + 1, dtype=np.float64) ** -0.5
        self.spectrum = (spectrum / np.linalg.norm(spectrum)).astype(np.float32)
        self.basis = np.linalg.qr(rng.standard_normal((dim, dim)))[0].astype(np.float32)

    def draw(self, n: int, seed: int, chunk: int = 50_000) -> np.ndarray:
        rng = np.random.default_rng(seed)
        out = np.empty((n, self.dim), dtype=np.float32)
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            labels = rng.integers(0, len(self.centers), m)
            noise = rng.standard_normal((m, self.dim), dtype=np.float32) * self.spectrum
            x = self.centers[labels] + noise @ self.basis
            out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out


def exact_topk(data: np.ndarray, queries: np.ndarray, k: int, chunk: int = 100_000) -> np.ndarray:
    """Row indices of the exact top-k (cosine; all vectors are unit length) per query."""
    best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), k), dtype=np.int64)
    for start in range(0, len(data), chunk):
        s = queries @ data[start : start + chunk].T
        kk = min(k, s.shape[1])
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        cand_s = np.concatenate([best_s, np.take_along_axis(s, part, axis=1)], axis=1)
        cand_i = np.concatenate([best_i, part + start], axis=1)
        order = np.argsort(-cand_s, axis=1, kind="stable")[:, :k]
        best_s = np.take_along_axis(cand_s, order, axis=1)
        best_i = np.take_along_axis(cand_i, order, axis=1)
    return best_i


# -- measurement ------------------------------------------------------------------------


def time_queries(
    search: Callable[[np.ndarray], np.ndarray],
    queries: np.ndarray,
    truth: np.ndarray,
    k: int,
    max_seconds: float,
) -> tuple[float, float, int, float]:
    """(p50 ms, p95 ms, queries timed, recall@k); ``search`` returns row indices.

    The first WARMUP rows of ``queries`` warm up; the rest are timed against ``truth``.
    """
    for q in queries[:WARMUP]:
        search(q)
    times: list[float] = []
    hits = 0
    began = time.perf_counter()
    for i, q in enumerate(queries[WARMUP:]):
        t = time.perf_counter()
        got = search(q)
        times.append(time.perf_counter() - t)
        hits += len(set(np.asarray(got).tolist()) & set(truth[i].tolist()))
        if len(times) >= MIN_QUERIES and time.perf_counter() - began > max_seconds:
            break
    ms = np.asarray(times) * 1e3
    return (
        float(np.percentile(ms, 50)),
        float(np.percentile(ms, 95)),
        len(times),
        hits / (k * len(times)),
    )


def run_numpy(data, queries, truth, k, max_s) -> Row:
    t = time.perf_counter()
    matrix = np.ascontiguousarray(data, dtype=np.float32).copy()  # the store's cached matrix
    build = time.perf_counter() - t

    def search(q: np.ndarray) -> np.ndarray:
        s = matrix @ q
        top = np.argpartition(-s, k - 1)[:k]
        return top[np.argsort(-s[top])]

    p50, p95, nq, rec = time_queries(search, queries, truth, k, max_s)
    return Row(len(data), "numpy", "exact", build, len(data) / build, p50, p95, nq, rec,
               matrix.nbytes / 1e6, None)  # fmt: skip


def sqlite_module() -> tuple[ModuleType | None, str]:
    """An sqlite3 module that can load extensions, or None and why not."""
    import sqlite3

    if hasattr(sqlite3.Connection, "enable_load_extension"):
        return sqlite3, "stdlib sqlite3"
    try:
        import pysqlite3  # type: ignore[import-not-found]

        return pysqlite3, "pysqlite3 (stdlib sqlite3 here cannot load extensions)"
    except ImportError:
        return None, "this Python's sqlite3 was built without extension loading"


def run_sqlite_vec(data, queries, truth, k, max_s, workdir: Path) -> Row:
    dim = data.shape[1]
    mod, how = sqlite_module()
    try:
        import sqlite_vec
    except ImportError:
        sqlite_vec = None
    if mod is None or sqlite_vec is None:
        why = how if mod is None else "sqlite-vec is not installed"
        return Row(len(data), "sqlite-vec", "skipped", 0, 0, 0, 0, 0, 0, None, None, note=why)
    path = workdir / "vec.db"
    db = mod.connect(path)
    db.enable_load_extension(True)
    sqlite_vec.load(db)
    db.enable_load_extension(False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    t = time.perf_counter()
    db.execute(f"CREATE VIRTUAL TABLE v USING vec0(embedding float[{dim}] distance_metric=cosine)")
    batch = 10_000
    for start in range(0, len(data), batch):
        rows = (
            (start + i + 1, data[start + i].tobytes()) for i in range(min(batch, len(data) - start))
        )
        with db:
            db.executemany("INSERT INTO v(rowid, embedding) VALUES (?, ?)", rows)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    build = time.perf_counter() - t
    sql = "SELECT rowid FROM v WHERE embedding MATCH ? AND k = ? ORDER BY distance"

    def search(q: np.ndarray) -> np.ndarray:
        return np.fromiter((r[0] - 1 for r in db.execute(sql, (q.tobytes(), k))), dtype=np.int64)

    p50, p95, nq, rec = time_queries(search, queries, truth, k, max_s)
    (version,) = db.execute("SELECT vec_version()").fetchone()
    db.close()
    disk = sum(p.stat().st_size for p in workdir.glob("vec.db*")) / 1e6
    for p in workdir.glob("vec.db*"):
        p.unlink()
    note = f"{version} via {how}" + ("" if nq == len(truth) else f"; {nq} queries timed")
    return Row(len(data), "sqlite-vec", "exact", build, len(data) / build, p50, p95, nq, rec,
               None, disk, note=note)  # fmt: skip


def run_usearch(
    data, queries, truth, k, max_s, workdir: Path, dtype, exact_threshold, efs: list[int]
) -> list[Row]:
    """One build; one row per efSearch in ``efs`` (the class default when empty)."""
    dim = data.shape[1]
    kwargs = {} if exact_threshold is None else {"exact_threshold": exact_threshold}
    ix = VectorIndex(dim, dtype=dtype, **kwargs)
    t = time.perf_counter()
    ix.add(np.arange(len(data), dtype=np.int64), data)
    build = time.perf_counter() - t
    mem = ix.memory_usage / 1e6
    path = workdir / "index.vix"
    t = time.perf_counter()
    ix.save(path)
    save_s = time.perf_counter() - t
    t = time.perf_counter()
    back = VectorIndex.load(path, dim)
    load_s = time.perf_counter() - t
    disk = path.stat().st_size / 1e6
    del back
    path.unlink()

    def search(q: np.ndarray) -> np.ndarray:
        return ix.search(q, k)[0]

    rows: list[Row] = []
    exact = len(ix) <= ix.exact_threshold
    for ef in ([] if exact else efs) or [ix.expansion_search]:
        ix.expansion_search = ef
        p50, p95, nq, rec = time_queries(search, queries, truth, k, max_s)
        mode = "exact" if exact else f"hnsw ef={ef}"
        notes = [] if nq == len(truth) else [f"{nq} queries timed"]
        if rows:
            notes.append("same build")
        rows.append(
            Row(
                len(data),
                f"usearch-{dtype}",
                mode,
                build,
                len(data) / build,
                p50,
                p95,
                nq,
                rec,
                mem,
                disk,
                save_s,
                load_s,
                "; ".join(notes),
            )
        )
    return rows


# -- driver -----------------------------------------------------------------------------


def fmt_table(rows: list[Row]) -> str:
    head = (
        f"{'n':>9} {'engine':<12} {'mode':<12} {'build_s':>8} {'ins/s':>8} {'p50_ms':>8} "
        f"{'p95_ms':>8} {'q':>4} {'recall':>6} {'mem_MB':>7} {'disk_MB':>7} {'save_s':>6} "
        f"{'load_s':>6}  note"
    )

    def opt(v: float | None, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.n:>9} {r.engine:<12} {r.mode:<12} {r.build_s:>8.1f} {r.inserts_per_s:>8.0f} "
            f"{r.p50_ms:>8.2f} {r.p95_ms:>8.2f} {r.queries:>4} {r.recall_at_k:>6.3f} "
            f"{opt(r.mem_mb, '7.0f'):>7} {opt(r.disk_mb, '7.0f'):>7} {opt(r.save_s, '6.1f'):>6} "
            f"{opt(r.load_s, '6.1f'):>6}  {r.note}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", default="10000,100000", help="comma-separated corpus sizes")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--centers", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--engines", default=",".join(ALL_ENGINES), help=f"subset of {','.join(ALL_ENGINES)}"
    )
    parser.add_argument(
        "--max-query-seconds",
        type=float,
        default=60.0,
        help="stop an engine's query loop after this long (min 20 queries)",
    )
    parser.add_argument(
        "--exact-threshold",
        type=int,
        default=None,
        help=f"VectorIndex exact_threshold (default {DEFAULT_EXACT_THRESHOLD})",
    )
    parser.add_argument(
        "--ef",
        default="",
        help="comma-separated efSearch values to sweep on each usearch build (default: the "
        "VectorIndex default)",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="for the sqlite/index files")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    sizes = [int(s.replace("_", "")) for s in args.n.split(",") if s.strip()]
    efs = [int(e) for e in args.ef.split(",") if e.strip()]
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = set(engines) - set(ALL_ENGINES)
    if unknown:
        parser.error(f"unknown engines: {sorted(unknown)}")

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    corpus = Corpus(args.dim, args.centers, args.seed)
    queries = corpus.draw(args.queries + WARMUP, args.seed + 1)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="mnemic-bench-") as tmp:
        workdir = Path(tmp)
        for n in sizes:
            log(f"n={n}: generating data")
            data = corpus.draw(n, args.seed + 2)
            truth = exact_topk(data, queries[WARMUP:], args.k)
            qs, tr = queries, truth
            for engine in engines:
                log(f"n={n}: {engine}")
                if engine == "numpy":
                    new = [run_numpy(data, qs, tr, args.k, args.max_query_seconds)]
                elif engine == "sqlite-vec":
                    new = [run_sqlite_vec(data, qs, tr, args.k, args.max_query_seconds, workdir)]
                else:
                    new = run_usearch(
                        data, qs, tr, args.k, args.max_query_seconds, workdir,
                        engine.split("-")[1], args.exact_threshold, efs,
                    )  # fmt: skip
                for row in new:
                    log(f"n={n}: {engine} done: {asdict(row)}")
                rows.extend(new)
                gc.collect()
            del data, truth
            gc.collect()

    table = fmt_table(rows)
    print(table)
    if args.json:
        import usearch

        report = {
            "command": "python -m mnemic.bench.vectors "
            + " ".join(sys.argv[1:] if argv is None else argv),
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
                "numpy": np.__version__,
                "usearch": usearch.__version__,
            },
            "results": [asdict(r) for r in rows],
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
