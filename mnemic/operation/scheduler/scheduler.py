"""The scheduler: working memories per session, filled ahead of the questions.

``observe`` is called with the turns a session just stored (and their embeddings); with the
``predict`` policy it runs next-scene prediction and preloads the predicted items into that
session's working memory. ``lookup`` answers from working memory alone (no store access).
``record_results`` keeps search results (the ``recency`` policy, or ``keep_results``).
Monitors count preloads, their cost, lookups, hits and misses per scheduler.

Policies (``scheduler.policy``):

- ``none``: working memory holds the turns as they are heard, nothing is loaded;
- ``recency``: it holds the items of past search results, least recently used evicted;
- ``predict``: next-scene prediction preloads it after every ``observe``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from mnemic.config import SchedulerConfig
from mnemic.infra.embed.base import Embedder
from mnemic.infra.store.base import Store
from mnemic.models import MemoryItem
from mnemic.operation.scheduler.predict import NextScenePredictor
from mnemic.operation.scheduler.working import Slot, WorkingMemory

Key = tuple[str, str, str]  # (user, cube, session)


@dataclass
class SchedulerStats:
    preloads: int = 0  # observe calls that preloaded
    preloaded_items: int = 0
    preload_ms: list[float] = field(default_factory=list)
    lookups: int = 0
    hits: int = 0  # lookups answered with at least one item
    lookup_us: list[float] = field(default_factory=list)

    @property
    def hit_rate(self) -> float:
        return self.hits / self.lookups if self.lookups else 0.0

    def summary(self) -> dict[str, float]:
        def p50(xs: list[float]) -> float:
            return float(np.median(xs)) if xs else 0.0

        return {
            "preloads": self.preloads,
            "preloaded_items": self.preloaded_items,
            "preload_ms_p50": round(p50(self.preload_ms), 3),
            "lookups": self.lookups,
            "hits": self.hits,
            "hit_rate": round(self.hit_rate, 4),
            "lookup_us_p50": round(p50(self.lookup_us), 1),
        }


@dataclass
class _Session:
    memory: WorkingMemory
    recent: deque[tuple[MemoryItem, np.ndarray | None]]


class Scheduler:
    """Working memory for many sessions at once (at most ``max_sessions``, LRU)."""

    def __init__(
        self,
        store: Store,
        config: SchedulerConfig,
        embedder: Callable[[], Embedder] | None = None,
        on_preload: Callable[[Key, list[MemoryItem]], None] | None = None,
    ) -> None:
        """``embedder`` gives the scene its vector when turns arrive without one (``add``
        stores raw turns first and embeds them in the background). ``on_preload`` is told
        each session's working memory after a preload (the KV-cache preloader:
        :mod:`.activation`)."""
        self.store = store
        self.config = config
        self.embedder = embedder
        self.on_preload = on_preload
        self.predictor = NextScenePredictor(store, config)
        self.stats = SchedulerStats()
        self._sessions: OrderedDict[Key, _Session] = OrderedDict()
        self._lock = threading.Lock()

    def _session(self, key: Key) -> _Session:
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                session = _Session(
                    WorkingMemory(self.config.capacity),
                    deque(maxlen=max(self.config.window, self.config.capacity)),
                )
                self._sessions[key] = session
                while len(self._sessions) > self.config.max_sessions:
                    self._sessions.popitem(last=False)
            else:
                self._sessions.move_to_end(key)
            return session

    def working(self, user_id: str, cube_id: str, session_id: str) -> WorkingMemory:
        return self._session((user_id, cube_id, session_id)).memory

    def observe(self, items: Sequence[MemoryItem], vectors: np.ndarray | None) -> list[str]:
        """New turns of sessions were stored: remember them as the scene and, by policy,
        preload working memory. Returns the ids preloaded (all sessions together)."""
        by_key: dict[Key, list[int]] = {}
        for i, item in enumerate(items):
            if item.session_id is not None:
                by_key.setdefault((item.user_id, item.cube_id, item.session_id), []).append(i)
        loaded: list[str] = []
        for key, idx in by_key.items():
            session = self._session(key)
            for i in idx:
                session.recent.append((items[i], None if vectors is None else vectors[i]))
            policy = self.config.policy
            if policy == "none":
                session.memory.put([items[i] for i in reversed(idx)], "heard")
            elif policy == "predict":
                loaded += self._preload(key, session)
        return loaded

    def _preload(self, key: Key, session: _Session) -> list[str]:
        t = time.perf_counter()
        self._embed_scene(session)
        recent = [item for item, _ in session.recent]
        scene = list(session.recent)[-self.config.scene_turns :]
        vecs = [v for _, v in scene if v is not None]
        vectors = np.stack(vecs) if vecs and len(vecs) == len(scene) else None
        user_id, cube_id, _ = key
        predicted = self.predictor.predict(user_id, cube_id, recent, vectors, self.config.capacity)
        known = {item.id: item for item in recent}
        missing = [p.item_id for p in predicted if p.item_id not in known]
        known.update({i.id: i for i in self.store.get_items(user_id, cube_id, missing)})
        chosen = [(known[p.item_id], p.score) for p in predicted if p.item_id in known]
        session.memory.put([c[0] for c in chosen], "preload", [c[1] for c in chosen])
        self.stats.preloads += 1
        self.stats.preloaded_items += len(chosen)
        self.stats.preload_ms.append((time.perf_counter() - t) * 1000)
        if self.on_preload is not None:
            self.on_preload(key, session.memory.items())
        return [c[0].id for c in chosen]

    def _embed_scene(self, session: _Session) -> None:
        """Embed the scene's turns (the last ``scene_turns``) that came without a vector; the
        older heard turns only rank by salience and need none."""
        if self.embedder is None:
            return
        from mnemic.operation.reader.deterministic import embed_text

        pairs = list(session.recent)
        first = max(0, len(pairs) - self.config.scene_turns)
        missing = [i for i in range(first, len(pairs)) if pairs[i][1] is None]
        if not missing:
            return
        vectors = self.embedder().embed([embed_text(pairs[i][0]) for i in missing])
        for row, i in enumerate(missing):
            pairs[i] = (pairs[i][0], vectors[row])
        session.recent.clear()
        session.recent.extend(pairs)

    def lookup(
        self, query: str, *, user_id: str, cube_id: str, session_id: str, k: int = 10
    ) -> list[tuple[Slot, float]]:
        """Working-memory items that share words with ``query``, best first, without a store
        search. Counted as a hit when anything is found."""
        t = time.perf_counter()
        found = self._session((user_id, cube_id, session_id)).memory.lookup(query, k)
        self.stats.lookup_us.append((time.perf_counter() - t) * 1e6)
        self.stats.lookups += 1
        self.stats.hits += bool(found)
        return found

    def record_results(
        self, items: Sequence[MemoryItem], *, user_id: str, cube_id: str, session_id: str
    ) -> None:
        """Search results were handed to the model: keep them (policy recency or
        ``keep_results``), the best last so it is evicted last."""
        if self.config.policy == "recency" or self.config.keep_results:
            self.working(user_id, cube_id, session_id).put(list(items), "result")

    def forget(self, user_id: str, cube_id: str, item_ids: Sequence[str]) -> None:
        """Items changed or were deleted: drop them from every working memory of the scope."""
        with self._lock:
            sessions = [s for k, s in self._sessions.items() if k[:2] == (user_id, cube_id)]
        for session in sessions:
            session.memory.drop(item_ids)
            kept = [(i, v) for i, v in session.recent if i.id not in set(item_ids)]
            session.recent.clear()
            session.recent.extend(kept)
