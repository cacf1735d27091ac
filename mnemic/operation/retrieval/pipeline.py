"""The retriever: a recipe of named stages run in order over one search state.

Recall stages (``bm25``, ``dense``) produce ranked lists, ``fusion`` merges them, and later
stages rescore (``speaker``), expand (``neighbors``) or prune. The recipe is configuration
(``retrieval.stages``), so ``mnemic bench locomo --ablate`` can measure each stage's worth.
Every hit carries its per-stage scores and a sentence saying why it was chosen.

The texts the stages will embed (the query; for ``topic``, the query without the speakers it
names) are embedded in background threads from the start, and the nearest-item searches of
``dense``, ``topic`` and ``speaker_recall`` follow each embedding there, while the full-text
stages (``bm25``, then ``feedback`` from bm25's best hits) run: on two cores that took
LoCoMo's search p50 from 52 to 33 ms (embeddings) and, with full text from kept posting
lists, to 25 ms (searches too), with the same results.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any

import numpy as np

from mnemic.config import RetrievalConfig
from mnemic.errors import ConfigError
from mnemic.infra.embed.base import Embedder
from mnemic.infra.store.base import ItemFilter, Scored, Store
from mnemic.models import SearchHit
from mnemic.operation.retrieval.query import analyze
from mnemic.operation.retrieval.stages import STAGES
from mnemic.operation.retrieval.state import Embeds, Nearest, NearestSearch, SearchState, Stage

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _embed_pool() -> ThreadPoolExecutor:
    """Threads that embed searches' texts while their full-text stages run: the embedder
    (onnxruntime, torch, an HTTP API) and SQLite both release the GIL, so on two cores the
    two overlap. A search embeds at most two texts (the query, its name-less variant); four
    threads serve two searches at once, more for an embedder that waits on the network."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="mnemic-embed")
        return _pool


def _embed_one(embedder: Embedder, text: str) -> np.ndarray:
    return embedder.embed([text])[0]


def _embed_and_search(
    embedder: Embedder,
    state: SearchState,
    text: str,
    vector: Future[np.ndarray],
    searches: dict[NearestSearch, Future[list[Scored]]],
) -> None:
    """Embed ``text``, then run each nearest-item search asked of it; every future is
    resolved, with the result or the error, for the stage that waits on it."""
    futures: list[Future[Any]] = [vector, *searches.values()]
    if not all(f.set_running_or_notify_cancel() for f in futures):
        return
    try:
        embedded = _embed_one(embedder, text)
    except BaseException as exc:
        for future in futures:
            future.set_exception(exc)
        return
    vector.set_result(embedded)
    for search, future in searches.items():
        try:
            future.set_result(state.nearest_to(embedded, search))
        except BaseException as exc:
            future.set_exception(exc)


def build_stages(store: Store, embedder: Embedder | None, config: RetrievalConfig) -> list[Stage]:
    unknown = [name for name in config.stages if name not in STAGES]
    if unknown:
        raise ConfigError(f"unknown retrieval stages {unknown}; available: {', '.join(STAGES)}")
    return [STAGES[name](store, embedder, config) for name in config.stages]


class Retriever:
    def __init__(self, store: Store, embedder: Embedder | None, config: RetrievalConfig) -> None:
        self.store = store
        self.embedder = embedder
        self.config = config
        self.stages = build_stages(store, embedder, config)
        self.last_timings_ms: dict[str, float] = {}

    def search(
        self,
        query: str,
        *,
        user_id: str,
        cube_id: str,
        top_k: int,
        flt: ItemFilter,
        now: datetime | None = None,
        seed: Mapping[str, list[Scored]] | None = None,
    ) -> list[SearchHit]:
        """``now`` anchors relative time expressions in the query ("last May"); default: now.
        ``seed``: ranked lists found before the search (working memory), fused like the
        recall stages' lists; only items still active in the store are kept."""
        wants_speakers = {"speaker", "topic"} & set(self.config.stages) or (
            "bm25" in self.config.stages and not self.config.bm25_speaker_names
        )
        speakers = self.store.speakers(user_id, cube_id) if wants_speakers else ()
        state = SearchState(
            query=query,
            analysis=analyze(query, speakers, now),
            user_id=user_id,
            cube_id=cube_id,
            top_k=top_k,
            flt=flt,
            store=self.store,
        )
        self._prefetch(state)
        for name, ranked in (seed or {}).items():
            live = state.items(s.item_id for s in ranked)
            state.lists[name] = [
                s for s in ranked if s.item_id in live and live[s.item_id].status == "active"
            ]
        for stage in self.stages:
            t = time.perf_counter()
            stage.run(state)
            state.timings_ms[stage.name] = (time.perf_counter() - t) * 1000

        t = time.perf_counter()
        best = state.ranked()[:top_k]
        items = state.items(c.item_id for c in best)
        hits = [
            SearchHit(
                item=items[c.item_id],
                score=c.score,
                stages=c.stages,
                why="; ".join([*c.notes, *state.notes]),
            )
            for c in best
            if c.item_id in items
        ]
        state.timings_ms["fetch"] = (time.perf_counter() - t) * 1000
        self.last_timings_ms = state.timings_ms
        return hits

    def _prefetch(self, state: SearchState) -> None:
        """Start the embeddings the stages will ask for (state.embedding waits for them)."""
        embedder = self.embedder
        if embedder is None:
            return
        texts = dict.fromkeys(
            text
            for stage in self.stages
            if isinstance(stage, Embeds)
            for text in stage.embeds(state)
        )
        searches: dict[str, list[NearestSearch]] = {}
        for stage in self.stages:
            if isinstance(stage, Nearest):
                for search in stage.nearest(state):
                    searches.setdefault(search.text, []).append(search)
                    texts.setdefault(search.text)
        pool = _embed_pool()
        for text in texts:
            vector: Future[np.ndarray] = Future()
            near = {s: Future[list[Scored]]() for s in dict.fromkeys(searches.get(text, ()))}
            state.embeddings[text] = vector
            for search, future in near.items():
                state.nearest_hits[search] = future
            pool.submit(_embed_and_search, embedder, state, text, vector, near)
