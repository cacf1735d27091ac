"""Full-text recall: BM25 over each item's own words and, weighted less, its index keys.

With ``bm25_speaker_names`` off, the speakers a query names are left out of the words
searched: in a turn's own words a speaker's name is mostly someone speaking to them ("Wow,
Melanie!"), which says nothing of what they did; their own turns are the ``speaker`` stage's
part (the index keys name every turn's speaker, so there the names weigh nothing anyway).
"""

from __future__ import annotations

from typing import ClassVar

from mnemic.config import RetrievalConfig
from mnemic.infra.embed.base import Embedder
from mnemic.infra.store.base import Store
from mnemic.operation.retrieval.state import SearchState

NO_EVIDENCE = 1e-5  # BM25 scores at or below this come only from zero-IDF terms


class Bm25Recall:
    name: ClassVar[str] = "bm25"

    def __init__(self, store: Store, embedder: Embedder | None, config: RetrievalConfig) -> None:
        self.store, self.config = store, config

    def run(self, state: SearchState) -> None:
        query = state.query
        if not self.config.bm25_speaker_names and state.analysis.speakers:
            query = state.analysis.nameless or query
        found = self.store.fulltext_search(
            state.user_id,
            state.cube_id,
            query,
            max(self.config.candidates, state.top_k),
            state.flt,
            keys_weight=self.config.keys_weight,
        )
        # a hit whose every matched term is in (nearly) every item carries no evidence:
        # FTS5 clamps such terms' IDF to 1e-6, and a rank earned that way would be noise
        state.lists[self.name] = [s for s in found if s.score > NO_EVIDENCE]
