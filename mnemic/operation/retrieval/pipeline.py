"""Hybrid retrieval: full-text (BM25) and dense recall, fused by reciprocal rank.

Each stage is named; every hit carries its per-stage scores and ranks and a sentence saying
why it was chosen, so a user can see what found it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from mnemic.config import RetrievalConfig
from mnemic.infra.embed.base import Embedder
from mnemic.infra.store.base import ItemFilter, Scored, Store
from mnemic.models import SearchHit

NO_EVIDENCE = 1e-5  # BM25 scores at or below this come only from zero-IDF terms


@dataclass
class Candidate:
    item_id: str
    stages: dict[str, float] = field(default_factory=dict)
    fused: float = 0.0


@dataclass
class SearchTrace:
    """Timings of the last search, per stage, in milliseconds."""

    timings_ms: dict[str, float] = field(default_factory=dict)


class Retriever:
    def __init__(self, store: Store, embedder: Embedder | None, config: RetrievalConfig) -> None:
        self.store = store
        self.embedder = embedder
        self.config = config
        self.last = SearchTrace()

    def search(
        self, query: str, *, user_id: str, cube_id: str, top_k: int, flt: ItemFilter
    ) -> list[SearchHit]:
        cfg = self.config
        timings: dict[str, float] = {}
        n = max(cfg.candidates, top_k)
        ranked: dict[str, list[Scored]] = {}
        weights: dict[str, float] = {}

        if cfg.fulltext:
            t = time.perf_counter()
            found = self.store.fulltext_search(
                user_id, cube_id, query, n, flt, keys_weight=cfg.keys_weight
            )
            # a hit whose every matched term is in (nearly) every item carries no evidence:
            # BM25 clamps such terms' IDF to 1e-6, and a rank earned that way would be noise
            ranked["bm25"] = [s for s in found if s.score > NO_EVIDENCE]
            weights["bm25"] = cfg.fulltext_weight
            timings["bm25"] = (time.perf_counter() - t) * 1000
        if cfg.dense and self.embedder is not None:
            t = time.perf_counter()
            vector = self.embedder.embed([query])[0]
            timings["embed"] = (time.perf_counter() - t) * 1000
            t = time.perf_counter()
            ranked["dense"] = self.store.vector_search(user_id, cube_id, vector, n, flt)
            weights["dense"] = cfg.dense_weight
            timings["dense"] = (time.perf_counter() - t) * 1000

        t = time.perf_counter()
        candidates = fuse(ranked, weights, cfg.rrf_k)
        best = sorted(candidates.values(), key=lambda c: c.fused, reverse=True)[:top_k]
        items = self.store.get_items(user_id, cube_id, [c.item_id for c in best])
        by_id = {item.id: item for item in items}
        hits = [
            SearchHit(item=by_id[c.item_id], score=c.fused, stages=c.stages, why=explain(c))
            for c in best
            if c.item_id in by_id
        ]
        timings["fuse+fetch"] = (time.perf_counter() - t) * 1000
        self.last = SearchTrace(timings)
        return hits


def fuse(
    ranked: dict[str, Sequence[Scored]], weights: dict[str, float], rrf_k: int
) -> dict[str, Candidate]:
    """Weighted reciprocal-rank fusion: sum of weight / (rrf_k + rank) over the stages."""
    out: dict[str, Candidate] = {}
    for stage, results in ranked.items():
        weight = weights.get(stage, 1.0)
        for rank, scored in enumerate(results, start=1):
            cand = out.setdefault(scored.item_id, Candidate(scored.item_id))
            cand.stages[stage] = round(scored.score, 6)
            cand.stages[f"{stage}_rank"] = rank
            cand.fused += weight / (rrf_k + rank)
    return out


def explain(c: Candidate) -> str:
    parts = [
        f"{stage} rank {int(c.stages[f'{stage}_rank'])} (score {c.stages[stage]:.3f})"
        for stage in ("bm25", "dense")
        if f"{stage}_rank" in c.stages
    ]
    return "found by " + " and ".join(parts) if parts else ""
