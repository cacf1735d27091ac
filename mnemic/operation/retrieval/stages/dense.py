"""Dense recall: nearest items to the query's embedding (HNSW in the store)."""

from __future__ import annotations

from typing import ClassVar

from mnemic.config import RetrievalConfig
from mnemic.infra.embed.base import Embedder
from mnemic.infra.store.base import Store
from mnemic.operation.retrieval.state import SearchState


class DenseRecall:
    name: ClassVar[str] = "dense"

    def __init__(self, store: Store, embedder: Embedder | None, config: RetrievalConfig) -> None:
        self.store, self.embedder, self.config = store, embedder, config

    def embeds(self, state: SearchState) -> list[str]:
        return [state.query]

    def run(self, state: SearchState) -> None:
        vector = state.query_vector(self.embedder)
        if vector is None:
            return
        state.lists[self.name] = self.store.vector_search(
            state.user_id,
            state.cube_id,
            vector,
            max(self.config.candidates, state.top_k),
            state.flt,
        )
