"""Neighbour expansion: the turns around a strong hit often hold the rest of the answer."""

from __future__ import annotations

from typing import ClassVar

from mnemic.config import RetrievalConfig
from mnemic.infra.embed.base import Embedder
from mnemic.infra.store.base import Store
from mnemic.operation.retrieval.state import Candidate, SearchState


class NeighborExpansion:
    name: ClassVar[str] = "neighbors"

    def __init__(self, store: Store, embedder: Embedder | None, config: RetrievalConfig) -> None:
        self.store = store
        self.seeds = config.neighbor_seeds
        self.window = config.neighbor_window
        self.decay = config.neighbor_decay

    def run(self, state: SearchState) -> None:
        seeds = state.ranked()[: self.seeds]
        if not seeds or self.window <= 0:
            return
        around = self.store.neighbors(
            state.user_id, state.cube_id, [c.item_id for c in seeds], self.window, state.flt
        )
        for seed in seeds:
            for neighbor_id, distance in around.get(seed.item_id, []):
                score = seed.score * self.decay**distance
                cand = state.candidates.get(neighbor_id)
                if cand is None:
                    cand = state.candidates[neighbor_id] = Candidate(neighbor_id)
                if score > cand.score:
                    cand.score = score
                    cand.stages[self.name] = distance
                    cand.notes.append(f"{distance} turn(s) from a strong hit")
