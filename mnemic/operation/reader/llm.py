"""The LLM MemReader: raw turns (or document chunks) → memories of kinds fact, event,
preference and procedure, with absolute dates, entities, confidence and provenance.

Turns are sent in windows of at most ``window_chars`` characters, each turn labelled
``t1, t2, ...`` with its speaker and the time it was said, so the model can resolve
"yesterday" and cite its sources. The reply is validated with a pydantic model whose
``turns`` field only admits the window's labels (servers that constrain output to a JSON
schema cannot even write another); a malformed reply is repaired or re-asked by the LLM
client. A window that still fails is logged and reported in :class:`ExtractionFailed`
(after the other windows' memories are kept): never a silent drop, and the raw turns stay
stored and searchable either way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from mnemic.errors import MnemicError
from mnemic.infra.llm.base import LLM
from mnemic.models import MemoryItem, MemoryKind, Source
from mnemic.operation.extraction import ExtractionFailed
from mnemic.operation.reader.dates import human
from mnemic.operation.reader.prompts import load_prompt
from mnemic.operation.reader.rules import DERIVED_TAG

log = logging.getLogger(__name__)


# Size limits are checked by validators, not declared in the schema: servers that compile
# the schema into a grammar (llama.cpp) unroll "maxLength: 4000" into 4,000 nested rules,
# refuse it, and llama-cpp-python's server then dies.
MAX_TEXT = 4000
MAX_ENTITIES = 50
MAX_MEMORIES = 200


class ExtractedMemory(BaseModel):
    model_config = ConfigDict(extra="ignore")

    text: str = Field(min_length=1)
    kind: Literal["fact", "event", "preference", "procedure"]
    date: str | None = Field(default=None, description="YYYY-MM-DD when it happened or began")
    entities: list[str] = Field(default_factory=list)
    confidence: float = Field(default=0.8, ge=0.0, le=1.0)
    turns: list[str] = Field(min_length=1)

    @field_validator("text")
    @classmethod
    def _text_size(cls, value: str) -> str:
        if len(value) > MAX_TEXT:
            raise ValueError(f"at most {MAX_TEXT} characters")
        return value

    @field_validator("entities")
    @classmethod
    def _entities_size(cls, value: list[str]) -> list[str]:
        if len(value) > MAX_ENTITIES:
            raise ValueError(f"at most {MAX_ENTITIES} entities")
        return value

    @field_validator("date")
    @classmethod
    def _iso_date(cls, value: str | None) -> str | None:
        if value in (None, "", "null"):
            return None
        assert value is not None
        date.fromisoformat(value[:10])  # raises ValueError: pydantic reports it
        return value[:10]


class Extraction(BaseModel):
    memories: list[ExtractedMemory]

    @field_validator("memories")
    @classmethod
    def _count(cls, value: list[ExtractedMemory]) -> list[ExtractedMemory]:
        if len(value) > MAX_MEMORIES:
            raise ValueError(f"at most {MAX_MEMORIES} memories per answer")
        return value


def extraction_schema(labels: list[str]) -> type[Extraction]:
    """:class:`Extraction` whose ``turns`` may only name these labels."""
    label_type: Any = Literal[tuple(labels)]  # type: ignore[valid-type]
    memory = create_model(
        "ExtractedMemory",
        __base__=ExtractedMemory,
        turns=(list[label_type], Field(min_length=1)),
    )
    memories: Any = list[memory]  # type: ignore[valid-type]
    return create_model(  # type: ignore[no-any-return]
        "Extraction", __base__=Extraction, memories=(memories, ...)
    )


class LLMReader:
    def __init__(self, llm: LLM, *, window_chars: int = 6000) -> None:
        self.llm = llm
        self.window_chars = window_chars
        self.prompt = load_prompt("extract")

    def extract(self, turns: list[MemoryItem]) -> list[MemoryItem]:
        out: list[MemoryItem] = []
        failures: list[str] = []
        for window in self._windows(turns):
            try:
                out.extend(self._read_window(window))
            except MnemicError as exc:
                ids = [m for t in window for m in (t.source.message_ids or [t.id])]
                log.error("extraction failed for turns %s: %s", ids, exc)
                failures.append(f"turns {ids[0]}..{ids[-1]}: {exc}")
        if failures:
            raise ExtractionFailed(
                f"the LLM could not read {len(failures)} window(s) into memories; their raw "
                f"turns are stored and searchable: {'; '.join(failures)}",
                partial=out,
            )
        return out

    def _windows(self, turns: list[MemoryItem]) -> Iterator[list[MemoryItem]]:
        window: list[MemoryItem] = []
        size = 0
        for turn in turns:
            if window and size + len(turn.text) > self.window_chars:
                yield window
                window, size = [], 0
            window.append(turn)
            size += len(turn.text)
        if window:
            yield window

    def _read_window(self, window: list[MemoryItem]) -> list[MemoryItem]:
        labels = [f"t{n}" for n in range(1, len(window) + 1)]
        lines = []
        for label, turn in zip(labels, window, strict=True):
            when = turn.valid_from or turn.recorded_at
            who = f"{turn.speaker}: " if turn.speaker else ""
            lines.append(f"[id {label}] [{human(when)}, {when:%A %H:%M}] {who}{turn.text}")
        answer = self.llm.complete_json(
            [
                {"role": "system", "content": self.prompt.text},
                {"role": "user", "content": "\n".join(lines)},
            ],
            extraction_schema(labels),
        )
        by_label = dict(zip(labels, window, strict=True))
        items = []
        for memory in answer.memories:
            sources = [by_label[t] for t in dict.fromkeys(memory.turns)]
            first = sources[0]
            said = first.valid_from or first.recorded_at
            when = datetime.fromisoformat(memory.date).replace(tzinfo=UTC) if memory.date else said
            items.append(
                MemoryItem(
                    user_id=first.user_id,
                    cube_id=first.cube_id,
                    session_id=first.session_id,
                    agent_id=first.agent_id,
                    text=memory.text,
                    kind=MemoryKind(memory.kind),
                    speaker=first.speaker,
                    valid_from=when,
                    source=Source(
                        kind="derived",
                        message_ids=[m for s in sources for m in s.source.message_ids],
                        item_ids=[s.id for s in sources],
                        document=first.source.document,
                    ),
                    entities=[e for e in dict.fromkeys(memory.entities) if e.strip()],
                    confidence=memory.confidence,
                    tags=[DERIVED_TAG],
                    metadata={
                        "extractor": f"llm:{self.llm.id}",
                        "prompt": f"{self.prompt.name}@{self.prompt.version}",
                    },
                )
            )
        return items
