"""Topic recall: dense recall of what a question asks about the speakers it names, without
their names.

"What activities does Melanie partake in?" embedded whole lands near every turn that says
"Melanie" (greetings, the other speaker addressing her); the same question without the name,
"What activities does partake in?", lands near the turns about activities, said by anyone.
Who said them is the ``speaker`` stage's part. The list joins fusion at ``topic_weight``
times a dense list; a question that names nobody is left to ``dense``. Run it before
``fusion``.
"""

from __future__ import annotations

from typing import ClassVar

from mnemic.config import RetrievalConfig
from mnemic.infra.embed.base import Embedder
from mnemic.infra.store.base import Store
from mnemic.operation.retrieval.state import NearestSearch, SearchState


class TopicRecall:
    name: ClassVar[str] = "topic"

    def __init__(self, store: Store, embedder: Embedder | None, config: RetrievalConfig) -> None:
        self.store, self.embedder, self.config = store, embedder, config

    def _text(self, state: SearchState) -> str:
        """The name-less query, if the query names speakers and the stage counts."""
        named = state.analysis.speakers and self.config.topic_weight > 0
        return state.analysis.nameless if named else ""

    def nearest(self, state: SearchState) -> list[NearestSearch]:
        text = self._text(state)
        return [NearestSearch(text, max(self.config.candidates, state.top_k))] if text else []

    def run(self, state: SearchState) -> None:
        wanted = self.nearest(state)
        found = state.nearest(self.embedder, *wanted[0]) if wanted else None
        if found is None:
            return
        state.lists["dense@topic"] = found
        state.notes.append(f"topic without the names: {wanted[0][0]!r}")
