"""What ``add`` accepts, normalised: a text, a list of texts, or chat messages as dicts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mnemic.errors import InvalidInput
from mnemic.models import as_utc

MessagesInput = str | Mapping[str, Any] | Sequence[str | Mapping[str, Any]]

_TEXT_KEYS = ("content", "text")
_SPEAKER_KEYS = ("speaker", "name", "role")
_ID_KEYS = ("id", "message_id", "dia_id")
_KNOWN = {*_TEXT_KEYS, *_SPEAKER_KEYS, *_ID_KEYS, "timestamp", "metadata"}


@dataclass(frozen=True)
class Message:
    text: str
    speaker: str | None = None
    message_id: str | None = None
    timestamp: datetime | None = None
    metadata: Mapping[str, Any] | None = None


def parse_time(value: Any, what: str = "timestamp") -> datetime | None:
    """A datetime, an ISO 8601 string, or a Unix time in seconds, as an aware UTC datetime."""
    if value is None:
        return None
    try:
        if isinstance(value, datetime):
            parsed = value
        elif isinstance(value, int | float) and not isinstance(value, bool):
            from datetime import UTC

            parsed = datetime.fromtimestamp(float(value), UTC)
        elif isinstance(value, str):
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        else:
            raise TypeError(type(value).__name__)
        return as_utc(parsed)
    except (TypeError, ValueError, OverflowError, OSError) as exc:
        raise InvalidInput(
            f"{what} {value!r} is not a time; give a datetime or an ISO 8601 string "
            "such as 2023-05-08T13:56:00"
        ) from exc


def check_text(text: Any, max_chars: int, what: str = "text") -> str:
    if not isinstance(text, str):
        raise InvalidInput(f"{what} must be a string, not {type(text).__name__}")
    if "\x00" in text:
        raise InvalidInput(f"{what} contains a NUL character; remove it")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(f"{what} is not valid Unicode (lone surrogate at {exc.start})") from exc
    if not text.strip():
        raise InvalidInput(f"{what} is empty")
    if len(text) > max_chars:
        raise InvalidInput(
            f"{what} has {len(text)} characters, over the limit of {max_chars}; split it "
            "(or raise max_text_chars in the config)"
        )
    return text


MAX_BATCH = 10_000  # messages in one add: one transaction, one job


def normalize_messages(messages: MessagesInput, max_chars: int) -> list[Message]:
    """Accept ``"text"``, ``["text", ...]``, ``{"role": ..., "content": ...}`` or a list."""
    if isinstance(messages, str | Mapping):
        messages = [messages]
    if not isinstance(messages, Sequence) or not messages:
        raise InvalidInput("messages must be a text, a message dict, or a non-empty list of them")
    if len(messages) > MAX_BATCH:
        raise InvalidInput(
            f"{len(messages)} messages in one add, over the limit of {MAX_BATCH}; add them in "
            "batches (one per session is natural)"
        )
    out: list[Message] = []
    for n, message in enumerate(messages):
        where = f"message {n}"
        if isinstance(message, str):
            out.append(Message(text=check_text(message, max_chars, where)))
            continue
        if not isinstance(message, Mapping):
            raise InvalidInput(f"{where} must be a string or a dict, not {type(message).__name__}")
        unknown = set(message) - _KNOWN
        if unknown:
            raise InvalidInput(
                f"{where} has unknown fields {sorted(unknown)}; use content/text, role/speaker/"
                "name, id, timestamp, metadata"
            )
        text = next((message[k] for k in _TEXT_KEYS if k in message), None)
        speaker = next((message[k] for k in _SPEAKER_KEYS if message.get(k)), None)
        message_id = next((message[k] for k in _ID_KEYS if message.get(k) is not None), None)
        metadata = message.get("metadata")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise InvalidInput(f"{where}: metadata must be a dict")
        out.append(
            Message(
                text=check_text(text, max_chars, f"{where} text"),
                speaker=None if speaker is None else str(speaker),
                message_id=None if message_id is None else str(message_id),
                timestamp=parse_time(message.get("timestamp"), f"{where} timestamp"),
                metadata=metadata,
            )
        )
    return out
