"""What retrieval stages share: the request, the candidates so far, and a fetch cache."""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple, Protocol, runtime_checkable

import numpy as np

from mnemic.config import RetrievalConfig
from mnemic.infra.embed.base import Embedder
from mnemic.infra.store.base import ItemFilter, Scored, Store
from mnemic.models import MemoryItem
from mnemic.operation.retrieval.query import QueryAnalysis


class NearestSearch(NamedTuple):
    """The ``k`` items nearest to ``text``'s embedding that pass ``flt`` (None: the search's
    own filter)."""

    text: str
    k: int
    flt: ItemFilter | None = None


@dataclass
class Candidate:
    item_id: str
    score: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)  # stage -> score, rank or factor
    notes: list[str] = field(default_factory=list)  # why, in words


@dataclass
class SearchState:
    query: str
    analysis: QueryAnalysis
    user_id: str
    cube_id: str
    top_k: int
    flt: ItemFilter
    store: Store
    lists: dict[str, list[Scored]] = field(default_factory=dict)  # ranked lists of recall stages
    candidates: dict[str, Candidate] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what the query was understood to ask
    _items: dict[str, MemoryItem] = field(default_factory=dict)
    _facets: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    # embeddings by text: started before the stages run (see Retriever.search), or computed
    # by the first stage that asks
    embeddings: dict[str, Future[np.ndarray] | np.ndarray] = field(default_factory=dict)
    # nearest items to a text's embedding: searched in the background right after the
    # embedding, for stages that say so (see Nearest)
    nearest_hits: dict[NearestSearch, Future[list[Scored]]] = field(default_factory=dict)

    def embedding(self, embedder: Embedder | None, text: str) -> np.ndarray | None:
        """The embedding of ``text`` (the query, or a variant of it), once per search; a
        stage that needs it before its background computation ends waits for it."""
        if embedder is None:
            return None
        known = self.embeddings.get(text)
        if isinstance(known, np.ndarray):
            return known
        t = time.perf_counter()
        vector = known.result() if known is not None else embedder.embed([text])[0]
        self.embeddings[text] = vector
        self.timings_ms["embed wait"] = (
            self.timings_ms.get("embed wait", 0.0) + (time.perf_counter() - t) * 1000
        )
        return vector

    def nearest(
        self, embedder: Embedder | None, text: str, k: int, flt: ItemFilter | None = None
    ) -> list[Scored] | None:
        """The ``k`` items nearest to ``text``'s embedding that pass ``flt`` (default: the
        search's ``flt``; None without an embedder): searched in the background if a stage
        asked for it before the stages ran, else now."""
        search = NearestSearch(text, k, flt)
        pending = self.nearest_hits.get(search)
        if pending is not None:
            t = time.perf_counter()
            found = pending.result()
            self.timings_ms["embed wait"] = (
                self.timings_ms.get("embed wait", 0.0) + (time.perf_counter() - t) * 1000
            )
            return found
        vector = self.embedding(embedder, text)
        if vector is None:
            return None
        return self.nearest_to(vector, search)

    def nearest_to(self, vector: np.ndarray, search: NearestSearch) -> list[Scored]:
        """The store's answer to ``search`` for its text's embedding ``vector``."""
        flt = self.flt if search.flt is None else search.flt
        return self.store.vector_search(self.user_id, self.cube_id, vector, search.k, flt)

    def recall(
        self, embedder: Embedder | None, text: str, k: int, flt: ItemFilter, keys_weight: float
    ) -> tuple[list[Scored], list[Scored] | None]:
        """Full-text and nearest-vector recall of ``text`` under ``flt`` (the vector list is
        None without an embedder): what a stage that recalls again within a narrower filter
        (a time span, a side of an event, one speaker's items) asks of the store."""
        found = self.store.fulltext_search(
            self.user_id, self.cube_id, text, k, flt, keys_weight=keys_weight
        )
        return found, self.nearest(embedder, text, k, flt)

    def query_vector(self, embedder: Embedder | None) -> np.ndarray | None:
        """The query's embedding, computed once per search by whichever stage needs it."""
        return self.embedding(embedder, self.query)

    def items(self, ids: Iterable[str]) -> dict[str, MemoryItem]:
        """Fetch items once per search, whichever stage asks first."""
        wanted = [i for i in ids if i not in self._items]
        if wanted:
            for item in self.store.get_items(self.user_id, self.cube_id, wanted):
                self._items[item.id] = item
        return self._items

    def facets(self, ids: Iterable[str]) -> dict[str, tuple[str | None, str | None]]:
        """(speaker, session_id) per item, fetched once per search."""
        wanted = [i for i in ids if i not in self._facets]
        if wanted:
            self._facets.update(self.store.facets(self.user_id, self.cube_id, wanted))
        return self._facets

    def ranked(self) -> list[Candidate]:
        return sorted(self.candidates.values(), key=lambda c: c.score, reverse=True)


class Stage(Protocol):
    """One step of retrieval. Recall stages fill ``state.lists``; fusion turns the lists into
    ``state.candidates``; later stages rescore, add or drop candidates."""

    name: ClassVar[str]

    def __init__(
        self, store: Store, embedder: Embedder | None, config: RetrievalConfig
    ) -> None: ...

    def run(self, state: SearchState) -> None: ...


@runtime_checkable
class Embeds(Protocol):
    """A stage that embeds texts (the query, or a variant of it) says which before the
    stages run, so the retriever computes them in the background while full text runs."""

    def embeds(self, state: SearchState) -> list[str]: ...


@runtime_checkable
class Nearest(Protocol):
    """A stage that searches the nearest items to an embedded text says which before the
    stages run: the search follows the embedding in the background, and ``state.nearest``
    hands its result over."""

    def nearest(self, state: SearchState) -> list[NearestSearch]: ...
