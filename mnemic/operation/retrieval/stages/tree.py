"""Tree descent: the topics whose centroids are nearest the query, then their items.

The memory tree (mnemic/operation/organizer) groups items by topic; descending it reaches
items of the right topic that the query's words and its vector alone rank low, e.g. the
other sessions' turns about the same activity. The leaves of the best ``tree_topics``
topics, ranked by cosine to the query (the best ``tree_leaves``), join the candidates as one
more reciprocal-rank list (weight ``tree_weight``); it runs after ``fusion``, best after
``feedback``. Items not yet placed in the tree are reached by the other stages as before.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from mnemic.config import RetrievalConfig
from mnemic.infra.embed.base import Embedder
from mnemic.infra.store.base import Store, item_matches
from mnemic.models import TopicNode
from mnemic.operation.retrieval.state import Candidate, SearchState


class TreeDescent:
    name: ClassVar[str] = "tree"

    def __init__(self, store: Store, embedder: Embedder | None, config: RetrievalConfig) -> None:
        self.store, self.embedder, self.config = store, embedder, config

    def embeds(self, state: SearchState) -> list[str]:
        return [state.query]

    def run(self, state: SearchState) -> None:
        cfg = self.config
        if cfg.tree_weight <= 0:
            return
        topics = [
            t for t in self.store.topics(state.user_id, state.cube_id) if t.centroid is not None
        ]
        if topics:
            self._descend(state, topics, {t.id: t.title for t in topics})

    def _descend(self, state: SearchState, topics: list[TopicNode], titles: dict[str, str]) -> None:
        cfg = self.config
        vector = state.query_vector(self.embedder)
        if vector is None:
            return
        query = np.asarray(vector, dtype=np.float32)
        centroids = np.asarray([t.centroid for t in topics], dtype=np.float32)
        order = np.argsort(-(centroids @ query), kind="stable")[: cfg.tree_topics]
        best = [topics[int(n)].id for n in order]
        members = self.store.topic_members(state.user_id, state.cube_id, best)
        vectors = self.store.get_vectors(state.user_id, state.cube_id, list(members))
        if not vectors:
            return
        ids = sorted(vectors)
        sims = np.stack([vectors[i] for i in ids]) @ query
        ranked = [ids[int(n)] for n in np.argsort(-sims, kind="stable")]
        items = state.items(ranked[: 2 * cfg.tree_leaves])
        rank = 0
        for item_id in ranked[: 2 * cfg.tree_leaves]:
            item = items.get(item_id)
            if item is None or not item_matches(item, state.flt):
                continue
            rank += 1
            if rank > cfg.tree_leaves:
                break
            cand = state.candidates.setdefault(item_id, Candidate(item_id))
            cand.score += cfg.tree_weight / (cfg.rrf_k + rank)
            cand.stages[f"{self.name}_rank"] = rank
            cand.notes.append(f"under topic '{titles[members[item_id]]}' (tree rank {rank})")
