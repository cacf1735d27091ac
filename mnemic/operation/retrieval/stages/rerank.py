"""Rerank: a cross-encoder reads the query with each of the best candidates.

The recall stages judge the query and a memory apart (words counted, vectors compared); a
cross-encoder reads them together, which is slower, so it scores only the best
``reranker.candidates``. They keep their places above the rest and are reordered by
``weight / (rrf_k + rerank rank) + (1 - weight) / (rrf_k + rank before)``: at weight 1
(the default) in the cross-encoder's order. The model is loaded once, when the recipe is
built, so a missing model fails then, not at the first search. Put it last: later stages
would rescore what it ordered. A reranker that fails (a server down, a bad answer) leaves
the order as it was, and the hits say so: the search still answers.
"""

from __future__ import annotations

from typing import ClassVar

from mnemic.config import RetrievalConfig
from mnemic.errors import BackendUnavailable
from mnemic.infra.embed.base import Embedder
from mnemic.infra.rerank import get_reranker
from mnemic.infra.store.base import Store
from mnemic.operation.reader.deterministic import embed_text
from mnemic.operation.retrieval.state import SearchState


class Rerank:
    name: ClassVar[str] = "rerank"

    def __init__(self, store: Store, embedder: Embedder | None, config: RetrievalConfig) -> None:
        self.reranker = get_reranker(config.reranker)
        self.candidates = config.reranker.candidates
        self.weight = config.reranker.weight
        self.k = config.rrf_k

    def run(self, state: SearchState) -> None:
        ranked = state.ranked()
        top, rest = ranked[: self.candidates], ranked[self.candidates :]
        items = state.items(c.item_id for c in top)
        top = [c for c in top if c.item_id in items]
        if len(top) < 2:
            return
        try:
            scores = self.reranker.score(state.query, [embed_text(items[c.item_id]) for c in top])
        except BackendUnavailable as exc:  # an optional refinement: the order stands
            state.notes.append(f"rerank skipped: {exc}")
            return
        order = sorted(range(len(top)), key=lambda i: -float(scores[i]))
        rerank_rank = {i: r for r, i in enumerate(order, start=1)}
        floor = max((c.score for c in rest), default=0.0)
        for before, cand in enumerate(top, start=1):
            after = rerank_rank[before - 1]
            blended = self.weight / (self.k + after) + (1 - self.weight) / (self.k + before)
            cand.score = floor + blended
            cand.stages[self.name] = round(float(scores[before - 1]), 4)
            cand.notes.append(f"cross-encoder rank {after} of {len(top)} (was {before})")
