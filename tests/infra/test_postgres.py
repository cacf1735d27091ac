"""What only the PostgreSQL store has: migrations on a shared server, several writer
processes, HNSW search over scopes that share one index, and the SDK wired to it."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import psycopg
import pytest

from mnemic.errors import InvalidInput, SchemaTooNew
from mnemic.infra.store.base import ItemFilter
from mnemic.infra.store.postgres import MIGRATIONS, PostgresStore
from mnemic.models import MemoryItem, MemoryStatus

DIM = 16
WRITERS = 4
BATCHES = 20
PER_BATCH = 8


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_migrations_run_once_and_a_newer_schema_is_refused(pg_dsn: str) -> None:
    PostgresStore(pg_dsn, dim=DIM).close()
    PostgresStore(pg_dsn).close()  # reopening applies nothing twice
    with psycopg.connect(pg_dsn) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM mnemic_migrations")]
        assert versions == list(range(1, len(MIGRATIONS) + 1))
        conn.execute("INSERT INTO mnemic_migrations VALUES (%s, now())", (len(MIGRATIONS) + 1,))
    with pytest.raises(SchemaTooNew, match="upgrade mnemic"):
        PostgresStore(pg_dsn)


def test_the_dimension_is_fixed_by_the_first_vectors(pg_dsn: str) -> None:
    with PostgresStore(pg_dsn) as store:
        store.add_items([MemoryItem(user_id="a", cube_id="c", text="x")], None, actor="t")
        store.add_items(
            [MemoryItem(user_id="a", cube_id="c", text="y")], np.ones((1, 4)), actor="t"
        )
        with pytest.raises(InvalidInput, match="4"):
            store.add_items(
                [MemoryItem(user_id="a", cube_id="c", text="z")], np.ones((1, 5)), actor="t"
            )
    with pytest.raises(InvalidInput, match="4-dimensional"):
        PostgresStore(pg_dsn, dim=8)
    with PostgresStore(pg_dsn) as store:
        assert store.dim == 4
        assert len(store.vector_search("a", "c", np.ones(4, np.float32), 5)) == 1


def test_text_postgres_cannot_hold_is_refused_and_writes_nothing(pg_dsn: str) -> None:
    with PostgresStore(pg_dsn, dim=DIM) as store:
        bad = [
            MemoryItem(user_id="a", cube_id="c", text="ok"),
            MemoryItem(user_id="a", cube_id="c", text="nul \x00 byte"),
        ]
        with pytest.raises(InvalidInput):
            store.add_items(bad, None, actor="t")
        assert store.count_items("a", "c", ItemFilter.any_status()) == 0
        zero = np.zeros((1, DIM), np.float32)
        with pytest.raises(InvalidInput, match="zero vector"):
            store.add_items([MemoryItem(user_id="a", cube_id="c", text="z")], zero, actor="t")


def test_hnsw_search_over_shared_index_returns_k_from_the_scope(pg_dsn: str) -> None:
    """Scopes above the exact threshold go through the one HNSW index of the table; the
    other scopes' rows and filtered-out rows must not leave the answer short or wrong."""
    rng = np.random.default_rng(0)
    with PostgresStore(pg_dsn, dim=DIM, exact_threshold=50) as store:
        mine = [MemoryItem(user_id="ana", cube_id="c", text=f"a{i}") for i in range(120)]
        theirs = [MemoryItem(user_id="bob", cube_id="c", text=f"b{i}") for i in range(600)]
        mine_vecs, their_vecs = unit(rng, 120), unit(rng, 600)
        store.add_items(theirs, their_vecs, actor="t")
        store.add_items(mine, mine_vecs, actor="t")
        for n in range(0, 120, 2):  # half of ana's items deleted: the filter drops them
            store.update_item(
                mine[n].model_copy(update={"status": MemoryStatus.DELETED}), None, actor="t"
            )
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute("ANALYZE items")  # the table's size, which sets ef_search, is known
        active = {m.id: v for n, (m, v) in enumerate(zip(mine, mine_vecs, strict=True)) if n % 2}
        ids = list(active)
        matrix = np.stack([active[i] for i in ids])
        for probe in range(20):
            query = unit(rng, 1)[0] if probe % 2 else matrix[probe]
            got = store.vector_search("ana", "c", query, 10)
            exact = [ids[j] for j in np.argsort(-(matrix @ query))[:10]]
            assert len(got) == 10
            assert {s.item_id for s in got} <= set(ids)
            assert len({s.item_id for s in got} & set(exact)) >= 9
            assert [s.score for s in got] == sorted((s.score for s in got), reverse=True)


def _writer(dsn: str, worker: int, errors: mp.Queue) -> None:
    try:
        rng = np.random.default_rng(worker)
        with PostgresStore(dsn, dim=DIM, pool_size=2) as store:
            for batch in range(BATCHES):
                items = [
                    MemoryItem(
                        user_id="ana", cube_id="shared", text=f"w{worker} b{batch} n{n} apples"
                    )
                    for n in range(PER_BATCH)
                ]
                store.add_items(items, unit(rng, PER_BATCH), actor=f"worker-{worker}")
                # read, touch and rewrite rows others wrote, while they write
                hits = store.fulltext_search("ana", "shared", "apples", 20)
                store.vector_search("ana", "shared", unit(rng, 1)[0], 5)
                ids = [h.item_id for h in hits]
                store.record_access("ana", "shared", list(reversed(ids)) if worker % 2 else ids)
                (target,) = store.get_items("ana", "shared", [items[0].id])
                store.update_item(
                    target.model_copy(update={"importance": 0.9}), None, actor=f"worker-{worker}"
                )
    except Exception as exc:  # reported to the parent, which fails the test
        errors.put(f"worker {worker}: {type(exc).__name__}: {exc}")


def test_four_writer_processes_lose_nothing(pg_dsn: str) -> None:
    PostgresStore(pg_dsn, dim=DIM).close()  # schema made once, as a deployment would
    ctx = mp.get_context("spawn")
    errors: mp.Queue = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(pg_dsn, w, errors)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert found == []
    assert all(p.exitcode == 0 for p in procs)

    total = WRITERS * BATCHES * PER_BATCH
    with PostgresStore(pg_dsn) as store:
        assert store.count_items("ana", "shared", ItemFilter.any_status()) == total
        items = store.list_items("ana", "shared", limit=total + 1)
        assert len({i.text for i in items}) == total  # every write is there, none twice
        assert sum(i.importance == 0.9 for i in items) == WRITERS * BATCHES
        assert len(store.vector_search("ana", "shared", np.ones(DIM, np.float32), total)) == total
        assert len(store.fulltext_search("ana", "shared", "apples", total)) == total
        with psycopg.connect(pg_dsn) as conn:  # the scope's counters agree with the rows
            row = conn.execute("SELECT items, vectors FROM scopes").fetchone()
        assert row == (total, total)


def test_sdk_on_postgres_persists_across_instances(pg_dsn: str, tmp_path, embedder) -> None:
    from mnemic import Memory, load_settings

    settings = load_settings(home=tmp_path / "h", store={"backend": "postgres", "dsn": pg_dsn})
    with Memory(settings, embedder=embedder) as mem:
        (item,) = mem.add("the boat is called Wanda", user_id="ana")
    with Memory(settings, embedder=embedder) as mem:
        assert mem.search("boat name", user_id="ana")[0].item.id == item.id
    assert not (tmp_path / "h" / "mnemic.db").exists()  # nothing went to SQLite


def test_postgres_backend_needs_a_dsn(tmp_path) -> None:
    from mnemic import ConfigError, load_settings

    with pytest.raises(ConfigError, match="dsn"):
        load_settings(home=tmp_path, store={"backend": "postgres"})


def test_bm25_scores_equal_sqlite_fts5(pg_dsn: str, tmp_path) -> None:
    """Same items, same query: the same BM25 scores as FTS5 (one scope, where SQLite's
    table-wide statistics are the scope's), term frequencies up to many repeats included."""
    from mnemic.infra.store.sqlite import SQLiteStore

    rng = np.random.default_rng(7)
    words = ["tea", "lemon", "garden", "river", "boat", "cello", "nurse", "porto", "dog", "sun"]
    items = []
    for _ in range(60):
        text = " ".join(rng.choice(words, size=int(rng.integers(2, 30))))
        keys = " ".join(rng.choice(words, size=int(rng.integers(0, 12)))) or None
        items.append(MemoryItem(user_id="a", cube_id="c", text=text, index_text=keys))
    # a word said 200 times (PostgreSQL keeps up to 256 positions of a word in a row, so
    # beyond that its counts, and this equality, stop)
    items.append(MemoryItem(user_id="a", cube_id="c", text="tea " * 200))
    with PostgresStore(pg_dsn) as pg, SQLiteStore(tmp_path / "s.db") as lite:
        pg.add_items(items, None, actor="t")
        lite.add_items(items, None, actor="t")
        for query in ["tea", "lemon garden", "river boat cello nurse", "porto dog sun tea"]:
            for weight in (0.0, 2.0):
                a = pg.fulltext_search("a", "c", query, 100, keys_weight=weight)
                b = lite.fulltext_search("a", "c", query, 100, keys_weight=weight)
                assert {s.item_id: s.score for s in a} == pytest.approx(
                    {s.item_id: s.score for s in b}, rel=1e-9
                )


def _postings_state(conn: psycopg.Connection) -> tuple[list, list, list, list]:
    """The postings and term counts as stored, and as recomputed from the items' rows."""
    key = "ORDER BY user_id, cube_id, col, term, seq"
    stored = conn.execute(f"SELECT * FROM postings {key}").fetchall()
    derived = conn.execute(
        "SELECT p.* FROM items i CROSS JOIN LATERAL mnemic_row_postings(i.user_id, i.cube_id, "
        f"i.scope, i.seq, i.body_tsv, i.body_len, i.keys_tsv, i.keys_len) p {key}"
    ).fetchall()
    counts = conn.execute(
        "SELECT user_id, cube_id, col, term, df FROM term_stats WHERE df <> 0 "
        "ORDER BY user_id, cube_id, col, term"
    ).fetchall()
    recounted = conn.execute(
        "SELECT user_id, cube_id, col, term, count(*) FROM postings "
        "GROUP BY 1, 2, 3, 4 ORDER BY user_id, cube_id, col, term"
    ).fetchall()
    return stored, derived, counts, recounted


def test_postings_follow_every_write(pg_dsn: str) -> None:
    """Full text reads postings and per-scope term counts kept by triggers: after adds,
    updates of words and of other fields, a purge and a cube's deletion of rows, they
    equal what the items' own text gives."""
    with PostgresStore(pg_dsn) as store:
        items = [
            MemoryItem(user_id="a", cube_id="c", text="tea in Porto", index_text="morning tea"),
            MemoryItem(user_id="a", cube_id="c", text="tea tea lemon", speaker="Ana"),
            MemoryItem(user_id="b", cube_id="d", text="lemon garden"),
        ]
        store.add_items(items, None, actor="t")
        changed = items[0].model_copy(update={"text": "coffee in Lisbon", "version": 2})
        store.update_item(changed, None, actor="t")
        store.record_access("a", "c", [items[1].id])  # no word changes
        store.purge_item("b", "d", items[2].id, actor="t")
        with psycopg.connect(pg_dsn) as conn:
            stored, derived, counts, recounted = _postings_state(conn)
        assert stored == derived and counts == recounted
        assert ("a", "c", 0, "tea", 1) in counts and ("a", "c", 0, "coffe", 1) in counts
        hits = store.fulltext_search("a", "c", "coffee", 5)
        assert [h.item_id for h in hits] == [items[0].id]
        assert store.fulltext_search("a", "c", "Porto", 5) == []


def test_migration_4_indexes_the_rows_already_there(pg_dsn: str) -> None:
    """A database made before postings existed gets them on the next start."""
    with PostgresStore(pg_dsn) as store:
        store.add_items(
            [MemoryItem(user_id="a", cube_id="c", text=t) for t in ("tea", "lemon tea", "sun")],
            None,
            actor="t",
        )
        before = [h.item_id for h in store.fulltext_search("a", "c", "tea", 5)]
    with psycopg.connect(pg_dsn) as conn:  # back to schema 3, rows kept
        conn.execute(
            "DROP TABLE postings, term_stats; DROP INDEX items_recent; "
            "DROP TRIGGER items_postings_add ON items; DROP TRIGGER items_postings_drop ON items; "
            "DROP TRIGGER items_postings_change ON items; "
            "DROP FUNCTION mnemic_postings_add, mnemic_postings_drop, mnemic_postings_change, "
            "mnemic_postings_insert, mnemic_postings_remove, mnemic_row_postings; "
            "CREATE INDEX items_body_tsv ON items USING gin (body_tsv); "
            "CREATE INDEX items_keys_tsv ON items USING gin (keys_tsv); "
            "DELETE FROM mnemic_migrations WHERE version = 4"
        )
    with PostgresStore(pg_dsn) as store:
        assert [h.item_id for h in store.fulltext_search("a", "c", "tea", 5)] == before
        with psycopg.connect(pg_dsn) as conn:
            stored, derived, counts, recounted = _postings_state(conn)
        assert len(stored) == 4 and stored == derived and counts == recounted
