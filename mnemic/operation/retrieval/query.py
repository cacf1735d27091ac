"""Query understanding without an LLM: what words, whom and when a question is about."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property

from mnemic.operation.retrieval.timeparse import TimeRange, parse_time_range

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?", re.UNICODE)


@dataclass(frozen=True)
class QueryAnalysis:
    text: str
    words: tuple[str, ...]
    speakers: frozenset[str] = field(default_factory=frozenset)  # known speakers it names
    time_range: TimeRange | None = None  # the span its time expressions cover

    @cached_property
    def nameless(self) -> str:
        """The query without the speakers it names (see without_speakers), once a search."""
        return without_speakers(self)


def analyze(
    query: str, known_speakers: Iterable[str] = (), now: datetime | None = None
) -> QueryAnalysis:
    """The known speakers a query names (whole words, any case, possessives too) and the time
    span it is about (relative expressions count back from ``now``)."""
    words = tuple(w.lower() for w in _WORD.findall(query))
    bare = {w[:-2] if w.endswith("'s") else w for w in words}
    named = frozenset(
        s for s in known_speakers if s and all(part.lower() in bare for part in s.split())
    )
    return QueryAnalysis(
        text=query, words=words, speakers=named, time_range=parse_time_range(query, now)
    )


def without_speakers(analysis: QueryAnalysis) -> str:
    """The query with the speakers it names (and their possessive 's) taken out: what it
    asks about them, for a dense vector that the speaker filter or boost does not need."""
    text = analysis.text
    for speaker in sorted(analysis.speakers, key=len, reverse=True):
        text = re.sub(rf"\b{re.escape(speaker)}(?:'s)?\b", " ", text, flags=re.IGNORECASE)
    return " ".join(text.split())
