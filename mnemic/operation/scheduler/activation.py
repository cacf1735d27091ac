"""Preloading into activation memory: the scheduler's working memory compiled into a KV cache.

With a local transformer attached (:meth:`mnemic.Memory.attach_model`), every preload of a
session's working memory also asks for the KV cache of those items: a worker thread compiles it
into the cube's activation folder (:class:`~mnemic.infra.activation.ActivationStore`, so an
unchanged set is compiled once and a changed item invalidates it), and the session's next
generation starts from it instead of prefilling the memory text. Requests coalesce per
session: while one compiles, only the latest working memory of each session waits.

The items go into the cache in a fixed order (time, then id), so the same working memory gives
the same cache whatever order it was filled in.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mnemic.models import MemoryItem

log = logging.getLogger(__name__)

Key = tuple[str, str, str]  # (user, cube, session)


def cache_order(items: Sequence[MemoryItem]) -> list[MemoryItem]:
    """Working-memory items in the order a cache holds them: by time, then id."""
    return sorted(items, key=lambda i: (i.valid_from is None, i.valid_from or 0, i.id))  # type: ignore[operator]


class KVPreloader:
    """Compiles KV caches of sessions' working memories in the background.

    ``folder(user_id, cube_id)`` is the cube's activation folder."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        folder: Callable[[str, str], Path],
        *,
        model_id: str | None = None,
        max_items: int = 50,
    ) -> None:
        self.model, self.tokenizer, self.model_id = model, tokenizer, model_id
        self.folder, self.max_items = folder, max_items
        self.compiled = 0  # caches compiled (not found ready)
        self.failed = 0
        self._pending: dict[Key, list[MemoryItem]] = {}
        self._latest: dict[Key, Any] = {}  # key -> the last KVCache made or found
        self._cond = threading.Condition()
        self._busy = False
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="mnemic-kv-preload", daemon=True)
        self._thread.start()

    def __call__(self, key: Key, items: Sequence[MemoryItem]) -> None:
        """The session's working memory was preloaded: compile its cache (latest wins)."""
        if not items:
            return
        with self._cond:
            self._pending[key] = cache_order(items)[: self.max_items]
            self._cond.notify_all()

    def cache(self, key: Key) -> Any | None:
        """The last cache compiled (or found) for the session."""
        with self._cond:
            return self._latest.get(key)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until nothing is pending or compiling; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5)

    def _work(self) -> None:
        from mnemic.infra.activation import ActivationStore

        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or bool(self._pending))
                if self._closed:
                    return
                key, items = self._pending.popitem()
                self._busy = True
            try:
                store = ActivationStore(self.folder(key[0], key[1]) / "activation")
                before = store.get(self.model, items, model_id=self.model_id)
                cache = before or store.get_or_compile(
                    self.model, self.tokenizer, items, model_id=self.model_id
                )
                with self._cond:
                    self._latest[key] = cache
                    self.compiled += before is None
            except Exception:  # a failed compile must not stop the next ones
                log.exception("compiling the KV cache of %s failed", key)
                with self._cond:
                    self.failed += 1
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
