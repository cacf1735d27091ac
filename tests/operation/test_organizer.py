"""The organizer on cases of our making, on both store backends: duplicates merged with
history, topics split and merged, summaries, graph edges, idempotence, nothing lost."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "infra"))
from protocol_peer import ProtocolPeer, Reply

from mnemic.config import OrganizerConfig
from mnemic.infra.store.base import ItemFilter
from mnemic.models import MemoryItem, MemoryKind, MemoryStatus, Source
from mnemic.operation.organizer import Organizer
from mnemic.operation.organizer.graph import plan_edges
from mnemic.operation.organizer.tree import two_means

DIM = 8
U, C = "ana", "ana/default"
T0 = datetime(2023, 5, 1, tzinfo=UTC)
EVERY = ItemFilter.any_status()


def direction(hot: int, wobble: float = 0.0, other: int | None = None) -> np.ndarray:
    v = np.full(DIM, 0.02, dtype=np.float32)
    v[hot] = 1.0
    if other is not None:
        v[other] = wobble
    return v / np.linalg.norm(v)


def fact(text: str, day: int = 0, **kw) -> MemoryItem:
    return MemoryItem(user_id=U, cube_id=C, text=text, valid_from=T0 + timedelta(days=day), **kw)


def put(store, pairs: list[tuple[MemoryItem, np.ndarray]]) -> list[MemoryItem]:
    store.add_items([p[0] for p in pairs], np.stack([p[1] for p in pairs]), actor="test")
    return [p[0] for p in pairs]


def snapshot(store) -> tuple:
    items = sorted((i.id, i.status, i.version) for i in store.list_items(U, C, EVERY, limit=10**6))
    topics = sorted((t.id, t.title, t.summary, t.size, t.version) for t in store.topics(U, C))
    edges = sorted((e.src, e.kind, e.dst) for e in store.links(U, C))
    return items, topics, sorted(store.topic_members(U, C).items()), edges


def test_duplicates_merge_with_history_and_nothing_is_lost(store) -> None:
    a = fact("Ana lives in Lisbon", source=Source(message_ids=["D1:1"]), entities=["Lisbon"])
    a2 = fact("Ana lives in Lisbon now", day=3, source=Source(message_ids=["D4:2"]))
    b = fact("Ana's dog is called Rex", day=1)
    turn = fact("ana lives in lisbon", kind=MemoryKind.RAW_TURN, speaker="Ana")
    other = fact("Ana lives in Lisbon", speaker="Bo")  # said by someone else: kept
    put(
        store,
        [
            (a, direction(0)),
            (a2, direction(0, 0.05, 1)),
            (b, direction(3)),
            (turn, direction(0)),
            (other, direction(0)),
        ],
    )
    total = store.count_items(U, C, EVERY)
    org = Organizer(store, OrganizerConfig(duplicate_similarity=0.95))
    report = org.run(U, C)
    assert report.merged_items == 1
    (kept, gone) = store.get_items(U, C, [a.id, a2.id])
    assert gone.status == MemoryStatus.MERGED and gone.metadata["merged_into"] == a.id
    assert kept.status == MemoryStatus.ACTIVE and kept.version == 2
    assert kept.source.message_ids == ["D1:1", "D4:2"] and kept.metadata["absorbed"] == [a2.id]
    assert [h.action for h in store.history(U, C, a2.id)] == ["add", "merge"]
    assert [h.action for h in store.history(U, C, a.id)] == ["add", "merge"]
    assert store.history(U, C, a2.id)[-1].before["status"] == "active"
    # raw turns and another speaker's words are records: never merged
    assert {i.status for i in store.get_items(U, C, [turn.id, other.id])} == {"active"}
    # no item lost: active + merged is what was added; merged items leave the tree
    active = store.count_items(U, C)
    merged = store.count_items(U, C, ItemFilter(statuses=(MemoryStatus.MERGED,)))
    assert active + merged == total == 5
    assert set(store.topic_members(U, C)) == {a.id, b.id, turn.id, other.id}
    assert [e.dst for e in store.links(U, C, [a2.id], kinds=["merged_into"])] == [a.id]
    # a second pass changes nothing
    before = snapshot(store)
    assert not org.run(U, C).changed
    assert snapshot(store) == before


def test_insert_split_and_summaries(store) -> None:
    # two clusters, similar enough to share a topic, eight items: past a bound of 5
    left = [fact(f"hiking trip number {k} in the mountains", day=k) for k in range(4)]
    right = [fact(f"pottery class number {k} with clay", day=k) for k in range(4)]
    put(store, [(i, direction(0, 0.6 + 0.02 * k, 1)) for k, i in enumerate(left)])
    loose = OrganizerConfig(topic_similarity=0.3, max_topic_size=10, duplicate_similarity=1.0)
    first = Organizer(store, loose).run(U, C)
    assert first.placed == 4 and first.topics_written == 1 and first.splits == 0
    (topic,) = store.topics(U, C)
    assert topic.size == 4 and topic.title.startswith("hiking")
    assert "hiking trip number" in topic.summary  # extractive: the items nearest the centre
    put(store, [(i, direction(1, 0.6 + 0.02 * k, 0)) for k, i in enumerate(right)])
    second = Organizer(store, loose).run(U, C)
    assert second.placed == 4 and second.splits == 0 and len(store.topics(U, C)) == 1
    assert store.topics(U, C)[0].version == 2  # its summary rewritten: its items changed
    tight = loose.model_copy(update={"max_topic_size": 5})
    org = Organizer(store, tight)
    third = org.run(U, C)
    assert third.splits == 1 and third.moved == 4 and third.placed == 0
    topics = store.topics(U, C)
    assert sorted(t.size for t in topics) == [4, 4]
    members = store.topic_members(U, C)
    assert len({members[i.id] for i in left}) == 1 and len({members[i.id] for i in right}) == 1
    assert members[left[0].id] != members[right[0].id]
    titles = sorted(t.title for t in topics)
    assert "hiking" in titles[1] and "pottery" in titles[0], titles
    # the split is in the topic's history, the moves in the moved items' histories
    notes = [h for t in topics for h in store.history(U, C, t.id)]
    assert [n.action for n in notes] == ["split"] and notes[0].after["moved"] == 4
    moved = [i for i in left + right if store.history(U, C, i.id)[-1].action == "move"]
    assert len(moved) == 4
    assert {store.history(U, C, i.id)[-1].before["topic_id"] for i in moved} == {notes[0].item_id}
    before = snapshot(store)
    assert not org.run(U, C).changed
    assert snapshot(store) == before


def test_converging_topics_merge_and_inactive_items_leave(store) -> None:
    x = fact("first about sailing", day=0)
    y = fact("second about sailing", day=1)
    z = fact("about cooking", day=2)
    put(store, [(x, direction(2)), (y, direction(2, 0.5, 5)), (z, direction(6))])
    # strict insertion: every item opens a topic; x and y topics converge (cosine ~0.9)
    org = Organizer(
        store,
        OrganizerConfig(
            topic_similarity=0.99, topic_merge_similarity=0.85, duplicate_similarity=1.0
        ),
    )
    report = org.run(U, C)
    assert report.topic_merges == 1
    members = store.topic_members(U, C)
    assert members[x.id] == members[y.id] != members[z.id]
    assert len(store.topics(U, C)) == 2
    kept = members[x.id]
    assert [h.action for h in store.history(U, C, kept)] == ["merge_topics"]
    # a deleted item leaves the tree at the next pass; its emptied topic is dropped
    deleted = z.model_copy(update={"status": MemoryStatus.DELETED, "version": 2})
    store.update_item(deleted, None, actor="test", action="delete")
    again = org.run(U, C)
    assert again.unplaced == 1 and again.topics_dropped == 1
    assert set(store.topic_members(U, C)) == {x.id, y.id}
    assert [t.id for t in store.topics(U, C)] == [kept]


def test_graph_edges(store) -> None:
    s1 = [
        fact("We met Oscar at the harbour", kind=MemoryKind.RAW_TURN, session_id="s1", day=0),
        fact("It was windy", kind=MemoryKind.RAW_TURN, session_id="s1", day=0),
    ]
    s2 = [
        fact(
            "Later that day Oscar called about the boat",
            kind=MemoryKind.RAW_TURN,
            session_id="s2",
            day=5,
        )
    ]
    put(store, [(i, direction(n % DIM)) for n, i in enumerate(s1 + s2)])
    derived = fact(
        "Ana met Oscar",
        day=0,
        session_id="s1",
        source=Source(kind="derived", item_ids=[s1[0].id]),
        entities=["Oscar"],
    )
    newer = fact("The boat is sold", day=6, supersedes=s2[0].id)
    put(store, [(derived, direction(4)), (newer, direction(5))])
    Organizer(store, OrganizerConfig()).run(U, C)
    edges = {(e.src, e.kind, e.dst) for e in store.links(U, C)}
    assert (s1[0].id, "next_in_session", s1[1].id) in edges
    assert (s1[0].id, "same_entity", s2[0].id) in edges  # Oscar, across sessions
    assert (derived.id, "same_entity", s2[0].id) in edges
    assert (s1[0].id, "same_entity", derived.id) not in edges  # same session: no link
    assert (derived.id, "derived_from", s1[0].id) in edges
    assert (newer.id, "supersedes", s2[0].id) in edges
    assert any(k == "before" and d == s2[0].id for _, k, d in edges)
    assert not any(k == "next_in_session" and derived.id in (s, d) for s, k, d in edges)


def test_common_entities_link_nothing() -> None:
    items = [fact(f"I told Oscar thing {k}", session_id=f"s{k}", day=k) for k in range(5)]
    few = plan_edges(items, OrganizerConfig(entity_max_items=5))
    many = plan_edges(items, OrganizerConfig(entity_max_items=4))
    assert any(k == "same_entity" for _, k, _ in few)
    assert not any(k in ("same_entity", "before") for _, k, _ in many)


def test_two_means_is_deterministic_and_separates() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, DIM)) * 0.05 + direction(0)
    b = rng.normal(size=(5, DIM)) * 0.05 + direction(4)
    vs = np.vstack([a, b])
    vs /= np.linalg.norm(vs, axis=1, keepdims=True)
    labels = two_means(vs)
    assert len(set(labels[:6])) == 1 and len(set(labels[6:])) == 1
    assert labels[0] != labels[6]
    assert np.array_equal(labels, two_means(vs))


class ChatPeer(ProtocolPeer):
    """An OpenAI-compatible endpoint on loopback answering chat completions as scripted."""

    def answer(self, payload: dict, reply: Reply) -> str:
        message = {"role": "assistant", "content": reply.content}
        return json.dumps({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})


def test_llm_writes_summaries_only_of_changed_topics(store) -> None:
    from mnemic.infra.llm.openai_compat import OpenAICompatLLM

    peer = ChatPeer()
    try:
        llm = OpenAICompatLLM("m", base_url=peer.url, max_retries=0, backoff_base_s=0.01)
        peer.replies = [Reply(content="  Ana   sails on Sundays. ")]
        put(store, [(fact("sailing on Sunday"), direction(2))])
        org = Organizer(store, OrganizerConfig(), llm=llm)
        org.run(U, C)
        (topic,) = store.topics(U, C)
        assert topic.summary == "Ana sails on Sundays." and len(peer.requests) == 1
        sent = peer.requests[0]["messages"]
        assert "summar" in sent[0]["content"].lower() and "sailing on Sunday" in sent[1]["content"]
        org.run(U, C)
        assert len(peer.requests) == 1  # nothing changed: no summary rewritten
        # the endpoint failing leaves an extractive summary, never a failed pass
        peer.replies = [Reply(status=500, body='{"error": "down"}')]
        put(store, [(fact("cooking on Monday"), direction(6))])
        org.run(U, C)
        summaries = {t.summary for t in store.topics(U, C)}
        assert summaries == {"Ana sails on Sundays.", "cooking on Monday"}
    finally:
        peer.close()


def test_sdk_tree_neighbors_reorganize_and_policy(memory) -> None:
    mem = memory
    mem.settings = mem.settings.model_copy(
        update={"organizer": mem.settings.organizer.model_copy(update={"every_adds": 3})}
    )
    turns = [
        {"speaker": "Ana", "content": "I adopted a puppy called Rex from the shelter."},
        {"speaker": "Bo", "content": "Rex is a lovely name for a puppy!"},
        {"speaker": "Ana", "content": "We went hiking in Sintra with Rex last weekend."},
    ]
    added = mem.add(turns, user_id="ana", session_id="s1", timestamp="2023-05-08", wait=True)
    assert mem.wait(user_id="ana", timeout=60)  # the organize job the policy queued
    tree = mem.tree(user_id="ana")
    placed = {i.id for t in tree.topics for i in t.items}
    assert {i.id for i in added} <= placed  # the policy queued a pass after the add
    assert tree.unplaced == 0 and all(t.summary and t.title for t in tree.topics)
    assert sum(t.size for t in tree.topics) == len(placed)
    links = mem.neighbors(added[0].id, user_id="ana")
    assert any(link.kind == "next_in_session" and link.item.id == added[1].id for link in links)
    assert all(link.direction == "out" for link in links if link.item.id == added[1].id)
    only = mem.neighbors(added[1].id, user_id="ana", kinds=["next_in_session"])
    assert {link.direction for link in only} == {"in", "out"}
    assert mem.reorganize(user_id="ana")["placed"] == 0
    with pytest.raises(Exception, match="no memory"):
        mem.neighbors("nope", user_id="ana")


def test_two_passes_planned_from_one_tree_cannot_both_apply(store) -> None:
    from mnemic.errors import Conflict

    put(store, [(fact(f"hiking trip {k}", day=k), direction(0, 0.1 * k, 1)) for k in range(4)])
    org = Organizer(store, OrganizerConfig())
    first, _ = org.plan(U, C)
    second, _ = org.plan(U, C)  # planned meanwhile, from the same (empty) tree
    store.organize(first, actor="test")
    after_first = snapshot(store)
    with pytest.raises(Conflict, match="tree changed"):
        store.organize(second, actor="test")
    assert snapshot(store) == after_first  # refused whole
    assert Organizer(store, OrganizerConfig()).run(U, C).changed is False  # replans: nothing


def test_a_purged_memory_leaves_no_trace_in_its_topic(memory) -> None:
    mem = memory
    said = [
        "I like green apples from the market.",
        "Apples from the market are my favourite snack.",
        "My bank PIN is 4321, keep it secret.",
    ]
    added = mem.add(said, user_id="ana", wait=True)
    mem.reorganize(user_id="ana")

    def shown() -> str:
        tree = mem.tree(user_id="ana")
        return " ".join(f"{t.title} {t.summary} {[i.text for i in t.items]}" for t in tree.topics)

    assert "4321" in shown()
    mem.delete(added[2].id, user_id="ana", purge=True)
    assert "4321" not in shown() and "bank" not in shown()
    mem.reorganize(user_id="ana")  # the topic that held it is written again
    tree = mem.tree(user_id="ana")
    assert "4321" not in shown() and all(t.title and t.summary for t in tree.topics)


def test_duplicates_are_found_across_blocks_of_the_similarity_matrix() -> None:
    from mnemic.operation.organizer.reorganizer import duplicate_groups

    rng = np.random.default_rng(3)
    items = [fact(f"fact {k}", day=k) for k in range(700)]
    vecs = rng.normal(size=(700, 64)).astype(np.float32)
    vecs[650] = vecs[3] + 0.01 * rng.normal(size=64)  # rows 3 and 650: different blocks
    vecs[651] = vecs[3] + 0.01 * rng.normal(size=64)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    groups = duplicate_groups(
        items, {i.id: v for i, v in zip(items, vecs, strict=True)}, OrganizerConfig()
    )
    ((survivor, merged),) = groups
    assert survivor.id == items[3].id
    assert [m.id for m, _ in merged] == [items[650].id, items[651].id]
    assert all(s > 0.99 for _, s in merged)


def test_policy_waits_for_enough_new_items(store) -> None:
    from mnemic.operation.organizer.job import due, waiting

    turn = MemoryKind.RAW_TURN  # never merged: the counts stay what was added
    put(store, [(fact(f"turn {k}", kind=turn), direction(k % DIM)) for k in range(20)])
    cfg = OrganizerConfig(every_adds=5, growth=0.1)
    assert waiting(store, U, C) == (0, 20) and due(store, cfg, U, C)
    Organizer(store, cfg).run(U, C)
    assert waiting(store, U, C) == (20, 0) and not due(store, cfg, U, C)
    put(store, [(fact(f"new {k}", kind=turn), direction(k % DIM)) for k in range(5)])
    assert due(store, cfg, U, C)  # 5 waiting: every_adds, and more than 10% of 20
    assert not due(store, cfg.model_copy(update={"growth": 0.5}), U, C)  # needs 10
    assert not due(store, cfg.model_copy(update={"every_adds": 0}), U, C)  # on demand only


def test_a_title_names_the_subject_not_the_small_talk() -> None:
    from mnemic.operation.organizer.tree import title_of

    said = [
        "Wow, thanks! I really love pottery, it's so calming.",
        "Yeah, pottery class was awesome, I also made a bowl.",
        "Thanks, glad you like the pottery bowl!",
    ]
    items = [MemoryItem(user_id=U, cube_id=C, text=t, speaker="Mel") for t in said]
    title = title_of(items)
    assert title.split(" / ")[0] == "pottery"
    assert not {"thanks", "wow", "yeah", "really", "also", "awesome", "glad"} & set(
        title.split(" / ")
    ), title
