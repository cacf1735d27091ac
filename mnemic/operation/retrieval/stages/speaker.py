"""Speaker focus: a question that names a speaker is mostly about what that speaker said."""

from __future__ import annotations

from typing import ClassVar

from mnemic.config import RetrievalConfig
from mnemic.infra.embed.base import Embedder
from mnemic.infra.store.base import Store
from mnemic.operation.retrieval.state import SearchState


class SpeakerBoost:
    name: ClassVar[str] = "speaker"

    def __init__(self, store: Store, embedder: Embedder | None, config: RetrievalConfig) -> None:
        self.boost = config.speaker_boost

    def run(self, state: SearchState) -> None:
        named = state.analysis.speakers
        if not named or not state.candidates:
            return
        facets = state.facets(state.candidates)
        for cand in state.candidates.values():
            speaker = facets.get(cand.item_id, (None, None))[0]
            if speaker in named:
                cand.score *= 1 + self.boost
                cand.stages[self.name] = 1 + self.boost
                cand.notes.append(f"said by {speaker}, whom the query names")
