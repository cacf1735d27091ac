"""The Store contract, run against every backend in STORE_BACKENDS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from mnemic.errors import Conflict, InvalidInput, NotFound, SchemaTooNew, StoreError
from mnemic.infra.store.base import ItemFilter
from mnemic.models import MemoryItem, MemoryKind, MemoryStatus, Source

DIM = 8


def vec(*hot: int) -> np.ndarray:
    v = np.full(DIM, 0.01, dtype=np.float32)
    for h in hot:
        v[h] = 1.0
    return v / np.linalg.norm(v)


def item(user: str = "ana", cube: str = "ana/default", text: str = "hello", **kw) -> MemoryItem:
    return MemoryItem(user_id=user, cube_id=cube, text=text, **kw)


def add(store, items: list[MemoryItem], vectors: list[np.ndarray] | None = None) -> None:
    arr = np.stack(vectors) if vectors else np.stack([vec(i % DIM) for i in range(len(items))])
    store.add_items(items, arr, actor="test")


def test_add_get_roundtrip_keeps_every_field(store) -> None:
    when = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
    original = item(
        text="Caroline went to a support group",
        kind=MemoryKind.EVENT,
        session_id="s1",
        agent_id="bot",
        speaker="Caroline",
        valid_from=when,
        entities=["Caroline"],
        tags=["lgbtq"],
        confidence=0.9,
        importance=0.7,
        metadata={"k": [1, 2]},
        source=Source(message_ids=["D1:3"]),
        index_text="Caroline: went to a support group",
    )
    add(store, [original])
    (back,) = store.get_items("ana", "ana/default", [original.id])
    assert back == original


def test_get_items_keeps_order_and_drops_unknown(store) -> None:
    a, b = item(text="a"), item(text="b")
    add(store, [a, b])
    got = store.get_items("ana", "ana/default", [b.id, "nope", a.id])
    assert [i.id for i in got] == [b.id, a.id]


def test_duplicate_id_is_a_conflict_and_writes_nothing(store) -> None:
    a = item(text="first")
    add(store, [a])
    with pytest.raises(Conflict):
        add(store, [item(text="new"), a.model_copy()])
    assert store.count_items("ana", "ana/default") == 1


def test_wrong_vector_shape_is_rejected(store) -> None:
    with pytest.raises(InvalidInput):
        store.add_items([item()], np.zeros((1, DIM + 1), dtype=np.float32), actor="t")
    with pytest.raises(InvalidInput):
        store.add_items([item(), item()], np.zeros((1, DIM), dtype=np.float32), actor="t")


def test_scoping_user_never_sees_another_users_items(store) -> None:
    mine = item(user="ana", cube="shared-name", text="ana likes tea")
    theirs = item(user="bob", cube="shared-name", text="bob likes tea")
    add(store, [mine, theirs], [vec(1), vec(1)])
    assert [i.id for i in store.list_items("ana", "shared-name")] == [mine.id]
    assert store.get_items("ana", "shared-name", [theirs.id]) == []
    assert [s.item_id for s in store.fulltext_search("ana", "shared-name", "tea", 10)] == [mine.id]
    assert [s.item_id for s in store.vector_search("ana", "shared-name", vec(1), 10)] == [mine.id]
    assert store.history("ana", "shared-name", theirs.id) == []
    with pytest.raises(NotFound):
        store.purge_item("ana", "shared-name", theirs.id, actor="ana")
    with pytest.raises(NotFound):
        store.update_item(theirs.model_copy(update={"user_id": "ana"}), None, actor="ana")
    assert store.count_items("bob", "shared-name") == 1


def test_update_writes_history_with_before_and_after(store) -> None:
    a = item(text="lives in Porto")
    add(store, [a])
    new = a.model_copy(update={"text": "lives in Lisbon", "version": 2})
    store.update_item(new, vec(3), actor="ana", reason="moved", expected_version=1)
    (got,) = store.get_items("ana", "ana/default", [a.id])
    assert got.text == "lives in Lisbon" and got.version == 2
    hist = store.history("ana", "ana/default", a.id)
    assert [h.action for h in hist] == ["add", "update"]
    assert hist[1].before["text"] == "lives in Porto"
    assert hist[1].after["text"] == "lives in Lisbon"
    assert hist[1].reason == "moved" and hist[1].actor == "ana"
    # full-text follows the new text, not the old
    assert [s.item_id for s in store.fulltext_search("ana", "ana/default", "Lisbon", 5)] == [a.id]
    assert store.fulltext_search("ana", "ana/default", "Porto", 5) == []


def test_stale_update_is_a_conflict(store) -> None:
    a = item()
    add(store, [a])
    store.update_item(a.model_copy(update={"version": 2}), None, actor="t", expected_version=1)
    with pytest.raises(Conflict):
        store.update_item(a.model_copy(update={"version": 2}), None, actor="t", expected_version=1)


def test_status_filter_hides_deleted_from_search(store) -> None:
    a, b = item(text="green apple"), item(text="green pear")
    add(store, [a, b], [vec(2), vec(2, 3)])
    store.update_item(
        a.model_copy(update={"status": MemoryStatus.DELETED, "version": 2}),
        None,
        actor="t",
        action="delete",
    )
    assert [s.item_id for s in store.fulltext_search("ana", "ana/default", "green", 5)] == [b.id]
    assert [s.item_id for s in store.vector_search("ana", "ana/default", vec(2), 5)] == [b.id]
    every = store.list_items("ana", "ana/default", ItemFilter.any_status())
    assert {i.id for i in every} == {a.id, b.id}


def test_purge_erases_content_everywhere(store) -> None:
    a = item(text="secret plan")
    add(store, [a], [vec(4)])
    store.purge_item("ana", "ana/default", a.id, actor="ana")
    assert store.get_items("ana", "ana/default", [a.id]) == []
    assert store.fulltext_search("ana", "ana/default", "secret", 5) == []
    assert store.vector_search("ana", "ana/default", vec(4), 5) == []
    hist = store.history("ana", "ana/default", a.id)
    assert hist[-1].action == "purge"
    assert all(h.before is None and h.after is None for h in hist)


def test_fulltext_query_syntax_is_plain_text(store) -> None:
    a = item(text='she said "NEAR(x y)" AND OR NOT * ^ : - ( )')
    add(store, [a])
    for query in ['"', "NEAR(x y)", "AND OR NOT", "*", "key:foo", "'); DROP TABLE items; --", ""]:
        store.fulltext_search("ana", "ana/default", query, 5)  # no error
    assert store.fulltext_search("ana", "ana/default", "near", 5)[0].item_id == a.id
    assert store.count_items("ana", "ana/default") == 1


def test_fulltext_ranks_by_bm25(store) -> None:
    docs = [item(text=t) for t in ("tea tea tea and biscuits", "coffee and tea", "just coffee")]
    add(store, docs)
    ranked = [s.item_id for s in store.fulltext_search("ana", "ana/default", "tea", 5)]
    assert ranked == [docs[0].id, docs[1].id]


def test_fulltext_with_a_speaker_filter_ranks_only_that_speakers_items(store) -> None:
    said = [("Ana", "tea with lemon"), ("Bo", "tea tea tea"), ("Ana", "green tea"), (None, "tea")]
    docs = [item(text=t, speaker=s) for s, t in said]
    # deleted: gone from every search, the speaker's too
    gone = item(text="tea for Ana", speaker="Ana", status=MemoryStatus.DELETED)
    add(store, [*docs, gone, *[item(text=f"coffee {n}") for n in range(6)]])
    every = {s.item_id: s.score for s in store.fulltext_search("ana", "ana/default", "tea", 10)}
    for speaker in ("Ana", "Bo", "Cy"):
        got = store.fulltext_search("ana", "ana/default", "tea", 10, ItemFilter(speaker=speaker))
        want = [d.id for d in docs if d.speaker == speaker]
        assert sorted(s.item_id for s in got) == sorted(want), speaker
        # each keeps the score it has among everyone's items
        assert all(s.score == pytest.approx(every[s.item_id]) for s in got)
    any_status = ItemFilter.any_status(speaker="Ana")
    got = store.fulltext_search("ana", "ana/default", "tea", 10, any_status)
    assert gone.id in {s.item_id for s in got}


def test_vector_search_orders_by_cosine_and_respects_k(store) -> None:
    items = [item(text=f"t{i}") for i in range(6)]
    add(store, items, [vec(i) for i in range(6)])
    got = store.vector_search("ana", "ana/default", vec(2), 3)
    assert got[0].item_id == items[2].id
    assert len(got) == 3
    assert got[0].score > got[1].score


def test_time_filters_and_as_of(store) -> None:
    t0 = datetime(2023, 1, 1, tzinfo=UTC)
    old = item(
        text="job at A",
        valid_from=t0,
        valid_to=t0 + timedelta(days=100),
        status=MemoryStatus.SUPERSEDED,
    )
    new = item(text="job at B", valid_from=t0 + timedelta(days=100))
    add(store, [old, new])
    statuses = (MemoryStatus.ACTIVE, MemoryStatus.SUPERSEDED)
    then = store.list_items(
        "ana", "ana/default", ItemFilter(statuses=statuses, as_of=t0 + timedelta(days=10))
    )
    assert [i.id for i in then] == [old.id]
    now = store.list_items(
        "ana", "ana/default", ItemFilter(statuses=statuses, as_of=t0 + timedelta(days=200))
    )
    assert [i.id for i in now] == [new.id]
    later = store.list_items(
        "ana", "ana/default", ItemFilter(statuses=statuses, valid_after=t0 + timedelta(days=50))
    )
    assert [i.id for i in later] == [new.id]
    # system time: nothing had been recorded before the items were added
    known = store.list_items("ana", "ana/default", ItemFilter(statuses=statuses, known_at=t0))
    assert known == []


def test_cubes_are_owned(store) -> None:
    m = store.ensure_cube("c1", "ana", embedder="e", dim=DIM)
    assert m.owner_id == "ana"
    again = store.ensure_cube("c1", "bob", embedder="e", dim=DIM)
    assert again.owner_id == "ana"  # ensure never steals a cube
    assert [c.cube_id for c in store.list_cubes("ana")] == ["c1"]
    assert store.list_cubes("bob") == []


def test_record_access_counts(store) -> None:
    a = item()
    add(store, [a])
    store.record_access("ana", "ana/default", [a.id, a.id])
    (got,) = store.get_items("ana", "ana/default", [a.id])
    assert got.access_count == 2 and got.last_accessed is not None


# ---- SQLite specifics: durability of the derived vector index


def test_filtered_vector_search_finds_a_sliver_of_a_large_scope(store) -> None:
    """A filter holding a few rows of thousands (a session, a speaker, a kind) still gets its
    k nearest: the index's nearest candidates hold none of them, so the store must look past
    them."""
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((3100, DIM)).astype(np.float32)
    items = [
        item(text=f"t{n}", session_id="rare", speaker="Rae", kind=MemoryKind.EVENT)
        if n % 700 == 3
        else item(text=f"t{n}", session_id="common", speaker="Cam")
        for n in range(3100)
    ]
    add(store, items, list(vectors))
    query = vectors[0]  # an item of the common session is the nearest of all
    rare = [n for n in range(3100) if n % 700 == 3]
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = unit[rare] @ (query / np.linalg.norm(query))
    expected = [items[rare[i]].id for i in np.argsort(-sims)[:3]]
    for flt in (
        ItemFilter(session_id="rare"),
        ItemFilter(speaker="Rae"),
        ItemFilter(kinds=(MemoryKind.EVENT,)),
    ):
        found = store.vector_search("ana", "ana/default", query, 3, flt)
        assert [s.item_id for s in found] == expected, flt
        assert abs(found[0].score - float(np.sort(sims)[-1])) < 1e-3
    assert store.vector_search("ana", "ana/default", query, 3, ItemFilter(session_id="x")) == []
    assert store.vector_search("ana", "ana/default", query, 3, ItemFilter(speaker="x")) == []


def test_a_closed_store_says_so(store) -> None:
    add(store, [item(text="tea")])
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.fulltext_search("ana", "ana/default", "tea", 5)
    with pytest.raises(StoreError, match="closed"):
        store.vector_search("ana", "ana/default", vec(1), 5)


def test_vector_index_survives_reopen_and_lost_snapshot(tmp_path: Path) -> None:
    from mnemic.infra.store.sqlite import SQLiteStore

    path = tmp_path / "s.db"
    with SQLiteStore(path, dim=DIM) as s:
        items = [item(text=f"t{i}") for i in range(5)]
        add(s, items, [vec(i) for i in range(5)])
        assert s.vector_search("ana", "ana/default", vec(1), 1)[0].item_id == items[1].id
    # snapshot written on close; reopen uses it and sees later writes from the log
    with SQLiteStore(path, dim=DIM) as s:
        extra = item(text="later")
        add(s, [extra], [vec(7)])
        assert s.vector_search("ana", "ana/default", vec(7), 1)[0].item_id == extra.id
    # a lost or corrupt snapshot is rebuilt from the rows
    for f in (tmp_path / "s.db.vectors").iterdir():
        f.write_bytes(b"garbage")
    with SQLiteStore(path) as s:
        assert s.vector_search("ana", "ana/default", vec(7), 1)[0].item_id == extra.id
        assert len(s.vector_search("ana", "ana/default", vec(0), 100)) == 6


def test_second_connection_sees_writes_of_the_first(tmp_path: Path) -> None:
    from mnemic.infra.store.sqlite import SQLiteStore

    path = tmp_path / "s.db"
    a, b = SQLiteStore(path, dim=DIM), SQLiteStore(path, dim=DIM)
    try:
        first = item(text="one")
        add(a, [first], [vec(1)])
        assert b.vector_search("ana", "ana/default", vec(1), 1)[0].item_id == first.id
        second = item(text="two")
        add(a, [second], [vec(2)])
        a.purge_item("ana", "ana/default", first.id, actor="t")
        got = [s.item_id for s in b.vector_search("ana", "ana/default", vec(1), 5)]
        assert got == [second.id]
    finally:
        a.close()
        b.close()


def test_large_tables_score_bm25_as_fts5_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From FTS_PRUNE_ROWS rows the SQLite store sums BM25 itself from FTS5's matches (its
    bm25() walks every query word's whole posting list on each call): the same rows and
    scores as bm25(), repeats, phrases, keys, filters and other scopes included."""
    import sqlite3

    from mnemic.infra.store import sqlite as sqlite_store

    rng = np.random.default_rng(3)
    vocab = ["tea", "lemon", "garden", "river", "boat", "cello", "running", "dog", "sun", "x_y"]
    path = tmp_path / "s.db"
    with sqlite_store.SQLiteStore(path, dim=DIM) as s:
        items = []
        for n in range(80):
            text = " ".join(rng.choice(vocab, size=int(rng.integers(1, 12)))) + f" n{n}"
            keys = " ".join(rng.choice(vocab, size=int(rng.integers(0, 6)))) or None
            status = MemoryStatus.DELETED if n % 9 == 0 else MemoryStatus.ACTIVE
            items.append(item(text=text, index_text=keys, status=status))
        items.append(item(text="tea " * 40))
        add(s, items)
        add(s, [item(user="bo", cube="bo/default", text="tea lemon dog")])

        def search(query: str, k: int, prune_from: int) -> list[tuple[str, float]]:
            monkeypatch.setattr(sqlite_store, "FTS_PRUNE_ROWS", prune_from)
            return [(h.item_id, h.score) for h in s.fulltext_search("ana", "ana/default", query, k)]

        for query in ["tea", "lemon garden", "runs dogs", "x_y boat", "sun river cello tea"]:
            for k in (3, 40):
                scanned, ranked = search(query, k, 10), search(query, k, 10**9)
                assert dict(scanned) == pytest.approx(dict(ranked), rel=1e-9)
                assert [i for i, _ in scanned][:2] == [i for i, _ in ranked][:2]
        assert s._fts_helpers
        # counts of broad words are kept until the table grows by more than 1/32
        s.fulltext_budget = 10
        monkeypatch.setattr(sqlite_store, "FTS_PRUNE_ROWS", 10)

        def counted() -> list[int]:
            found = s._counts("items_fts", ["tea"], s._stems(["tea"]))
            assert found is not None
            return found[2]

        (df,) = counted()
        assert s._row_counts[("items_fts", "tea")][0] == df > 10
        add(s, [item(text="tea")])  # the table grew by less than 1/32: the count is kept
        assert counted() == [df]
        add(s, [item(text=f"tea {n}") for n in range(5)])  # past 1/32: counted again
        assert counted() == [df + 6]
    # the helper tables are temporary: nothing was added to the database file
    with sqlite3.connect(path) as db:
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    assert not [n for n in names if n.startswith("mnemic_")]


def test_small_tables_score_bm25_from_kept_posting_lists_as_fts5_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under FTS_PRUNE_ROWS rows the SQLite store ranks from posting lists it keeps until
    the next commit (fts5_postings): the same rows and scores as FTS5's bm25(), with
    filters, other scopes, phrases, and after writes through this and another connection."""
    from mnemic.infra.store import sqlite as sqlite_store
    from mnemic.infra.store.fts5_postings import SmallTablePostings

    rng = np.random.default_rng(5)
    vocab = ["tea", "lemon", "garden", "river", "boat", "cello", "running", "dog", "sun", "x-y"]
    path = tmp_path / "s.db"
    s = sqlite_store.SQLiteStore(path, dim=DIM)
    other = sqlite_store.SQLiteStore(path, dim=DIM)  # another connection (process) writing
    try:
        items = []
        for n in range(60):
            text = " ".join(rng.choice(vocab, size=int(rng.integers(1, 12)))) + f" n{n}"
            keys = " ".join(rng.choice(vocab, size=int(rng.integers(0, 6)))) or None
            status = MemoryStatus.DELETED if n % 7 == 0 else MemoryStatus.ACTIVE
            kind = MemoryKind.FACT if n % 3 == 0 else MemoryKind.RAW_TURN
            items.append(item(text=text, index_text=keys, status=status, kind=kind))
        add(s, items)
        add(s, [item(user="bo", cube="bo/default", text="tea lemon dog garden")])
        fts5_rank = SmallTablePostings.rank

        def both(query: str, k: int, flt: ItemFilter) -> tuple[list, list]:
            kept = [
                (h.item_id, h.score) for h in s.fulltext_search("ana", "ana/default", query, k, flt)
            ]
            monkeypatch.setattr(SmallTablePostings, "rank", lambda *a, **kw: None)
            ranked = [
                (h.item_id, h.score) for h in s.fulltext_search("ana", "ana/default", query, k, flt)
            ]
            monkeypatch.setattr(SmallTablePostings, "rank", fts5_rank)
            return kept, ranked

        def check() -> None:
            filters = [ItemFilter(), ItemFilter.any_status(), ItemFilter(kinds=(MemoryKind.FACT,))]
            for query in ["tea", "lemon garden garden", "runs dogs", "x-y boat", "sun river cello"]:
                for flt in filters:
                    for k in (3, 40):
                        kept, ranked = both(query, k, flt)
                        assert dict(kept) == pytest.approx(dict(ranked), rel=1e-9), query
                        assert len(kept) == len(ranked) and len(kept) <= k
                        # the same order, but for ties, which FTS5 breaks its own way
                        assert sorted(round(x, 9) for _, x in kept) == sorted(
                            round(x, 9) for _, x in ranked
                        )
            assert all(i in {x.id for x in items} for i, _ in both("tea", 99, filters[1])[0])

        check()
        assert s._postings["items_fts"]._shares  # the kept lists served those searches
        add(s, [item(text="lemon lemon cello")])  # a commit here: the lists start over
        check()
        assert s.fulltext_search("ana", "ana/default", "cello lemon", 1)[0].item_id
        newer = item(text="a boat on the river with a cello")
        add(other, [newer])  # a commit through another connection
        assert newer.id in {h.item_id for h in s.fulltext_search("ana", "ana/default", "cello", 99)}
        check()
        other.update_item(
            newer.model_copy(update={"status": MemoryStatus.DELETED}), None, actor="t"
        )
        assert newer.id not in {
            h.item_id for h in s.fulltext_search("ana", "ana/default", "cello", 99)
        }
        check()
    finally:
        s.close()
        other.close()


def test_migration_5_indexes_speakers_of_a_store_that_holds_rows(tmp_path: Path) -> None:
    import sqlite3

    from mnemic.infra.store.sqlite import SQLiteStore

    path = tmp_path / "s.db"
    with SQLiteStore(path, dim=DIM) as s:
        add(s, [item(text="tea", speaker="Ana"), item(text="tea", speaker="Bo")])
    with sqlite3.connect(path) as db:  # the store as migration 4 left it
        db.execute("DROP INDEX items_speaker")
        db.execute("PRAGMA user_version = 4")
    with SQLiteStore(path, dim=DIM) as s:
        got = s.fulltext_search("ana", "ana/default", "tea", 5, ItemFilter(speaker="Bo"))
        assert len(got) == 1
    with sqlite3.connect(path) as db:
        plan = db.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM items i "
            "WHERE i.user_id = 'ana' AND i.cube_id = 'ana/default' AND i.speaker = 'Bo'"
        ).fetchall()
    assert "items_speaker" in str(plan)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    import sqlite3

    from mnemic.infra.store.sqlite import MIGRATIONS, SQLiteStore

    path = tmp_path / "s.db"
    SQLiteStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(SchemaTooNew, match="upgrade mnemic"):
        SQLiteStore(path)


def test_facets_speakers_and_neighbors_are_scoped(store) -> None:
    a = item(text="one", speaker="Ana", session_id="s1")
    b = item(text="two", speaker="Ben", session_id="s1")
    c = item(text="three", speaker="Ana", session_id="s1")
    other = item(user="bob", text="x", speaker="Bob", session_id="s1")
    add(store, [a, b, c, other])
    assert store.facets("ana", "ana/default", [a.id, b.id, other.id]) == {
        a.id: ("Ana", "s1"),
        b.id: ("Ben", "s1"),
    }
    assert store.speakers("ana", "ana/default") == ["Ana", "Ben"]
    add(store, [item(text="four", speaker="Cy", session_id="s2")])
    assert store.speakers("ana", "ana/default") == ["Ana", "Ben", "Cy"]  # cache follows writes
    assert store.neighbors("ana", "ana/default", [b.id], 1) == {b.id: [(a.id, 1), (c.id, 1)]}
    assert store.neighbors("ana", "ana/default", [a.id], 5) == {a.id: [(b.id, 1), (c.id, 2)]}


def test_session_tail_is_the_last_turns_of_one_session_in_order(store) -> None:
    raw = MemoryKind.RAW_TURN
    turns = [item(text=f"t{n}", speaker="Ana", session_id="s1", kind=raw) for n in range(5)]
    add(store, turns[:3])
    fact = item(text="a fact", session_id="s1", kind=MemoryKind.FACT)
    elsewhere = [
        item(text="other session", session_id="s2", kind=raw),
        item(user="bob", cube="bob/default", text="bob's", session_id="s1", kind=raw),
    ]
    add(store, [fact, *elsewhere, *turns[3:]])
    tail = store.session_tail("ana", "ana/default", "s1", 2, [raw])
    assert [i.text for i in tail] == ["t3", "t4"]  # oldest first
    assert [i.text for i in store.session_tail("ana", "ana/default", "s1", 9, [raw])] == [
        f"t{n}" for n in range(5)
    ]
    kinds = [raw, MemoryKind.FACT]
    assert [i.text for i in store.session_tail("ana", "ana/default", "s1", 3, kinds)] == [
        "a fact",
        "t3",
        "t4",
    ]
    deleted = turns[4].model_copy(update={"status": MemoryStatus.DELETED, "version": 2})
    store.update_item(deleted, None, actor="test", action="delete")
    assert [i.text for i in store.session_tail("ana", "ana/default", "s1", 2, [raw])] == [
        "t2",
        "t3",
    ]
    assert store.session_tail("ana", "ana/default", "nope", 2, [raw]) == []
    assert store.session_tail("ana", "ana/default", "s1", 0, [raw]) == []


def test_an_add_rekeys_stored_items_in_its_transaction_with_the_same_statistics(
    store, fresh_store
) -> None:
    texts = ["we bought a lemon tree", "it needs sun", "water it weekly", "the cat sleeps"]
    first = [item(text=t, index_text=t, session_id="s1") for t in texts[:3]]
    add(store, first)
    later = item(text=texts[3], index_text=texts[3], session_id="s1")
    rekey = {first[1].id: "it needs sun\nthe cat sleeps", first[2].id: "water it weekly cat"}
    store.add_items([later], np.stack([vec(3)]), actor="test", rekey=rekey)
    got = {i.id: i for i in store.get_items("ana", "ana/default", [f.id for f in first])}
    assert got[first[1].id].index_text == rekey[first[1].id]
    assert got[first[1].id].version == 1  # derived data: no version, no history row
    assert [h.action for h in store.history("ana", "ana/default", first[1].id)] == ["add"]
    # full text ranks as in a store that had those keys from the start
    fresh = fresh_store
    same = [f.model_copy(update={"index_text": rekey.get(f.id, f.index_text)}) for f in first]
    add(fresh, same)
    fresh.add_items([later], np.stack([vec(3)]), actor="test")
    for query in ["cat", "sun cat", "lemon"]:
        ours = store.fulltext_search("ana", "ana/default", query, 10)
        theirs = fresh.fulltext_search("ana", "ana/default", query, 10)
        assert [s.item_id for s in ours] == [s.item_id for s in theirs], query
        assert [s.score for s in ours] == pytest.approx([s.score for s in theirs]), query
    # a batch of two scopes cannot re-key: refused whole
    mixed = [item(text="x"), item(user="bob", cube="bob/default", text="y")]
    with pytest.raises(InvalidInput, match="one scope"):
        store.add_items(mixed, None, actor="test", rekey={first[0].id: "z"})
    assert store.get_items("ana", "ana/default", [mixed[0].id]) == []


def test_keys_repeating_neighbours_do_not_drown_a_word(store) -> None:
    texts = ["we bought a lemon tree", "nice", "it needs sun", "water it weekly", "ok"]
    items = [
        item(text=t, index_text="\n".join(texts[max(0, n - 2) : n + 1]))
        for n, t in enumerate(texts)
    ]
    add(store, items)
    # "lemon" is in 1 of 5 items' own words but in 3 of 5 keys: it must still find them,
    # the item that says it first
    found = store.fulltext_search("ana", "ana/default", "lemon", 5)
    assert found[0].item_id == items[0].id
    assert {s.item_id for s in found} == {i.id for i in items[:3]}


def test_grants_are_kept_changed_and_revoked(store) -> None:
    store.ensure_cube("ana/default", "ana", embedder=None, dim=None)
    store.ensure_cube("ana/work", "ana", embedder=None, dim=None)
    store.grant("ana/default", "bob", "read")
    store.grant("ana/work", "bob", "write")
    store.grant("ana/default", "cy", "write")
    assert [(g.cube_id, g.access) for g in store.grants(grantee="bob")] == [
        ("ana/default", "read"),
        ("ana/work", "write"),
    ]
    assert [g.grantee for g in store.grants(cube_id="ana/default")] == ["bob", "cy"]
    store.grant("ana/default", "bob", "write")  # a second grant changes the access
    assert store.grants(cube_id="ana/default", grantee="bob")[0].access == "write"
    assert store.revoke("ana/default", "bob") is True
    assert store.revoke("ana/default", "bob") is False
    assert [g.grantee for g in store.grants(cube_id="ana/default")] == ["cy"]
    with pytest.raises(InvalidInput):
        store.grant("ana/work", "bob", "admin")
    with pytest.raises(NotFound):
        store.grant("nobody/cube", "bob", "read")
    assert store.grants(grantee="bob")[0].access == "write"  # failed calls changed nothing


def test_times_before_year_1000_round_trip(store) -> None:
    """Found by fuzzing the API: strftime wrote year 271 as '271-...', unreadable back."""
    old = item(text="the battle", valid_from=datetime(271, 8, 16, tzinfo=UTC))
    new = item(text="the launch", valid_from=datetime(2023, 5, 8, tzinfo=UTC))
    add(store, [old, new])
    assert store.get_items("ana", "ana/default", [old.id])[0].valid_from == old.valid_from
    listed = store.list_items("ana", "ana/default", ItemFilter())
    assert [i.id for i in listed] == [old.id, new.id]  # string order is still time order
    before = ItemFilter(valid_before=datetime(1000, 1, 1, tzinfo=UTC))
    assert [i.id for i in store.list_items("ana", "ana/default", before)] == [old.id]


@pytest.mark.parametrize(
    "dsn", ["postgresql://mnemic@db/mnemic", "user=postgres dbname=mnemic host=/tmp/pg"]
)
def test_sqlite_refuses_a_postgres_dsn_and_creates_no_file(
    dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mnemic.infra.store.sqlite import SQLiteStore

    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidInput, match="is a PostgreSQL connection string"):
        SQLiteStore(dsn, dim=8)
    assert list(tmp_path.iterdir()) == []


def test_split_terms_keeps_the_rarest_within_the_budget() -> None:
    from mnemic.infra.store.base import split_terms

    assert split_terms([50, 5, None, 30, 0], 40) == ([1, 2, 3, 4], [0])
    assert split_terms([50, 5], 4) == ([], [0, 1])  # the rarest alone is over it
    assert split_terms([10, 10, 10], 30) == ([0, 1, 2], [])
    # once a term is broad, every commoner one is too (no gaps in the rarity order)
    assert split_terms([3, 8, 2], 6) == ([0, 2], [1])


def test_fulltext_searches_broad_terms_among_the_newest_rows(
    store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At scale, a term in many rows is searched among the scope's newest rows only: rows
    holding a rare term are found at any age with the same score as an exhaustive search;
    rows holding only the common term are found if they are among the newest."""
    from mnemic.infra.store import sqlite as sqlite_store

    monkeypatch.setattr(sqlite_store, "FTS_PRUNE_ROWS", 1)  # SQLite counts terms from 1 row
    texts = [f"broad filler n{n}" for n in range(40)]
    texts[3] = "broad rare n3"  # old, with the rare word and the common one
    texts[5] = "rare n5"  # old, the rare word only
    items = [item(text=t) for t in texts]
    add(store, items)
    add(store, [item(user="bo", cube="bo/default", text="broad rare")])  # another scope

    def search(query: str) -> dict[str, float]:
        return {h.item_id: h.score for h in store.fulltext_search("ana", "ana/default", query, 40)}

    whole = search("rare broad")
    assert set(whole) == {i.id for i in items}
    store.fulltext_budget, store.fulltext_window = 5, 10
    windowed = search("rare broad")
    expected = {items[3].id, items[5].id} | {i.id for i in items[30:]}
    assert set(windowed) == expected
    assert windowed == pytest.approx({i: whole[i] for i in expected}, rel=1e-9)
    # only the common word: the newest rows that hold it
    assert set(search("broad")) == {i.id for i in items[30:]}
    # a window as large as the scope: the exhaustive search
    store.fulltext_window = 40
    assert search("rare broad") == pytest.approx(whole, rel=1e-9)


def test_fts5_row_lengths_read_docsize_in_every_shape() -> None:
    """Row lengths for BM25 come from FTS5's docsize table: a dense range in one read,
    sparse rows by lists, and sizes of 128 tokens or more (two-byte varints) decoded."""
    import sqlite3

    from mnemic.infra.store import fts5_bm25

    assert fts5_bm25.varints(bytes([0x01, 0x81, 0x00, 0x7F])) == [1, 128, 127]
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE t USING fts5(scope, body)")
    sizes = {n: 1 + n % 7 for n in range(1, 60)}
    sizes[30] = 300  # a long row: its size is a two-byte varint
    db.executemany(
        "INSERT INTO t(rowid, scope, body) VALUES (?, 's', ?)",
        [(n, " ".join(["w"] * size)) for n, size in sizes.items()],
    )
    db.execute("DELETE FROM t WHERE rowid IN (10, 11)")  # a gap in the range
    for rowids in ([1, 2, 3, 4], [5, 9, 12, 13], [29, 30, 31], [1, 59]):
        got = fts5_bm25.row_lengths(db, "t", np.array(rowids, dtype=np.int64))
        assert got.tolist() == [sizes[n] + 1 for n in rowids]  # + the scope column
    rows, avgdl = fts5_bm25.averages(db, "t") or (0, 0.0)
    assert rows == 57 and avgdl == pytest.approx(
        sum(v + 1 for n, v in sizes.items() if n not in (10, 11)) / 57
    )
