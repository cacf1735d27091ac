"""The memory lifecycle without an LLM: rule extraction, add/skip/update/supersede, history
reasons, "as of" views, version chains, expiry and archival, deletion of derived memories."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mnemic import Memory, load_settings
from mnemic.operation.reader.rules import normalize_value

SCENARIOS = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "knowledge_updates.json").read_text()
)["scenarios"]


def _slot_items(memory: Memory, user: str, slot: str, subject: str, **filters: Any) -> list:
    items = memory.get_all(user_id=user, filters={"tags": [f"slot:{slot}"], **filters})
    return [i for i in items if i.metadata.get("subject") == subject]


def _values(items: list) -> set[str]:
    return {normalize_value(str(i.metadata["value"])) for i in items}


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["name"] for s in SCENARIOS])
def test_knowledge_update_scenario(memory: Memory, scenario: dict[str, Any]) -> None:
    user = "u"
    for session in scenario["sessions"]:
        memory.add(
            [{"speaker": session["speaker"], "content": session["text"]}],
            user_id=user,
            timestamp=session["date"],
            wait=True,
        )
    slot, subject = scenario["slot"], scenario["subject"]
    current = _slot_items(memory, user, slot, subject)
    assert _values(current) == {normalize_value(scenario["current"])}, [i.text for i in current]
    past = _slot_items(memory, user, slot, subject, statuses=["superseded"])
    assert _values(past) == {normalize_value(v) for v in scenario["past"]}
    for old in past:
        assert old.valid_to is not None
        (entry,) = [h for h in memory.history(old.id, user_id=user) if h.action == "supersede"]
        assert entry.reason and "changed from" in entry.reason
    for view in scenario["as_of"]:
        then = _slot_items(memory, user, slot, subject, as_of=view["date"])
        assert _values(then) == {normalize_value(view["value"])}, (view, [i.text for i in then])
    if scenario.get("skip"):
        (kept,) = current
        actions = [h.action for h in memory.history(kept.id, user_id=user)]
        assert actions == ["add", "skip"]
        assert len(kept.source.item_ids) == 2  # it remembers both turns that said it


def test_update_chain_versions_and_reasons(memory: Memory) -> None:
    memory.add("I live in Boston.", user_id="ana", timestamp="2023-01-05", wait=True)
    memory.add("I moved to Paris on 2 June 2023.", user_id="ana", timestamp="2023-06-09", wait=True)
    (paris,) = _slot_items(memory, "ana", "residence", "the user")
    assert paris.text == "the user lives in Paris"
    assert paris.valid_from == datetime(2023, 6, 2, tzinfo=UTC)
    chain = memory.versions(paris.id, user_id="ana")
    assert [i.text for i in chain] == ["the user lives in Boston", "the user lives in Paris"]
    boston = chain[0]
    assert boston.status == "superseded" and boston.valid_to == paris.valid_from
    assert paris.supersedes == boston.id
    assert memory.versions(boston.id, user_id="ana") == chain
    (added,) = memory.history(paris.id, user_id="ana")
    assert added.reason and "explicit cue 'moved'" in added.reason
    # search: now Paris; as of May, Boston (and not Paris)
    hits = memory.search("where does the user live", user_id="ana", top_k=3)
    assert any(h.item.id == paris.id for h in hits)
    assert all(h.item.id != boston.id for h in hits)
    then = memory.search(
        "where does the user live", user_id="ana", filters={"as_of": "2023-05-01"}, top_k=5
    )
    then_ids = [h.item.id for h in then]
    assert boston.id in then_ids and paris.id not in then_ids


def test_similar_memory_with_more_detail_is_an_update(memory: Memory) -> None:
    memory.add(
        [{"speaker": "Ana", "content": "I went hiking yesterday."}],
        user_id="ana",
        timestamp="2023-05-08",
        wait=True,
    )
    memory.add(
        [{"speaker": "Ana", "content": "I went hiking yesterday in the Alps with my brother."}],
        user_id="ana",
        timestamp="2023-05-08",
        wait=True,
    )
    events = memory.get_all(user_id="ana", filters={"kinds": ["event"]})
    assert len(events) == 1
    (event,) = events
    assert "Alps" in event.text and "7 May 2023" in event.text and event.version == 2
    assert [h.action for h in memory.history(event.id, user_id="ana")] == ["add", "update"]


def test_events_are_dated_when_they_happened(memory: Memory) -> None:
    (turn,) = memory.add(
        [{"speaker": "Caroline", "content": "I went to a support group yesterday.", "id": "D1:3"}],
        user_id="c",
        timestamp="2023-05-08T13:56:00",
        wait=True,
    )
    (event,) = memory.get_all(user_id="c", filters={"kinds": ["event"]})
    assert event.text == "Caroline: I went to a support group yesterday. (7 May 2023)"
    assert event.valid_from == datetime(2023, 5, 7, tzinfo=UTC)
    assert event.source.message_ids == ["D1:3"] and event.source.item_ids == [turn.id]
    assert turn.index_text and "yesterday: 7 May 2023" in turn.index_text


def test_deleting_a_turn_deletes_what_was_extracted_from_it(memory: Memory) -> None:
    (turn,) = memory.add("My phone number is 555-0101.", user_id="ana", wait=True)
    (fact,) = memory.get_all(user_id="ana", filters={"tags": ["derived"]})
    memory.delete(turn.id, user_id="ana", purge=True)
    assert memory.get_all(user_id="ana") == []
    # the number, not "555" alone: a random item id in the history may hold those digits
    assert "555-0101" not in json.dumps(
        [h.model_dump(mode="json") for h in memory.history(fact.id, user_id="ana")]
    )


def test_ttl_and_archival_policy(tmp_path: Path, embedder: object) -> None:
    settings = load_settings(
        home=tmp_path / "h",
        lifecycle={"ttl_days": {"raw_turn": 30}, "archive_after_days": 365},
        reader={"extract": False},
    )
    with Memory(settings, embedder=embedder) as mem:  # type: ignore[arg-type]
        (turn,) = mem.add([{"speaker": "Ana", "content": "parking on level 3"}], user_id="ana")
        (note,) = mem.add("a note without a speaker", user_id="ana", wait=True)
        assert turn.expires_at is not None and note.expires_at is None
        assert mem.expire(user_id="ana") == {"expired": 0, "archived": 0}
        later = datetime.now(UTC) + timedelta(days=31)
        assert mem.expire(user_id="ana", now=later) == {"expired": 1, "archived": 0}
        assert [i.id for i in mem.get_all(user_id="ana")] == [note.id]
        (h,) = [h for h in mem.history(turn.id, user_id="ana") if h.action == "expire"]
        assert h.reason and h.reason.startswith("expired at")
        much_later = datetime.now(UTC) + timedelta(days=400)
        assert mem.expire(user_id="ana", now=much_later) == {"expired": 0, "archived": 1}
        assert mem.get_all(user_id="ana") == []
        archived = mem.get_all(user_id="ana", filters={"statuses": ["archived"]})
        assert {i.id for i in archived} == {turn.id, note.id}


def test_a_month_without_a_year_dates_the_change(memory: Memory) -> None:
    memory.add("I live in Porto.", user_id="ana", timestamp="2023-01-10", wait=True)
    memory.add(
        "I moved to Lisbon in May; my cat came too.",
        user_id="ana",
        timestamp="2023-06-20",
        wait=True,
    )
    (lisbon,) = _slot_items(memory, "ana", "residence", "the user")
    assert lisbon.text == "the user lives in Lisbon"
    assert lisbon.valid_from == datetime(2023, 5, 1, tzinfo=UTC)
    then = _slot_items(memory, "ana", "residence", "the user", as_of="2023-04-15")
    assert [i.text for i in then] == ["the user lives in Porto"]
