"""Diversity by maximal marginal relevance (MMR): the best candidates are re-ordered so that
each next one is relevant and unlike those already above it.

Of the best ``mmr_candidates``, the next pick maximises
``mmr_lambda * relevance - (1 - mmr_lambda) * (its highest cosine to the picks so far)``,
relevance being the candidate's score scaled to 0-1 between the worst and the best of them
(fused scores lie close together: over the best score alone, relevance hardly counts). The
picks keep their places above the rest, in pick order. Vectors are the stored ones (no
embedding at search time); a candidate without one (not embedded yet) counts as unlike
everything. Put it late in the recipe, after the stages that score.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from mnemic.config import RetrievalConfig
from mnemic.infra.embed.base import Embedder
from mnemic.infra.store.base import Store
from mnemic.operation.retrieval.state import SearchState


class Diversity:
    name: ClassVar[str] = "mmr"

    def __init__(self, store: Store, embedder: Embedder | None, config: RetrievalConfig) -> None:
        self.store = store
        self.lam = config.mmr_lambda
        self.depth = config.mmr_candidates

    def run(self, state: SearchState) -> None:
        ranked = state.ranked()
        top, rest = ranked[: self.depth], ranked[self.depth :]
        if len(top) < 3:
            return
        stored = self.store.get_vectors(state.user_id, state.cube_id, [c.item_id for c in top])
        dim = next((len(v) for v in stored.values()), 0)
        if dim == 0:
            return
        vectors = np.zeros((len(top), dim), dtype=np.float32)
        for i, cand in enumerate(top):
            if cand.item_id in stored:
                vector = np.asarray(stored[cand.item_id], dtype=np.float32)
                norm = float(np.linalg.norm(vector))
                vectors[i] = vector / norm if norm > 0 else vector
        best, worst = top[0].score, top[-1].score
        scores = np.array([c.score for c in top])
        relevance = (scores - worst) / (best - worst) if best > worst else np.ones(len(top))
        similar = vectors @ vectors.T
        closest = np.full(len(top), -np.inf)  # highest cosine to a pick so far
        left = list(range(len(top)))
        order: list[tuple[int, float, float]] = []  # (candidate, its MMR value, its closest)
        while left:
            penalty = np.where(np.isfinite(closest[left]), closest[left], 0.0)
            values = self.lam * relevance[left] - (1 - self.lam) * penalty
            at = int(np.argmax(values))
            pick = left.pop(at)
            order.append((pick, float(values[at]), float(penalty[at])))
            closest = np.maximum(closest, similar[pick])
        # the picks spread over (floor, best], in pick order, above every other candidate
        floor = max((c.score for c in rest), default=0.0)
        span = max(best - floor, 1e-9)
        for place, (i, value, near) in enumerate(order):
            cand = top[i]
            cand.score = floor + span * (len(order) - place) / len(order)
            cand.stages[self.name] = round(value, 4)
            if place != i:
                cand.notes.append(
                    f"mmr: {place + 1} of {len(order)} (was {i + 1}; closest above {near:.2f})"
                )
