"""Event anchors: a query timed by an event, not a date ("What did Ana do before the
wedding?", "Where did John live after moving to Chicago?"), recalls within the time on that
side of the event.

The event is found by full text (its phrase, with the index keys), and its best match's
time is the anchor: "before" recalls what was recorded up to the end of that day,
"after"/"since" what was recorded from then on, by full text and by vector, as extra ranked
lists for fusion. The event's own matches join as a list too: a question that compares two
moments needs both. Run it before ``fusion``.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import ClassVar

from mnemic.config import RetrievalConfig
from mnemic.infra.embed.base import Embedder
from mnemic.infra.store.base import Store
from mnemic.operation.retrieval.state import SearchState

EVENT_HITS = 3  # matches of the event's phrase kept as its own list


class EventAnchorFocus:
    name: ClassVar[str] = "anchor"

    def __init__(self, store: Store, embedder: Embedder | None, config: RetrievalConfig) -> None:
        self.store, self.embedder, self.config = store, embedder, config

    def embeds(self, state: SearchState) -> list[str]:
        return [state.query] if state.analysis.anchor is not None else []

    def run(self, state: SearchState) -> None:
        anchor = state.analysis.anchor
        if anchor is None:
            return
        keys_weight = self.config.keys_weight
        events = self.store.fulltext_search(
            state.user_id,
            state.cube_id,
            anchor.phrase,
            EVENT_HITS,
            state.flt,
            keys_weight=keys_weight,
        )
        first = state.items([events[0].item_id]).get(events[0].item_id) if events else None
        when = first.valid_from if first is not None else None
        if when is None:
            state.notes.append(f"{anchor.relation} {anchor.phrase!r}: no dated event found")
            return
        flt = state.flt
        if anchor.relation == "before":  # up to the end of the event's day: what came
            # before it is often told when it happens ("before I met Maria, I ...")
            day = when.replace(hour=0, minute=0, second=0, microsecond=0)
            end = day + timedelta(days=1)
            end = end if flt.valid_before is None else min(end, flt.valid_before)
            narrowed = dataclasses.replace(flt, valid_before=end)
        else:
            start = when if flt.valid_after is None else max(when, flt.valid_after)
            narrowed = dataclasses.replace(flt, valid_after=start)
        k = max(self.config.candidates, state.top_k)
        state.lists["anchor"] = events
        found, near = state.recall(self.embedder, state.query, k, narrowed, keys_weight)
        state.lists["bm25@anchor"] = found
        if near is not None:
            state.lists["dense@anchor"] = near
        state.notes.append(f"{anchor.relation} {anchor.phrase!r}: the event, on {when:%Y-%m-%d}")
