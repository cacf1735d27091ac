"""Context packing: the best hits whose rendered context fits a token budget.

The context groups memories by day, oldest first, with one date header per day:

    [8 May 2023]
    Caroline: I went to a LGBTQ support group yesterday.
    Melanie: That's great! ...

so a date costs its tokens once per day instead of once per line, and more memories fit the
same budget. Token counts are cl100k_base (:mod:`mnemic.infra.tokens`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from mnemic.infra.tokens import count_tokens
from mnemic.models import MemoryItem, SearchHit


def day_header(when: datetime) -> str:
    return f"[{when.day} {when:%B %Y}]"


def render(item: MemoryItem) -> str:
    """One memory on its own, with its date: ``[8 May 2023] Caroline: text``."""
    if item.valid_from is None:
        return item.said()
    return f"{day_header(item.valid_from)} {item.said()}"


def _day(item: MemoryItem) -> str | None:
    return day_header(item.valid_from) if item.valid_from is not None else None


def _turns(item: MemoryItem) -> frozenset[str]:
    """The source turns an item carries the content of (none known: empty)."""
    return frozenset(item.source.message_ids)


def _is_derived(item: MemoryItem) -> bool:
    """A memory extracted from other items (a fact, event or preference of a turn)."""
    return bool(item.source.item_ids)


def pack(hits: Sequence[SearchHit], token_budget: int) -> list[SearchHit]:
    """The hits, in rank order, whose grouped context fits ``token_budget`` tokens.

    A hit costs its line plus a newline, and the first hit of a day also pays for that day's
    header. A hit too large for what is left is skipped and later, smaller ones still get
    their chance, so the budget is used, never exceeded.

    Nothing is said twice: a memory extracted from turns already in the context adds nothing
    and is skipped; when a turn joins the context, the memories extracted from it alone give
    their tokens back (the turn says all they say, and more).
    """
    packed: dict[int, SearchHit] = {}  # by rank, so the result keeps rank order
    cost_of: dict[int, int] = {}
    day_count: dict[str | None, int] = {}
    covered: dict[str, int] = {}  # turn id -> how many packed raw items carry it
    left = token_budget

    def header_cost(day: str | None) -> int:
        return 0 if day is None or day_count.get(day, 0) else count_tokens(day) + 1

    for rank, hit in enumerate(hits):
        item = hit.item
        turns = _turns(item)
        if _is_derived(item) and turns and all(covered.get(t) for t in turns):
            continue  # its turns are in the context already
        day = _day(item)
        line_cost = count_tokens(item.said()) + 1
        # memories extracted from this turn alone that it would make redundant
        refunds = (
            [
                r
                for r, other in packed.items()
                if _is_derived(other.item) and _turns(other.item) and _turns(other.item) <= turns
            ]
            if turns and not _is_derived(item)
            else []
        )
        refund = sum(cost_of[r] for r in refunds)
        cost = line_cost + header_cost(day)
        if cost <= left + refund:
            for r in refunds:
                gone = packed.pop(r)
                left += cost_of.pop(r)
                other_day = _day(gone.item)
                day_count[other_day] -= 1
                if other_day is not None and day_count[other_day] == 0:
                    left += count_tokens(other_day) + 1
            cost = line_cost + header_cost(day)  # the day may have lost its last line
            packed[rank] = hit
            cost_of[rank] = line_cost
            day_count[day] = day_count.get(day, 0) + 1
            left -= cost
            if not _is_derived(item):
                for t in turns:
                    covered[t] = covered.get(t, 0) + 1
        if left <= 1:
            break
    return [packed[r] for r in sorted(packed)]


def context_text(hits: Sequence[SearchHit]) -> str:
    """Render hits grouped by day, oldest first; undated memories come last."""
    items = sorted(
        (h.item for h in hits),
        key=lambda i: (i.valid_from is None, i.valid_from or datetime.min, i.created_at),
    )
    out: list[str] = []
    current: str | None = None
    for item in items:
        day = _day(item)
        if day is not None and day != current:
            out.append(day)
            current = day
        out.append(item.said())
    return "\n".join(out)
