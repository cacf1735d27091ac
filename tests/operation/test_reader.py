"""Input normalising and the deterministic reader."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mnemic.errors import InvalidInput
from mnemic.models import MemoryKind
from mnemic.operation.reader.deterministic import DeterministicReader, embed_text
from mnemic.operation.reader.messages import normalize_messages, parse_time


def test_accepts_text_list_and_chat_shapes() -> None:
    assert [m.text for m in normalize_messages("hi", 100)] == ["hi"]
    assert [m.text for m in normalize_messages(["a", "b"], 100)] == ["a", "b"]
    (m,) = normalize_messages([{"role": "user", "content": "yo", "id": 7}], 100)
    assert (m.speaker, m.text, m.message_id) == ("user", "yo", "7")
    (m,) = normalize_messages({"speaker": "Ana", "text": "x", "timestamp": "2023-01-02"}, 100)
    assert m.timestamp == datetime(2023, 1, 2, tzinfo=UTC)


def test_parse_time_forms() -> None:
    assert parse_time("2023-05-08T13:56:00Z") == datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
    assert parse_time(0) == datetime(1970, 1, 1, tzinfo=UTC)
    with pytest.raises(InvalidInput):
        parse_time("last tuesday")
    with pytest.raises(InvalidInput):
        parse_time(10**20)


def test_reader_keeps_provenance_and_context_keys() -> None:
    messages = normalize_messages(
        [
            {"speaker": "Ana", "content": "Where should we eat?", "id": "D1:1"},
            {"speaker": "Ben", "content": "The ramen place.", "id": "D1:2"},
        ],
        1000,
    )
    when = datetime(2023, 5, 8, tzinfo=UTC)
    items = DeterministicReader(context_turns=1).read(
        messages, user_id="u", cube_id="c", session_id="s", agent_id=None, timestamp=when
    )
    first, second = items
    assert second.source.message_ids == ["D1:2"] and second.kind == MemoryKind.RAW_TURN
    assert second.valid_from == when and second.session_id == "s"
    # the answer is indexed with the question it answers; the vector sees only its own words
    # ...and with the day it was said
    assert second.index_text == (
        "Ana: Where should we eat?\nBen: The ramen place.\non 8 May 2023 (Monday)"
    )
    assert embed_text(second) == "Ben: The ramen place."
    assert first.index_text == "Ana: Where should we eat?\non 8 May 2023 (Monday)"
    assert (
        DeterministicReader(context_turns=0)
        .read(messages, user_id="u", cube_id="c", session_id=None, agent_id=None, timestamp=when)[1]
        .index_text
        == "Ben: The ramen place.\non 8 May 2023 (Monday)"
    )


def test_date_keys_can_be_left_out_and_the_item_keeps_its_time() -> None:
    messages = normalize_messages([{"speaker": "Ana", "content": "I ran yesterday."}], 1000)
    when = datetime(2023, 5, 8, tzinfo=UTC)
    read = DeterministicReader(context_turns=0, date_keys=False).read(
        messages, user_id="u", cube_id="c", session_id=None, agent_id=None, timestamp=when
    )
    assert read[0].index_text == "Ana: I ran yesterday." and read[0].valid_from == when
    dated = DeterministicReader(context_turns=0).read(
        messages, user_id="u", cube_id="c", session_id=None, agent_id=None, timestamp=when
    )
    assert dated[0].index_text.endswith("on 8 May 2023 (Monday); yesterday: 7 May 2023")


def test_entities_are_names_not_sentence_openers_or_calendar_words() -> None:
    from mnemic.operation.reader.rules import entities

    # "Maria" starts like "Mar" but is no month; "Then" opens the sentence, it is no name
    assert entities("Then Maria called me from Lisbon.") == ["Maria", "Lisbon"]
    assert entities("I met Maria in March, on a Monday.") == ["Maria"]
    assert entities("We flew to New York with Marco.") == ["New York", "Marco"]
    assert entities("Maria is here.") == []  # one capitalised opener: cannot tell


def test_following_turns_of_the_same_add_are_in_the_keys() -> None:
    messages = normalize_messages(
        [
            {"speaker": "Ana", "content": "I adopted another pup last month.", "id": "D1:1"},
            {"speaker": "Ben", "content": "What's his name?", "id": "D1:2"},
            {"speaker": "Ana", "content": "Scout! He loves the beach.", "id": "D1:3"},
        ],
        1000,
    )
    read = DeterministicReader(context_turns=0, context_after=2, date_keys=False).read(
        messages, user_id="u", cube_id="c", session_id="s", agent_id=None, timestamp=None
    )
    # the adoption is found by the name given two turns later; the last turn has none after it
    assert read[0].index_text == (
        "Ana: I adopted another pup last month.\nBen: What's his name?\n"
        "Ana: Scout! He loves the beach."
    )
    assert read[1].index_text == "Ben: What's his name?\nAna: Scout! He loves the beach."
    assert read[2].index_text == "Ana: Scout! He loves the beach."
    # the vector still sees only the turn's own words
    assert embed_text(read[0]) == "Ana: I adopted another pup last month."
