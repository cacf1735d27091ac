"""Store.get_vectors and Store.import_items on both backends: exact vectors back, history rows
kept as they are, one transaction (a failure part-way writes nothing), ids unique store-wide."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from mnemic.errors import Conflict
from mnemic.infra.store.base import ItemFilter
from mnemic.models import CubeManifest, HistoryEntry, MemoryItem, MemoryStatus

AT = datetime(2021, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, 8)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _rows(cube: str, texts: list[str]) -> tuple[list[MemoryItem], list[HistoryEntry]]:
    items = [
        MemoryItem(user_id="ana", cube_id=cube, text=t, status=MemoryStatus.SUPERSEDED, version=2)
        for t in texts
    ]
    history = [
        HistoryEntry(
            id=999,
            item_id=i.id,
            user_id="ana",
            cube_id=cube,
            action=action,
            actor="someone else",
            at=AT,
            reason=f"{action} long ago",
            before=None if action == "add" else {"text": "before", "n": 1.5},
            after=i.model_dump(mode="json"),
        )
        for i in items
        for action in ("add", "update")
    ]
    return items, history


def test_get_vectors_gives_back_the_exact_vectors_of_the_scope(store) -> None:
    rng = np.random.default_rng(0)
    items = [MemoryItem(user_id="ana", cube_id="c", text=f"t{n}") for n in range(3)]
    vectors = _unit(rng, 3)
    store.add_items(items[:2], vectors[:2], actor="ana")
    store.add_items(items[2:], None, actor="ana")
    other = MemoryItem(user_id="bob", cube_id="c", text="bob's")
    store.add_items([other], _unit(rng, 1), actor="bob")
    got = store.get_vectors("ana", "c", [i.id for i in items] + [other.id, "nope"])
    assert sorted(got) == sorted(i.id for i in items[:2])
    for n in range(2):
        assert got[items[n].id].dtype == np.float32
        assert got[items[n].id].tobytes() == vectors[n].tobytes()


def test_import_items_keeps_rows_as_they_are_and_makes_the_cube(store) -> None:
    items, history = _rows("c", ["the lake at dawn", "my sister in Lisbon"])
    vectors = _unit(np.random.default_rng(1), 2)
    manifest = CubeManifest(cube_id="c", owner_id="ana", embedder="e", embedding_dim=8)
    store.import_items(items, [vectors[0], vectors[1]], history, cube=manifest)
    assert store.get_cube("c") == manifest
    got = store.list_items("ana", "c", ItemFilter.any_status())
    assert [i.model_dump() for i in got] == [i.model_dump() for i in items]
    for item in items:
        rows = store.history("ana", "c", item.id)
        assert [h.action for h in rows] == ["add", "update"]  # no row of its own added
        assert rows[0].id < rows[1].id
        assert [h.model_dump(exclude={"id"}) for h in rows] == [
            h.model_dump(exclude={"id"}) for h in history if h.item_id == item.id
        ]
    flt = ItemFilter.any_status()
    assert [s.item_id for s in store.fulltext_search("ana", "c", "Lisbon", 5, flt)] == [items[1].id]
    assert store.vector_search("ana", "c", vectors[0], 1, flt)[0].item_id == items[0].id
    assert (
        store.get_vectors("ana", "c", [items[1].id])[items[1].id].tobytes() == vectors[1].tobytes()
    )


def test_import_items_is_all_or_nothing(store) -> None:
    taken = MemoryItem(user_id="bob", cube_id="b", text="bob's own")
    store.add_items([taken], None, actor="bob")
    items, history = _rows("c", ["first", "second"])
    items[1] = items[1].model_copy(update={"id": taken.id})  # taken in another scope
    manifest = CubeManifest(cube_id="c", owner_id="ana")
    with pytest.raises(Conflict, match="already exists"):
        store.import_items(items, None, history, cube=manifest)
    assert store.get_cube("c") is None
    assert store.count_items("ana", "c", ItemFilter.any_status()) == 0
    assert store.history("ana", "c", items[0].id) == []
    # the cube exists: refused too
    store.ensure_cube("d", "ana", embedder=None, dim=None)
    fresh, rows = _rows("d", ["third"])
    with pytest.raises(Conflict, match="exists already"):
        store.import_items(fresh, None, rows, cube=CubeManifest(cube_id="d", owner_id="ana"))
    assert store.count_items("ana", "d", ItemFilter.any_status()) == 0
