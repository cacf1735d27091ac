"""Retrieval stages and packing on small cases of our own making."""

from __future__ import annotations

from datetime import UTC, datetime

from mnemic.infra.store.base import Scored
from mnemic.infra.tokens import count_tokens
from mnemic.models import MemoryItem, SearchHit
from mnemic.operation.retrieval.packing import context_text, pack, render
from mnemic.operation.retrieval.stages.fusion import fuse


def test_rrf_rewards_agreement_between_stages() -> None:
    ranked = {
        "bm25": [Scored("a", 9.0), Scored("b", 5.0)],
        "dense": [Scored("b", 0.9), Scored("c", 0.8)],
    }
    fused = fuse(ranked, {"bm25": 1.0, "dense": 1.0}, rrf_k=60)
    order = sorted(fused, key=lambda i: fused[i].score, reverse=True)
    assert order[0] == "b"  # found by both
    assert fused["b"].stages == {"bm25": 5.0, "bm25_rank": 2, "dense": 0.9, "dense_rank": 1}
    assert fused["b"].notes == ["bm25 rank 2 (score 5.000)", "dense rank 1 (score 0.900)"]


def test_rrf_weights_shift_the_order() -> None:
    ranked = {"bm25": [Scored("a", 1.0)], "dense": [Scored("b", 1.0)]}
    fused = fuse(ranked, {"bm25": 2.0, "dense": 1.0}, rrf_k=60)
    assert fused["a"].score > fused["b"].score


def _hit(text: str, speaker: str | None = "Ana") -> SearchHit:
    item = MemoryItem(
        user_id="u",
        cube_id="c",
        text=text,
        speaker=speaker,
        valid_from=datetime(2023, 5, 8, tzinfo=UTC),
    )
    return SearchHit(item=item, score=1.0)


def test_render_has_date_and_speaker() -> None:
    assert render(_hit("hello there").item) == "[8 May 2023] Ana: hello there"
    assert render(_hit("plain", speaker=None).item) == "[8 May 2023] plain"


def test_a_memory_that_names_its_speaker_first_is_not_prefixed_again() -> None:
    # memories extracted from Ana's turns say who they are about themselves
    assert render(_hit("Ana: I ran a marathon last week. (1 May 2023)").item) == (
        "[8 May 2023] Ana: I ran a marathon last week. (1 May 2023)"
    )
    assert render(_hit("Ana likes pottery").item) == "[8 May 2023] Ana likes pottery"
    assert render(_hit("Ana's favorite book is Dune").item) == (
        "[8 May 2023] Ana's favorite book is Dune"
    )
    # a name that merely starts like the speaker's is no mention of her
    assert render(_hit("Anastasia called").item) == "[8 May 2023] Ana: Anastasia called"


def test_pack_fits_the_budget_and_keeps_rank_order() -> None:
    hits = [_hit("short one"), _hit("a much longer line " * 20), _hit("short two")]
    # one date header for the day, then the two short lines
    budget = count_tokens("[8 May 2023]\nAna: short one\nAna: short two") + 3
    packed = pack(hits, budget)
    assert [h.item.text for h in packed] == ["short one", "short two"]  # the long one skipped
    assert count_tokens(context_text(packed)) <= budget
    assert pack(hits, 1) == []


def test_context_groups_by_day_oldest_first() -> None:
    late = _hit("later")
    late.item.valid_from = datetime(2023, 6, 1, tzinfo=UTC)
    text = context_text([late, _hit("first"), _hit("second")])
    assert text == "[8 May 2023]\nAna: first\nAna: second\n[1 June 2023]\nAna: later"


def _turn_and_fact() -> tuple[SearchHit, SearchHit]:
    from mnemic.models import Source

    turn = _hit("I moved to Porto last spring and love the river.")
    turn.item.source = Source(message_ids=["D1:3"])
    fact = _hit("Ana lives in Porto.")
    fact.item.source = Source(message_ids=["D1:3"], item_ids=[turn.item.id])
    return turn, fact


def test_pack_never_says_a_turn_twice() -> None:
    turn, fact = _turn_and_fact()
    other = _hit("My sister visits in June.")
    # the fact extracted from a packed turn adds nothing: skipped, its budget left for others
    assert [h.item.text for h in pack([turn, fact, other], 1000)] == [
        turn.item.text,
        other.item.text,
    ]
    # a turn joining after its fact takes the fact's place (it says all the fact says)
    assert [h.item.text for h in pack([fact, other, turn], 1000)] == [
        other.item.text,
        turn.item.text,
    ]
    # the fact's tokens are given back: a budget that fits the fact, the other line and the
    # turn only without the fact still packs the turn
    budget = count_tokens(context_text([other, turn])) + 3
    packed = pack([fact, other, turn], budget)
    assert [h.item.text for h in packed] == [other.item.text, turn.item.text]
    assert count_tokens(context_text(packed)) <= budget
