"""Working memory: a small, bounded set of memories held next to the model for one session.

Like a CPU cache in front of RAM: it holds at most ``capacity`` items, evicts the least
recently used, and answers a lookup without touching the store. Items are kept whole with
their word sets precomputed, so a lookup over a few dozen items is a few set intersections
(microseconds), where a store search costs milliseconds.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mnemic.infra.text import STOPWORDS
from mnemic.models import MemoryItem

_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def content_words(text: str) -> frozenset[str]:
    """Lowercased words of ``text`` without function words: what a lookup matches on."""
    return frozenset(w for w in _WORD.findall(text.lower()) if w not in STOPWORDS)


@dataclass
class Slot:
    item: MemoryItem
    words: frozenset[str]
    source: str  # why it is here: "preload", "result", "heard"
    score: float = 0.0


class WorkingMemory:
    """At most ``capacity`` items, least recently used evicted first. Thread-safe."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("working memory capacity must be at least 1")
        self.capacity = capacity
        self._slots: OrderedDict[str, Slot] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._slots

    def ids(self) -> list[str]:
        """Item ids, most recently used last."""
        with self._lock:
            return list(self._slots)

    def items(self) -> list[MemoryItem]:
        with self._lock:
            return [s.item for s in self._slots.values()]

    def slots(self) -> list[Slot]:
        with self._lock:
            return list(self._slots.values())

    def put(
        self,
        items: Sequence[MemoryItem],
        source: str,
        scores: Sequence[float] | None = None,
    ) -> int:
        """Load ``items`` (the first is the most wanted); returns how many were evicted.

        Items are inserted least wanted first, so when more arrive than fit, the most wanted
        ones stay. An item already present is refreshed (moved to most recently used)."""
        evicted = 0
        with self._lock:
            given = scores if scores is not None else [0.0] * len(items)
            pairs = list(zip(items, given, strict=True))
            for item, score in reversed(pairs[: self.capacity]):
                known = self._slots.pop(item.id, None)
                words = known.words if known is not None else content_words(item.text)
                self._slots[item.id] = Slot(item, words, source, float(score))
            while len(self._slots) > self.capacity:
                self._slots.popitem(last=False)
                evicted += 1
        return evicted

    def touch(self, ids: Iterable[str]) -> None:
        """Mark items as just used (moved to most recently used)."""
        with self._lock:
            for item_id in ids:
                if item_id in self._slots:
                    self._slots.move_to_end(item_id)

    def drop(self, ids: Iterable[str]) -> None:
        """Forget items (changed or deleted in the store)."""
        with self._lock:
            for item_id in ids:
                self._slots.pop(item_id, None)

    def clear(self) -> None:
        with self._lock:
            self._slots.clear()

    def lookup(self, query: str, k: int = 10, min_overlap: float = 0.0) -> list[tuple[Slot, float]]:
        """The slots sharing content words with ``query``, best first: score is the share of
        the query's content words an item holds. Served from memory; used items are touched."""
        wanted = content_words(query)
        if not wanted:
            return []
        with self._lock:
            scored = [
                (slot, len(wanted & slot.words) / len(wanted)) for slot in self._slots.values()
            ]
            best = sorted(
                ((s, v) for s, v in scored if v > min_overlap), key=lambda sv: sv[1], reverse=True
            )[:k]
            for slot, _ in best:
                self._slots.move_to_end(slot.item.id)
        return best
