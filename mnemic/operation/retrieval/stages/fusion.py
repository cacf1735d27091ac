"""Reciprocal-rank fusion of the recall lists into one scored candidate set."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from mnemic.config import RetrievalConfig
from mnemic.infra.embed.base import Embedder
from mnemic.infra.store.base import Scored, Store
from mnemic.operation.retrieval.state import Candidate, SearchState


def fuse(
    ranked: Mapping[str, Sequence[Scored]], weights: Mapping[str, float], rrf_k: int
) -> dict[str, Candidate]:
    """Weighted RRF: each item scores the sum over stages of weight / (rrf_k + rank)."""
    out: dict[str, Candidate] = {}
    for stage, results in ranked.items():
        # "bm25@speaker Melanie" is weighted as "bm25@speaker"
        weight = weights.get(stage, weights.get(stage.split(" ", 1)[0], 1.0))
        for rank, scored in enumerate(results, start=1):
            cand = out.setdefault(scored.item_id, Candidate(scored.item_id))
            cand.stages[stage] = round(scored.score, 6)
            cand.stages[f"{stage}_rank"] = rank
            cand.score += weight / (rrf_k + rank)
            cand.notes.append(f"{stage} rank {rank} (score {scored.score:.3f})")
    return out


class RrfFusion:
    name: ClassVar[str] = "fusion"

    def __init__(self, store: Store, embedder: Embedder | None, config: RetrievalConfig) -> None:
        self.config = config

    def run(self, state: SearchState) -> None:
        cfg = self.config
        weights = {
            "bm25": cfg.fulltext_weight,
            "dense": cfg.dense_weight,
            "bm25@time": cfg.fulltext_weight * cfg.time_weight,
            "dense@time": cfg.dense_weight * cfg.time_weight,
            "anchor": cfg.fulltext_weight * cfg.time_weight,
            "bm25@anchor": cfg.fulltext_weight * cfg.time_weight,
            "dense@anchor": cfg.dense_weight * cfg.time_weight,
            "dense@topic": cfg.dense_weight * cfg.topic_weight,
            "bm25@speaker": cfg.fulltext_weight * cfg.speaker_recall_weight,
            "dense@speaker": cfg.dense_weight * cfg.speaker_recall_weight,
            "feedback": cfg.feedback_weight,
        }
        fused = fuse(state.lists, weights, self.config.rrf_k)
        for item_id, cand in fused.items():
            known = state.candidates.get(item_id)
            if known is None:
                state.candidates[item_id] = cand
            else:
                known.score += cand.score
                known.stages.update(cand.stages)
                known.notes.extend(cand.notes)
