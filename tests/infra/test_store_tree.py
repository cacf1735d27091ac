"""The Store's tree and graph (migration 3): topics, placement, edges and the one-transaction
organizing step, run against every backend in STORE_BACKENDS (fixture ``store``)."""

from __future__ import annotations

import numpy as np
import pytest

from mnemic.errors import Conflict, InvalidInput
from mnemic.infra.store.base import ItemChange, ItemFilter, TreeChange
from mnemic.models import Edge, MemoryItem, MemoryStatus, TopicNode

DIM = 8
U, C = "ana", "ana/default"


def vec(hot: int) -> np.ndarray:
    v = np.full(DIM, 0.01, dtype=np.float32)
    v[hot] = 1.0
    return v / np.linalg.norm(v)


def stored(store, n: int) -> list[MemoryItem]:
    items = [MemoryItem(user_id=U, cube_id=C, text=f"item {k}") for k in range(n)]
    store.add_items(items, np.stack([vec(k % DIM) for k in range(n)]), actor="test")
    return items


def topic(**kw) -> TopicNode:
    return TopicNode(user_id=U, cube_id=C, **kw)


def test_topics_place_move_and_sizes(store) -> None:
    a, b, c = stored(store, 3)
    t1 = topic(title="one", summary="s1", centroid=vec(0).tolist())
    t2 = topic(title="two", summary="s2")
    store.organize(
        TreeChange(U, C, topics=[t1, t2], place={a.id: t1.id, b.id: t1.id, c.id: t2.id}),
        actor="organizer",
    )
    got = {t.id: t for t in store.topics(U, C)}
    assert got[t1.id].size == 2 and got[t2.id].size == 1
    assert got[t1.id].centroid == pytest.approx(vec(0).tolist())
    assert got[t2.id].centroid is None and got[t2.id].summary == "s2"
    assert store.topic_members(U, C) == {a.id: t1.id, b.id: t1.id, c.id: t2.id}
    assert store.topic_members(U, C, [t2.id]) == {c.id: t2.id}
    # a first placement is no move; a change of topic is, with its history row
    assert [h.action for h in store.history(U, C, b.id)] == ["add"]
    store.organize(TreeChange(U, C, place={b.id: t2.id}, move_reason="closer"), actor="org")
    moves = [h for h in store.history(U, C, b.id) if h.action == "move"]
    assert len(moves) == 1 and moves[0].reason == "closer"
    assert moves[0].before == {"topic_id": t1.id} and moves[0].after == {"topic_id": t2.id}
    # placing under the same topic again changes nothing
    store.organize(TreeChange(U, C, place={b.id: t2.id}), actor="org")
    assert len([h for h in store.history(U, C, b.id) if h.action == "move"]) == 1
    # other scopes see nothing
    assert store.topics("bob", C) == [] and store.topic_members("bob", C) == {}


def test_organize_is_all_or_nothing(store) -> None:
    a, b = stored(store, 2)
    t1 = topic(title="one")
    store.organize(TreeChange(U, C, topics=[t1], place={a.id: t1.id}), actor="org")
    merged = b.model_copy(update={"status": MemoryStatus.MERGED, "version": 2})
    # the item change is valid but the topic is dropped with an item still under it
    with pytest.raises(InvalidInput):
        store.organize(
            TreeChange(
                U,
                C,
                items=[ItemChange(merged, 1, "merge")],
                drop_topics=[t1.id],
                notes=[(t1.id, "merge_topics", "x", {})],
            ),
            actor="org",
        )
    (back,) = store.get_items(U, C, [b.id])
    assert back.status == MemoryStatus.ACTIVE and back.version == 1
    assert [t.id for t in store.topics(U, C)] == [t1.id]
    assert store.history(U, C, t1.id) == []
    # a stale expected version refuses the whole step too
    with pytest.raises(Conflict):
        store.organize(
            TreeChange(U, C, items=[ItemChange(merged, 7, "merge")], place={b.id: t1.id}),
            actor="org",
        )
    assert store.topic_members(U, C) == {a.id: t1.id}
    # placing under a topic that does not exist, or an item that does not exist
    with pytest.raises(InvalidInput):
        store.organize(TreeChange(U, C, place={b.id: "no-such-topic"}), actor="org")
    with pytest.raises(InvalidInput):
        store.organize(TreeChange(U, C, place={"no-such-item": t1.id}), actor="org")
    # a valid step applies everything, with history for the item and the topic
    store.organize(
        TreeChange(
            U,
            C,
            items=[ItemChange(merged, 1, "merge", "same as a")],
            unplace=[a.id],
            drop_topics=[t1.id],
            notes=[(t1.id, "drop_topic", "empty", {"items": 0})],
        ),
        actor="org",
    )
    (back,) = store.get_items(U, C, [b.id])
    assert back.status == MemoryStatus.MERGED and back.version == 2
    assert store.history(U, C, b.id)[-1].action == "merge"
    assert store.history(U, C, b.id)[-1].reason == "same as a"
    (note,) = store.history(U, C, t1.id)
    assert note.action == "drop_topic" and note.after == {"items": 0}
    assert store.topics(U, C) == [] and store.topic_members(U, C) == {}
    assert store.count_items(U, C, ItemFilter(statuses=(MemoryStatus.MERGED,))) == 1


def test_edges_both_directions_kinds_and_purge(store) -> None:
    a, b, c = stored(store, 3)
    edges = [
        Edge(user_id=U, cube_id=C, src=a.id, kind="before", dst=b.id),
        Edge(user_id=U, cube_id=C, src=a.id, kind="same_entity", dst=c.id, weight=0.5),
        Edge(user_id=U, cube_id=C, src=b.id, kind="next_in_session", dst=c.id),
    ]
    store.organize(TreeChange(U, C, add_edges=edges), actor="org")
    store.organize(TreeChange(U, C, add_edges=edges[:1]), actor="org")  # no duplicate
    assert len(store.links(U, C)) == 3
    around_b = store.links(U, C, [b.id])
    assert {(e.src, e.kind, e.dst) for e in around_b} == {
        (a.id, "before", b.id),
        (b.id, "next_in_session", c.id),
    }
    only = store.links(U, C, [a.id], kinds=["same_entity"])
    assert [(e.dst, e.weight) for e in only] == [(c.id, 0.5)]
    with pytest.raises(InvalidInput):
        store.organize(
            TreeChange(U, C, add_edges=[Edge(user_id=U, cube_id=C, src=a.id, kind="x", dst="?")]),
            actor="org",
        )
    store.organize(TreeChange(U, C, drop_edges=[(a.id, "before", b.id)]), actor="org")
    assert len(store.links(U, C)) == 2
    # a purged item leaves the tree and the graph
    t = topic(title="t")
    store.organize(TreeChange(U, C, topics=[t], place={c.id: t.id, a.id: t.id}), actor="org")
    store.purge_item(U, C, c.id, actor="test")
    assert store.links(U, C, [c.id]) == [] and store.topic_members(U, C) == {a.id: t.id}
    assert store.links("bob", C) == []


def test_get_vectors(store) -> None:
    a, b = stored(store, 2)
    bare = MemoryItem(user_id=U, cube_id=C, text="no vector yet")
    store.add_items([bare], None, actor="test")
    got = store.get_vectors(U, C, [b.id, bare.id, a.id, "nope"])
    assert set(got) == {a.id, b.id}
    assert got[b.id] == pytest.approx(vec(1), abs=1e-6)
    assert got[a.id].dtype == np.float32
    assert store.get_vectors("bob", C, [a.id]) == {}


def test_item_matches_agrees_with_the_stores_filters(store) -> None:
    from datetime import UTC, datetime

    from mnemic.infra.store.base import item_matches
    from mnemic.models import MemoryKind

    day = [datetime(2023, 5, d, tzinfo=UTC) for d in range(1, 6)]
    items = [
        MemoryItem(
            user_id=U,
            cube_id=C,
            text="a",
            session_id="s1",
            speaker="Ana",
            valid_from=day[0],
            tags=["x"],
        ),
        MemoryItem(
            user_id=U,
            cube_id=C,
            text="b",
            session_id="s2",
            kind=MemoryKind.EVENT,
            valid_from=day[2],
            valid_to=day[3],
            agent_id="bot",
        ),
        MemoryItem(user_id=U, cube_id=C, text="c", status=MemoryStatus.MERGED, tags=["x", "y"]),
        MemoryItem(user_id=U, cube_id=C, text="d", valid_from=day[4], speaker="Bo"),
    ]
    store.add_items(items, None, actor="test")
    filters = [
        ItemFilter(),
        ItemFilter.any_status(),
        ItemFilter(statuses=(MemoryStatus.MERGED,)),
        ItemFilter(kinds=(MemoryKind.EVENT,)),
        ItemFilter(session_id="s1"),
        ItemFilter(agent_id="bot"),
        ItemFilter(speaker="Bo"),
        ItemFilter.any_status(tags=("x",)),
        ItemFilter.any_status(tags=("x", "y")),
        ItemFilter(valid_after=day[1]),
        ItemFilter(valid_before=day[3]),
        ItemFilter(as_of=day[2]),
        ItemFilter(as_of=day[3]),
        ItemFilter(known_at=datetime(2000, 1, 1, tzinfo=UTC)),
    ]
    stored = store.list_items(U, C, ItemFilter.any_status())
    for flt in filters:
        want = {i.id for i in store.list_items(U, C, flt)}
        assert {i.id for i in stored if item_matches(i, flt)} == want, flt
