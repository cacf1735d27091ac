"""Query understanding without an LLM: what words, whom and when a question is about."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Literal

from mnemic.infra.text import STOPWORDS
from mnemic.operation.retrieval.timeparse import TimeRange, parse_time_range

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?", re.UNICODE)
# "before the wedding", "after she moved to Berlin", "since adopting Pixie": up to the end of
# the clause; "after how many weeks", "before that" and "ever before?" name no event
_ANCHOR = re.compile(
    r"\b(?P<rel>before|after|since|prior to|following)\s+(?P<phrase>[^?.!,;:]+)", re.I
)
_NO_EVENT = re.compile(
    r"^(?:\d|(?:how|what|when|which|who|whom|where|why|that|this|then|now|it|long|all|each|"
    r"every|ever|is|was|did|does|do)\b)",
    re.I,
)


@dataclass(frozen=True)
class EventAnchor:
    """An event the query times itself by, not a date: "before the wedding"."""

    relation: Literal["before", "after"]
    phrase: str


@dataclass(frozen=True)
class QueryAnalysis:
    text: str
    words: tuple[str, ...]
    speakers: frozenset[str] = field(default_factory=frozenset)  # known speakers it names
    time_range: TimeRange | None = None  # the span its time expressions cover
    anchor: EventAnchor | None = None  # "before the wedding": an event, not a date

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
        text=query,
        words=words,
        speakers=named,
        time_range=parse_time_range(query, now),
        anchor=event_anchor(query),
    )


def event_anchor(query: str) -> EventAnchor | None:
    """The first "before/after/since/prior to/following <event>" of the query whose event is
    no time expression ("after May 2023" is the time parser's) and has a content word."""
    for match in _ANCHOR.finditer(query):
        phrase = " ".join(match.group("phrase").split())
        if not phrase or _NO_EVENT.match(phrase) or parse_time_range(phrase) is not None:
            continue
        if not any(w.lower() not in STOPWORDS for w in _WORD.findall(phrase)):
            continue
        rel = match.group("rel").lower()
        return EventAnchor("before" if rel in ("before", "prior to") else "after", phrase)
    return None


def without_speakers(analysis: QueryAnalysis) -> str:
    """The query with the speakers it names (and their possessive 's) taken out: what it
    asks about them, for a dense vector that the speaker filter or boost does not need."""
    text = analysis.text
    for speaker in sorted(analysis.speakers, key=len, reverse=True):
        text = re.sub(rf"\b{re.escape(speaker)}(?:'s)?\b", " ", text, flags=re.IGNORECASE)
    return " ".join(text.split())
