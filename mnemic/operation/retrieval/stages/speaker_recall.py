"""Speaker recall: what the speakers a question names said about what it asks, recalled
among their own items.

"What has Melanie painted?" asks about Melanie's own turns: on LoCoMo's dev conversations,
97% of the evidence of a question that names one speaker was said by that speaker. The
query's plain recall lists rank every speaker's items together, and the other speaker's
replies ("Wow, Melanie, that painting is awesome!") crowd out the named speaker's older,
less worded turns. This stage recalls again, by full text and by the name-less query's
embedding, with the search filtered to each named speaker; the lists join fusion at
``speaker_recall_weight``. Run it before ``fusion``.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from mnemic.config import RetrievalConfig
from mnemic.infra.embed.base import Embedder
from mnemic.infra.store.base import ItemFilter, Store
from mnemic.operation.retrieval.stages.bm25 import NO_EVIDENCE
from mnemic.operation.retrieval.state import NearestSearch, SearchState


class SpeakerRecall:
    name: ClassVar[str] = "speaker_recall"

    def __init__(self, store: Store, embedder: Embedder | None, config: RetrievalConfig) -> None:
        self.embedder, self.config = embedder, config

    def _filters(self, state: SearchState) -> dict[str, ItemFilter]:
        """The search's filter narrowed to each speaker the query names."""
        if self.config.speaker_recall_weight <= 0 or state.flt.speaker is not None:
            return {}
        return {
            speaker: dataclasses.replace(state.flt, speaker=speaker)
            for speaker in sorted(state.analysis.speakers)
        }

    def _text(self, state: SearchState) -> str:
        return state.analysis.nameless or state.query

    def nearest(self, state: SearchState) -> list[NearestSearch]:
        k = max(self.config.candidates, state.top_k)
        return [NearestSearch(self._text(state), k, flt) for flt in self._filters(state).values()]

    def run(self, state: SearchState) -> None:
        filters = self._filters(state)
        if not filters:
            return
        text, k = self._text(state), max(self.config.candidates, state.top_k)
        for speaker, flt in filters.items():
            found, near = state.recall(self.embedder, text, k, flt, self.config.keys_weight)
            state.lists[f"bm25@speaker {speaker}"] = [s for s in found if s.score > NO_EVIDENCE]
            if near is not None:
                state.lists[f"dense@speaker {speaker}"] = near
        state.notes.append(f"recalled among what {', '.join(filters)} said")
