"""The data model: memory items, their history rows, search hits and the MemCube manifest."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

M = TypeVar("M", bound=BaseModel)

SCHEMA_VERSION = 1


def rebuild(cls: type[M], values: dict[str, Any]) -> M:
    """A model from stored values that were validated on their way in, without validating
    them again: what ``model_construct`` does, minus its per-field defaults and aliases,
    when ``values`` holds every field (a store's row); otherwise ``model_construct`` itself.
    Search rebuilds a few hundred items a query, and this halves the cost."""
    if values.keys() != cls.model_fields.keys() or cls.__pydantic_post_init__:
        return cls.model_construct(**values)
    obj = cls.__new__(cls)
    object.__setattr__(obj, "__dict__", values)
    object.__setattr__(obj, "__pydantic_fields_set__", set(values))
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", None)
    return obj


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


def as_utc(value: datetime | None) -> datetime | None:
    """Naive datetimes are taken as UTC; aware ones are converted to UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:  # e.g. 0001-01-01T00:00+05:00 is before datetime.min in UTC
        raise ValueError(f"{value.isoformat()} is out of the representable time range") from exc


class MemoryKind(enum.StrEnum):
    FACT = "fact"
    EVENT = "event"
    PREFERENCE = "preference"
    PROCEDURE = "procedure"
    SUMMARY = "summary"
    RAW_TURN = "raw_turn"
    DOCUMENT = "document"


class MemoryLayer(enum.StrEnum):
    WORKING = "working"
    LONG_TERM = "long_term"
    USER_PROFILE = "user_profile"


class MemoryStatus(enum.StrEnum):
    ACTIVE = "active"
    ARCHIVED = "archived"
    SUPERSEDED = "superseded"
    DELETED = "deleted"
    MERGED = "merged"  # a near-duplicate folded into another item (metadata["merged_into"])


class Source(BaseModel):
    """Provenance: where an item's content came from."""

    model_config = ConfigDict(extra="forbid")

    kind: str = "message"  # message | document | text | derived
    message_ids: list[str] = Field(default_factory=list)  # e.g. LoCoMo turn ids "D3:7"
    document: str | None = None
    offsets: tuple[int, int] | None = None
    item_ids: list[str] = Field(default_factory=list)  # items a derived item was made from


class MemoryItem(BaseModel):
    """One memory: a fact, an event, a preference, a raw turn... with its full metadata."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    id: str = Field(default_factory=new_id)
    user_id: str
    cube_id: str
    session_id: str | None = None
    agent_id: str | None = None

    text: str
    # the key indexed for search instead of ``text`` when set: text enriched with speaker,
    # dates, the turn it answers... Richer keys find more; ``text`` stays what the memory says
    index_text: str | None = None
    kind: MemoryKind = MemoryKind.FACT
    layer: MemoryLayer = MemoryLayer.LONG_TERM
    status: MemoryStatus = MemoryStatus.ACTIVE

    version: int = 1
    supersedes: str | None = None  # id of the item this one replaces

    # bi-temporal: valid_* is when it was true in the world, created/recorded when we learned it
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    recorded_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime | None = None

    speaker: str | None = None
    source: Source = Field(default_factory=Source)
    entities: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    confidence: float = Field(default=1.0, ge=0.0, le=1.0)
    importance: float = Field(default=0.5, ge=0.0, le=1.0)
    access_count: int = Field(default=0, ge=0)
    last_accessed: datetime | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator(
        "valid_from",
        "valid_to",
        "created_at",
        "recorded_at",
        "updated_at",
        "expires_at",
        "last_accessed",
    )
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return as_utc(value)

    def said(self) -> str:
        """The memory as a line of talk: ``Caroline: text``. A memory whose text already
        starts with its speaker's name (an extracted one: ``Caroline likes pottery``,
        ``Caroline: I went camping...``) is not prefixed with the name again."""
        if not self.speaker:
            return self.text
        rest = self.text.removeprefix(self.speaker)
        if rest != self.text and rest[:1] in (":", " ", "'"):
            return self.text
        return f"{self.speaker}: {self.text}"


class HistoryEntry(BaseModel):
    """One change to one item: who did what, when, and the item before and after."""

    id: int
    item_id: str
    user_id: str
    cube_id: str
    action: str  # add | update | delete | restore | purge | access
    actor: str
    at: datetime
    reason: str | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


class TopicNode(BaseModel):
    """A node of a scope's memory tree: a topic over a cluster of items, with a summary.

    The tree of a (user, cube) scope is its root, its topics and their items (the leaves);
    ``size`` is how many items the topic holds, ``centroid`` their mean direction."""

    id: str = Field(default_factory=new_id)
    user_id: str
    cube_id: str
    title: str = ""
    summary: str = ""
    size: int = 0
    version: int = 1
    centroid: list[float] | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Edge(BaseModel):
    """A graph cross-link between two items of one scope: ``src`` -kind-> ``dst``.

    Kinds: ``same_entity`` (both name an entity), ``before`` (src happened before dst, the
    next item naming the same entity), ``next_in_session`` (dst follows src in a session),
    ``supersedes`` (src replaced dst), ``merged_into`` (src was folded into dst); with an LLM
    also relations such as ``causes`` and ``supports``."""

    user_id: str
    cube_id: str
    src: str
    kind: str
    dst: str
    weight: float = 1.0
    created_at: datetime = Field(default_factory=utcnow)


class TreeTopic(BaseModel):
    """A topic of a scope's tree as the SDK shows it: the node and its items (leaves)."""

    id: str
    title: str
    summary: str
    size: int
    version: int
    updated_at: datetime
    items: list[MemoryItem] = Field(default_factory=list)


class MemoryTree(BaseModel):
    """A scope's memory tree: its root (user, cube), the topics under it and their items;
    ``unplaced`` counts the active items the organizer has not placed yet."""

    user_id: str
    cube_id: str
    topics: list[TreeTopic] = Field(default_factory=list)
    unplaced: int = 0


class Link(BaseModel):
    """An edge of the graph seen from one item: its kind, the direction (``out``: the item
    is the source), and the item at the other end."""

    kind: str
    direction: str  # out | in
    weight: float = 1.0
    item: MemoryItem


class SearchHit(BaseModel):
    """An item returned by search, with its fused score and the score of each stage."""

    item: MemoryItem
    score: float
    stages: dict[str, float] = Field(default_factory=dict)  # stage name -> score (or rank)
    why: str = ""


class CubeManifest(BaseModel):
    """What a MemCube is: id, owner, schema and embedder, and hashes of its content."""

    model_config = ConfigDict(extra="forbid")

    cube_id: str
    owner_id: str
    name: str | None = None
    schema_version: int = SCHEMA_VERSION
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    embedder: str | None = None
    embedding_dim: int | None = None
    provenance: dict[str, Any] = Field(default_factory=dict)
    hashes: dict[str, str] = Field(default_factory=dict)  # content part -> sha256


class ChatReply(BaseModel):
    """What ``chat`` answered, from which memories, and the turns it remembered."""

    answer: str
    session_id: str | None = None
    llm: str | None = None  # the model that answered; None when no LLM is configured
    context: str = ""  # the memories given to the model, as packed text
    hits: list[SearchHit] = Field(default_factory=list)
    turns: list[MemoryItem] = Field(default_factory=list)  # the new turns written back
