"""Graph expansion: the items linked to the best hits (same entity, temporal order,
derived from, supersedes...; ``graph_kinds``) join at the hit's score times
``graph_decay`` (times the edge's weight), as the neighbours stage does for adjacent turns.
The edges come from the organizer (mnemic/operation/organizer/graph.py)."""

from __future__ import annotations

from typing import ClassVar

from mnemic.config import RetrievalConfig
from mnemic.infra.embed.base import Embedder
from mnemic.infra.store.base import Store, item_matches
from mnemic.operation.retrieval.state import Candidate, SearchState


class GraphExpansion:
    name: ClassVar[str] = "graph"

    def __init__(self, store: Store, embedder: Embedder | None, config: RetrievalConfig) -> None:
        self.store, self.config = store, config

    def run(self, state: SearchState) -> None:
        cfg = self.config
        seeds = state.ranked()[: cfg.graph_seeds]
        if not seeds or not cfg.graph_kinds:
            return
        edges = self.store.links(
            state.user_id, state.cube_id, [c.item_id for c in seeds], kinds=cfg.graph_kinds
        )
        if not edges:
            return
        by_seed = {c.item_id: c for c in seeds}
        reached: dict[str, tuple[float, str]] = {}  # item -> (score, edge kind)
        for e in edges:
            for seed_id, other in ((e.src, e.dst), (e.dst, e.src)):
                seed = by_seed.get(seed_id)
                if seed is None or other in by_seed:
                    continue
                score = seed.score * cfg.graph_decay * e.weight
                if score > reached.get(other, (0.0, ""))[0]:
                    reached[other] = (score, e.kind)
        items = state.items(reached)
        for item_id, (score, kind) in reached.items():
            item = items.get(item_id)
            if item is None or not item_matches(item, state.flt):
                continue
            cand = state.candidates.get(item_id)
            if cand is None:
                cand = state.candidates[item_id] = Candidate(item_id)
            if score > cand.score:
                cand.score = score
                cand.stages[self.name] = round(score, 6)
                cand.notes.append(f"linked to a strong hit ({kind})")
