"""The reader used when no LLM is configured: every message becomes a raw-turn item.

Each item keeps its speaker, its time (the message's, else the session's) and provenance (the
message id). It is indexed with a few preceding turns of its session as context (from the
store when the batch continues a session), because an answer often only makes sense next to
the question it answers, and with a few following turns of the same batch, because what a
turn introduces is often named only in the reply ("another pup" / "What's his name?" /
"Scout").
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from mnemic.models import MemoryItem, MemoryKind, Source
from mnemic.operation.reader.dates import date_keys
from mnemic.operation.reader.messages import Message


class DeterministicReader:
    def __init__(
        self, context_turns: int = 1, *, context_after: int = 0, date_keys: bool = True
    ) -> None:
        self.context_turns = context_turns
        self.context_after = context_after
        self.date_keys = date_keys

    def read(
        self,
        messages: list[Message],
        *,
        user_id: str,
        cube_id: str,
        session_id: str | None,
        agent_id: str | None,
        timestamp: datetime | None,
        source_kind: str = "message",
        earlier: Sequence[MemoryItem] = (),
    ) -> list[MemoryItem]:
        """``earlier``: the session's turns stored before this batch, oldest first; the
        first messages of the batch take their preceding context from them."""
        items: list[MemoryItem] = []
        lead = [_message(i) for i in earlier[-self.context_turns :]] if self.context_turns else []
        turns = [*lead, *messages]
        for n, message in enumerate(messages):
            at = n + len(lead)
            context = turns[max(0, at - self.context_turns) : at]
            after = messages[n + 1 : n + 1 + self.context_after]
            when = message.timestamp or timestamp
            items.append(
                MemoryItem(
                    user_id=user_id,
                    cube_id=cube_id,
                    session_id=session_id,
                    agent_id=agent_id,
                    text=message.text,
                    index_text=index_text(
                        message, context, when if self.date_keys else None, after
                    ),
                    kind=MemoryKind.RAW_TURN if message.speaker else MemoryKind.FACT,
                    speaker=message.speaker,
                    valid_from=when,
                    source=Source(
                        kind=source_kind,
                        message_ids=[message.message_id] if message.message_id else [],
                    ),
                    metadata=dict(message.metadata or {}),
                )
            )
        return items

    def rekey(self, stored: Sequence[MemoryItem], following: Sequence[Message]) -> dict[str, str]:
        """New index keys for the last ``context_after`` of a session's ``stored`` turns
        (oldest first, with the ``context_turns`` before them), now that ``following``
        continue the session: item id -> keys, for the keys that change."""
        if not self.context_after or not stored or not following:
            return {}
        turns = [*map(_message, stored), *following]
        out: dict[str, str] = {}
        for n in range(max(0, len(stored) - self.context_after), len(stored)):
            item = stored[n]
            keys = index_text(
                turns[n],
                turns[max(0, n - self.context_turns) : n],
                item.valid_from if self.date_keys else None,
                turns[n + 1 : n + 1 + self.context_after],
            )
            if keys != item.index_text:
                out[item.id] = keys
        return out


def _message(item: MemoryItem) -> Message:
    """A stored turn as the message it was, for the keys of the turns around it."""
    return Message(text=item.text, speaker=item.speaker)


def index_text(
    message: Message,
    context: list[Message],
    when: datetime | None = None,
    after: list[Message] | None = None,
) -> str:
    """The searchable key of a turn: who said it, the turns it follows (and those that follow
    it, if given), and the day it was said with the absolute dates its time expressions mean
    ("yesterday: 7 May 2023")."""
    lines = [_line(m) for m in [*context, message, *(after or [])]]
    dated = date_keys(message.text, when)
    return "\n".join([*lines, dated] if dated else lines)


def _line(message: Message) -> str:
    return f"{message.speaker}: {message.text}" if message.speaker else message.text


def embed_text(item: MemoryItem) -> str:
    """What the embedder sees: the item's own words with its speaker, no context.

    Context turns go to the full-text keys only: in a dense vector they would pull each turn
    towards its neighbour's meaning, so the neighbour's question would find the wrong turn.
    """
    return f"{item.speaker}: {item.text}" if item.speaker else item.text
