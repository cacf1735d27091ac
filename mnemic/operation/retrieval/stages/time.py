"""Time focus: a query that names a time ("in July 2022", "last May") also recalls what was
recorded in that span, as extra ranked lists for fusion.

People talk about events on the day or in the weeks after, so the span is widened by
``time_slack_days`` after its end. Run it before ``fusion``.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import ClassVar

from mnemic.config import RetrievalConfig
from mnemic.infra.embed.base import Embedder
from mnemic.infra.store.base import Store
from mnemic.operation.retrieval.state import SearchState


class TimeFocus:
    name: ClassVar[str] = "time"

    def __init__(self, store: Store, embedder: Embedder | None, config: RetrievalConfig) -> None:
        self.embedder, self.config = embedder, config

    def embeds(self, state: SearchState) -> list[str]:
        return [state.query] if state.analysis.time_range is not None else []

    def run(self, state: SearchState) -> None:
        span = state.analysis.time_range
        if span is None:
            return
        flt = state.flt
        start = span.start if flt.valid_after is None else max(span.start, flt.valid_after)
        end = span.end + timedelta(days=self.config.time_slack_days)
        if flt.valid_before is not None:
            end = min(end, flt.valid_before)
        narrowed = dataclasses.replace(flt, valid_after=start, valid_before=end)
        k = max(self.config.candidates, state.top_k)
        found, near = state.recall(self.embedder, state.query, k, narrowed, self.config.keys_weight)
        state.lists["bm25@time"] = found
        if near is not None:
            state.lists["dense@time"] = near
        state.notes.append(f"time {span.text!r}: {start:%Y-%m-%d} to {end:%Y-%m-%d}")
