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


def line(item: MemoryItem) -> str:
    """One memory as a context line, without its date: ``Caroline: text``."""
    return f"{item.speaker}: {item.text}" if item.speaker else item.text


def render(item: MemoryItem) -> str:
    """One memory on its own, with its date: ``[8 May 2023] Caroline: text``."""
    if item.valid_from is None:
        return line(item)
    return f"{day_header(item.valid_from)} {line(item)}"


def _day(item: MemoryItem) -> str | None:
    return day_header(item.valid_from) if item.valid_from is not None else None


def pack(hits: Sequence[SearchHit], token_budget: int) -> list[SearchHit]:
    """The hits, in rank order, whose grouped context fits ``token_budget`` tokens.

    A hit costs its line plus a newline, and the first hit of a day also pays for that day's
    header. A hit too large for what is left is skipped and later, smaller ones still get
    their chance, so the budget is used, never exceeded.
    """
    packed: list[SearchHit] = []
    days: set[str | None] = set()
    left = token_budget
    for hit in hits:
        day = _day(hit.item)
        cost = count_tokens(line(hit.item)) + 1
        if day is not None and day not in days:
            cost += count_tokens(day) + 1
        if cost <= left:
            packed.append(hit)
            days.add(day)
            left -= cost
        if left <= 1:
            break
    return packed


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
        out.append(line(item))
    return "\n".join(out)
