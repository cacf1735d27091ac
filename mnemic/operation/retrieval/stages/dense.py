"""Dense recall: nearest items to the query's embedding (HNSW in the store)."""

from __future__ import annotations

from typing import ClassVar

from mnemic.config import RetrievalConfig
from mnemic.infra.embed.base import Embedder
from mnemic.infra.store.base import Store
from mnemic.operation.retrieval.state import NearestSearch, SearchState


class DenseRecall:
    name: ClassVar[str] = "dense"

    def __init__(self, store: Store, embedder: Embedder | None, config: RetrievalConfig) -> None:
        self.store, self.embedder, self.config = store, embedder, config

    def nearest(self, state: SearchState) -> list[NearestSearch]:
        return [NearestSearch(state.query, max(self.config.candidates, state.top_k))]

    def run(self, state: SearchState) -> None:
        found = state.nearest(self.embedder, *self.nearest(state)[0])
        if found is not None:
            state.lists[self.name] = found
