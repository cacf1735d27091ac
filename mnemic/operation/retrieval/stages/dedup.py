"""De-duplication: of several candidates that say the same thing, only the best is kept.

Users repeat themselves and agents store the same fact twice; a packed context should not
spend tokens on it twice. Two items are duplicates when their word sets overlap by at least
``dedup_jaccard`` (1.0: the same words). Only the best ``top_k * 3`` candidates are compared,
which is all that can reach the answer.
"""

from __future__ import annotations

import re
from typing import ClassVar

from mnemic.config import RetrievalConfig
from mnemic.infra.embed.base import Embedder
from mnemic.infra.store.base import Store
from mnemic.operation.retrieval.state import SearchState

_WORD = re.compile(r"\w+", re.UNICODE)


def _words(text: str) -> frozenset[str]:
    return frozenset(w.lower() for w in _WORD.findall(text))


class Dedup:
    name: ClassVar[str] = "dedup"

    def __init__(self, store: Store, embedder: Embedder | None, config: RetrievalConfig) -> None:
        self.threshold = config.dedup_jaccard

    def run(self, state: SearchState) -> None:
        ranked = state.ranked()[: state.top_k * 3]
        items = state.items(c.item_id for c in ranked)
        kept: list[tuple[str, frozenset[str]]] = []
        for cand in ranked:
            item = items.get(cand.item_id)
            if item is None:
                continue
            words = _words(item.text)
            twin = next(
                (
                    kid
                    for kid, other in kept
                    if words and len(words & other) / len(words | other) >= self.threshold
                ),
                None,
            )
            if twin is None:
                kept.append((cand.item_id, words))
            else:
                del state.candidates[cand.item_id]
                state.candidates[twin].notes.append(f"duplicate {cand.item_id} dropped")
