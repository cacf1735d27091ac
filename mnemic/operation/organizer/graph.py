"""Graph cross-links between a scope's items, derived without an LLM.

From the active items (and what they supersede) :func:`plan_edges` derives every edge of the
kinds it manages:

- ``same_entity``: an item and up to ``entity_links`` items of other sessions that name the
  same entity, the nearest in time first (from the earlier to the later item). An item's
  entities are those the reader gave it, else the names the rules find in its text; an
  entity named by more than ``entity_max_items`` items (the speakers, say) links nothing;
- ``before``: temporal order, each item to the next item in time naming the same entity;
- ``next_in_session``: a turn to the next turn of its session;
- ``supersedes``: a new item to the one it replaced;
- ``derived_from``: an extracted memory to the turn it came from.

The organizer stores the difference with what is stored (``merged_into`` edges, written when
items merge, and other kinds are left alone), so running it twice changes nothing.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from mnemic.config import OrganizerConfig
from mnemic.models import Edge, MemoryItem, MemoryKind
from mnemic.operation.reader.rules import entities as entities_in

MANAGED_KINDS = ("same_entity", "before", "next_in_session", "supersedes", "derived_from")
_EPOCH = datetime(1, 1, 1, tzinfo=UTC)


def item_entities(item: MemoryItem) -> list[str]:
    return list(item.entities) if item.entities else entities_in(item.text)


def _when(item: MemoryItem) -> datetime:
    return item.valid_from or item.recorded_at or _EPOCH


def plan_edges(
    items: Sequence[MemoryItem], config: OrganizerConfig, known: Iterable[str] = ()
) -> set[tuple[str, str, str]]:
    """Every managed edge among ``items`` (in store order: a session's turns in the order
    told) as (src, kind, dst); ``known``: ids that may be targets though not in ``items``
    (superseded items)."""
    ids = {i.id for i in items} | set(known)
    order = {item.id: n for n, item in enumerate(items)}
    out: set[tuple[str, str, str]] = set()

    # same session: each told turn to the next (extracted memories are not turns)
    by_session: dict[str, list[MemoryItem]] = defaultdict(list)
    for item in items:
        if item.session_id is not None and item.source.kind != "derived":
            by_session[item.session_id].append(item)
    for turns in by_session.values():
        for a, b in itertools.pairwise(turns):
            out.add((a.id, "next_in_session", b.id))

    for item in items:
        if item.supersedes and item.supersedes in ids:
            out.add((item.id, "supersedes", item.supersedes))
        if item.source.kind == "derived" or item.kind != MemoryKind.RAW_TURN:
            for src in item.source.item_ids:
                if src in ids and src != item.id:
                    out.add((item.id, "derived_from", src))

    # entities: temporal chains and cross-session links
    by_entity: dict[str, list[MemoryItem]] = defaultdict(list)
    for item in items:
        for name in dict.fromkeys(e.strip().lower() for e in item_entities(item)):
            if name:
                by_entity[name].append(item)
    for group in by_entity.values():
        if len(group) < 2 or len(group) > config.entity_max_items:
            continue
        group = sorted(group, key=lambda i: (_when(i), order[i.id]))
        for a, b in itertools.pairwise(group):
            out.add((a.id, "before", b.id))
        if config.entity_links <= 0:
            continue
        for n, item in enumerate(group):
            others = [
                (abs((_when(o) - _when(item)).total_seconds()), m, o)
                for m, o in enumerate(group)
                if m != n and o.session_id != item.session_id
            ]
            others.sort(key=lambda x: (x[0], x[1]))
            for _, m, other in others[: config.entity_links]:
                a, b = (item, other) if n < m else (other, item)
                out.add((a.id, "same_entity", b.id))
    return out


def edge(user_id: str, cube_id: str, key: tuple[str, str, str]) -> Edge:
    src, kind, dst = key
    return Edge(user_id=user_id, cube_id=cube_id, src=src, kind=kind, dst=dst)
