"""The background half of ``add``: embed the stored raw turns, extract memories from them and
run each through the lifecycle. One job per ``add`` call (payload: the scope and the raw
items' ids), run by :mod:`mnemic.operation.jobs`.

Re-running a job is safe: vectors are replaced, and memories extracted again are found as
duplicates by the lifecycle (history ``skip``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from mnemic.errors import MnemicError
from mnemic.infra.embed.base import Embedder
from mnemic.infra.store.base import Store
from mnemic.models import MemoryItem
from mnemic.operation.lifecycle import Action, Lifecycle
from mnemic.operation.reader.deterministic import embed_text

log = logging.getLogger(__name__)

JOB_KIND = "extract"


class Extractor(Protocol):
    def extract(self, turns: list[MemoryItem]) -> list[MemoryItem]: ...


class ExtractionFailed(MnemicError):
    """Some turns could not be read into memories (the raw turns are stored and searchable);
    the message says which and why. ``partial``: what the other turns gave."""

    def __init__(self, message: str, partial: list[MemoryItem] | None = None) -> None:
        super().__init__(message)
        self.partial = list(partial or [])


class ExtractionJob:
    def __init__(
        self,
        store: Store,
        embedder: Callable[[], Embedder],
        extractor: Extractor | None,
        lifecycle: Lifecycle,
    ) -> None:
        self.store, self.embedder, self.extractor, self.lifecycle = (
            store,
            embedder,
            extractor,
            lifecycle,
        )

    def __call__(self, payload: dict[str, Any]) -> None:
        user_id, cube_id, actor = payload["user_id"], payload["cube_id"], payload["actor"]
        raw = self.store.get_items(user_id, cube_id, payload["item_ids"])
        if not raw:
            return  # deleted or purged before the job ran
        embedder = self.embedder()
        vectors = embedder.embed([embed_text(item) for item in raw])
        self.store.put_vectors(user_id, cube_id, [i.id for i in raw], vectors)
        if self.extractor is None:
            return
        failure: ExtractionFailed | None = None
        try:
            derived = self.extractor.extract(raw)
        except ExtractionFailed as exc:
            derived, failure = exc.partial, exc
        if derived:
            derived_vectors = embedder.embed([embed_text(item) for item in derived])
            counts = dict.fromkeys(Action, 0)
            for item, vector in zip(derived, derived_vectors, strict=True):
                decision = self.lifecycle.decide(item, vector)
                self.lifecycle.apply(item, vector, decision, actor=actor)
                counts[decision.action] += 1
            log.info(
                "extracted %d memories from %d turns in %s: %s",
                len(derived),
                len(raw),
                cube_id,
                ", ".join(f"{a} {n}" for a, n in counts.items() if n),
            )
        if failure is not None:
            raise failure
