"""Pseudo-relevance feedback: the words that the best hits share, but the query lacks, are
searched for too (RM3-style), and what they find joins the fusion at a lower weight.

It reaches turns that answer the question in other words than it was asked, e.g. the turn
that names the activity after the turn that matched the question's words.

Placed before ``fusion`` (the default), it reads the best hits of the ``bm25`` list and adds
its own list, which fusion weighs at ``feedback_weight``: it then needs no query vector, and
runs while the query is embedded in the background. Placed after ``fusion``, it reads the
best fused candidates and adds to their scores.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import ClassVar

from mnemic.config import RetrievalConfig
from mnemic.infra.embed.base import Embedder
from mnemic.infra.store.base import Store
from mnemic.infra.text import STOPWORDS
from mnemic.operation.retrieval.state import Candidate, SearchState

_WORD = re.compile(r"[^\W\d_]{3,}", re.UNICODE)


class Feedback:
    name: ClassVar[str] = "feedback"

    def __init__(self, store: Store, embedder: Embedder | None, config: RetrievalConfig) -> None:
        self.store, self.config = store, config

    def run(self, state: SearchState) -> None:
        cfg = self.config
        fused = bool(state.candidates)
        if fused:
            top = [c.item_id for c in state.ranked()[: cfg.feedback_docs]]
        else:
            top = [s.item_id for s in state.lists.get("bm25", [])[: cfg.feedback_docs]]
        if len(top) < 2:
            return
        items = state.items(top)
        asked = set(state.analysis.words) | {s.lower() for s in state.analysis.speakers}
        counts: Counter[str] = Counter()
        for item_id in top:
            item = items.get(item_id)
            if item is None:
                continue
            # each word once per hit, in the order the hits say them: a Counter breaks ties
            # by first insertion, so the terms (and the search) are the same on every run
            words = dict.fromkeys(w.lower() for w in _WORD.findall(item.text))
            counts.update(w for w in words if w not in STOPWORDS and w not in asked)
        # a word counts when at least two of the best hits share it
        terms = [w for w, n in counts.most_common() if n >= 2][: cfg.feedback_terms]
        if not terms:
            return
        found = self.store.fulltext_search(
            state.user_id,
            state.cube_id,
            " ".join([*state.analysis.words, *terms]),
            max(cfg.candidates, state.top_k),
            state.flt,
            keys_weight=cfg.keys_weight,
        )
        state.notes.append(f"feedback terms: {', '.join(terms)}")
        if not fused:  # a recall list for fusion
            state.lists[self.name] = found
            return
        for rank, scored in enumerate(found, start=1):
            cand = state.candidates.setdefault(scored.item_id, Candidate(scored.item_id))
            cand.score += cfg.feedback_weight / (cfg.rrf_k + rank)
            cand.stages[f"{self.name}_rank"] = rank
