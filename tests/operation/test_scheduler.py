"""The memory scheduler: working memory bounds and lookups, next-scene prediction, SDK wiring."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from mnemic import Memory, load_settings
from mnemic.config import SchedulerConfig
from mnemic.models import MemoryItem
from mnemic.operation.scheduler import NextScenePredictor, Scheduler, WorkingMemory
from mnemic.operation.scheduler.predict import salience, scene_words

WHEN = datetime(2024, 3, 1, tzinfo=UTC)


def item(i: int, text: str, session: str = "s1") -> MemoryItem:
    return MemoryItem(
        id=f"m{i}", user_id="ana", cube_id="ana/default", session_id=session, text=text
    )


def test_working_memory_is_bounded_lru_and_keeps_the_most_wanted() -> None:
    wm = WorkingMemory(3)
    wm.put([item(1, "a"), item(2, "b")], "preload")
    assert wm.ids() == ["m2", "m1"]  # the first given is the most wanted: evicted last
    wm.touch(["m2"])
    evicted = wm.put([item(3, "c"), item(4, "d")], "preload")
    assert evicted == 1 and len(wm) == 3
    assert "m1" not in wm and {"m2", "m3", "m4"} == set(wm.ids())
    # more than fit at once: the most wanted ones stay
    wm.put([item(i, str(i)) for i in range(10, 20)], "preload")
    assert set(wm.ids()) == {"m10", "m11", "m12"}
    wm.drop(["m11"])
    assert "m11" not in wm
    with pytest.raises(ValueError, match="capacity"):
        WorkingMemory(0)


def test_working_memory_lookup_matches_content_words_and_touches() -> None:
    wm = WorkingMemory(5)
    wm.put(
        [
            item(1, "Ana adopted a dog named Rex."),
            item(2, "The weather was nice."),
            item(3, "Rex loves the park."),
        ],
        "preload",
    )
    found = wm.lookup("what is the name of Ana's dog?")
    assert found[0][0].item.id == "m1"
    assert all(score > 0 for _, score in found)
    assert wm.ids()[-1] == found[0][0].item.id  # used items become most recent
    assert wm.lookup("the of and") == []  # no content words, nothing matched
    assert {s.item.id for s, _ in wm.lookup("Rex")} == {"m1", "m3"}


def test_salience_prefers_what_was_told_over_small_talk() -> None:
    told = "I started pottery classes with Mia in 2022 at the Riverside studio."
    assert salience(told) > salience("Thanks, that's great!") > 0
    words = scene_words(["We hiked Mount Tam with Mia.", "Mia brought her camera."], 5, 2.0)
    assert words[0] == "mia"  # a name said twice, most recently, leads


def test_prediction_preloads_what_the_scene_is_about(memory: Memory) -> None:
    # an old session about pottery, one about a car; the new scene talks pottery again
    memory.add(
        ["I signed up for a pottery class downtown.", "My first clay bowl cracked in the kiln."],
        user_id="ana",
        session_id="old-1",
        timestamp=WHEN,
    )
    memory.add(
        ["The car needs new brakes.", "The mechanic said next Tuesday."],
        user_id="ana",
        session_id="old-2",
        timestamp=WHEN,
    )
    cfg = SchedulerConfig(capacity=3, window=2, scene_turns=2)
    sched = Scheduler(memory.store, cfg)
    new = memory.add(
        ["Guess what, I glazed a clay vase in my pottery class!", "Nice, what colour?"],
        user_id="ana",
        session_id="now",
        timestamp=WHEN,
    )
    vectors = memory.embedder.embed([i.text for i in new])
    loaded = sched.observe(new, vectors)
    held = {i.text for i in sched.working("ana", "ana/default", "now").items()}
    assert len(loaded) == 3 and "The car needs new brakes." not in held
    assert any("pottery class downtown" in t or "kiln" in t for t in held)
    assert sched.stats.preloads == 1 and sched.stats.preloaded_items == 3
    # the predictor alone, on the same store
    pred = NextScenePredictor(memory.store, cfg).predict("ana", "ana/default", new, vectors, k=3)
    assert [p.item_id for p in pred] == loaded


def test_policies_fill_working_memory_differently(memory: Memory) -> None:
    added = memory.add(["one fact", "two facts"], user_id="ana", session_id="s", timestamp=WHEN)
    vectors = memory.embedder.embed([i.text for i in added])
    for policy, expect in (("none", 2), ("recency", 0), ("predict", 2)):
        sched = Scheduler(
            memory.store, SchedulerConfig(policy=policy, capacity=5, keep_results=False)
        )
        sched.observe(added, vectors)
        assert len(sched.working("ana", "ana/default", "s")) == expect, policy
        sched.record_results(added[:1], user_id="ana", cube_id="ana/default", session_id="s")
        if policy == "recency":
            assert sched.working("ana", "ana/default", "s").ids() == [added[0].id]


def test_sdk_search_consults_and_refills_working_memory(tmp_path: Path, embedder: object) -> None:
    settings = load_settings(home=tmp_path / "m")
    with Memory(settings, embedder=embedder) as mem:  # type: ignore[arg-type]
        added = mem.add(
            ["My sister Lena lives in Porto.", "I am learning the cello."],
            user_id="ana",
            session_id="chat",
            timestamp=WHEN,
        )
        sched = mem.scheduler
        assert sched is not None
        wm = sched.working("ana", "ana/default", "chat")
        assert set(wm.ids()) == {a.id for a in added}  # preloaded on add
        hits = mem.search("where does Lena live?", user_id="ana", session_id="chat")
        assert hits[0].item.text == "My sister Lena lives in Porto."
        assert "working" in hits[0].stages  # it came through working memory too
        assert sched.stats.lookups == 1 and sched.stats.hits == 1
        # a deleted item leaves working memory and never comes back through it
        mem.delete(added[0].id, user_id="ana")
        assert added[0].id not in wm
        again = mem.search("Lena Porto", user_id="ana", session_id="chat")
        assert all(h.item.id != added[0].id for h in again)
        # another user's session shares nothing
        assert mem.search("Lena", user_id="ben", session_id="chat") == []


def test_scheduler_can_be_disabled(tmp_path: Path, embedder: object) -> None:
    settings = load_settings(home=tmp_path / "m", scheduler={"enabled": False})
    with Memory(settings, embedder=embedder) as mem:  # type: ignore[arg-type]
        mem.add("a fact", user_id="ana", session_id="s")
        assert mem.scheduler is None
        assert mem.search("fact", user_id="ana", session_id="s")[0].item.text == "a fact"
