"""Session focus: turns of a session that matches the query as a whole rank higher.

A session's score is the sum of its candidates' scores, so a session where several turns
match outweighs a lone stray match elsewhere; each candidate is then scaled by
``1 + session_weight * (its session's score / the best session's score)``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import ClassVar

from mnemic.config import RetrievalConfig
from mnemic.infra.embed.base import Embedder
from mnemic.infra.store.base import Store
from mnemic.operation.retrieval.state import SearchState


class SessionFocus:
    name: ClassVar[str] = "session"

    def __init__(self, store: Store, embedder: Embedder | None, config: RetrievalConfig) -> None:
        self.weight = config.session_weight

    def run(self, state: SearchState) -> None:
        if not state.candidates or self.weight <= 0:
            return
        facets = state.facets(state.candidates)
        totals: dict[str, float] = defaultdict(float)
        for cand in state.candidates.values():
            session = facets.get(cand.item_id, (None, None))[1]
            if session is not None:
                totals[session] += cand.score
        best = max(totals.values(), default=0.0)
        if best <= 0:  # nothing scored (e.g. every list that matched is weighted 0)
            return
        for cand in state.candidates.values():
            session = facets.get(cand.item_id, (None, None))[1]
            if session is None:
                continue
            factor = 1 + self.weight * totals[session] / best
            cand.score *= factor
            cand.stages[self.name] = round(factor, 4)
