"""Context packing: render hits as prompt lines and keep the best that fit a token budget."""

from __future__ import annotations

from collections.abc import Sequence

from mnemic.infra.tokens import count_tokens
from mnemic.models import MemoryItem, SearchHit


def render(item: MemoryItem) -> str:
    """One line of context: ``[8 May 2023] Caroline: text`` (date and speaker when known)."""
    parts = []
    if item.valid_from is not None:
        parts.append(f"[{item.valid_from.day} {item.valid_from:%B %Y}]")
    if item.speaker:
        parts.append(f"{item.speaker}:")
    parts.append(item.text)
    return " ".join(parts)


def pack(hits: Sequence[SearchHit], token_budget: int) -> list[SearchHit]:
    """The hits, in rank order, whose rendered lines fit ``token_budget`` tokens together.

    A hit too large for what is left is skipped and smaller later ones still get their chance.
    Each line costs its tokens plus one for the newline that joins it to the next.
    """
    packed: list[SearchHit] = []
    left = token_budget
    for hit in hits:
        cost = count_tokens(render(hit.item)) + 1
        if cost <= left:
            packed.append(hit)
            left -= cost
        if left <= 1:
            break
    return packed


def context_text(hits: Sequence[SearchHit]) -> str:
    return "\n".join(render(h.item) for h in hits)
