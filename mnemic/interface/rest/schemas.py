"""The REST API's request and response bodies (the SDK's own models are used where they fit)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mnemic.models import MemoryItem, MemoryKind, MemoryLayer, MemoryStatus, SearchHit
from mnemic.sdk import SearchFilters

_ID = Field(min_length=1, max_length=256)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateUser(_Body):
    user_id: str = _ID


class NewKey(BaseModel):
    user_id: str
    api_key: str = Field(description="shown only this once; only its hash is kept")


class UserOut(BaseModel):
    user_id: str
    created_at: datetime
    keys: int


class Me(BaseModel):
    user_id: str


class CreateCube(_Body):
    cube_id: str | None = Field(default=None, min_length=1, max_length=256)


class CubeOut(BaseModel):
    cube_id: str
    owner_id: str
    access: Literal["owner", "read", "write"]
    created_at: datetime | None = None
    embedder: str | None = None


class Share(_Body):
    cube_id: str = _ID
    user_id: str = _ID
    access: Literal["read", "write"] = "read"


class Unshare(_Body):
    cube_id: str = _ID
    user_id: str = _ID


class GrantOut(BaseModel):
    cube_id: str
    user_id: str
    access: str
    granted_at: datetime | None = None


class Unshared(BaseModel):
    revoked: bool


Messages = str | dict[str, Any] | list[str | dict[str, Any]]


class AddMemories(_Body):
    messages: Messages = Field(
        description="a text, a list of texts, or chat messages {role|speaker, content, "
        "id?, timestamp?}"
    )
    cube_id: str | None = None
    session_id: str | None = None
    agent_id: str | None = None
    timestamp: datetime | None = None


class Search(_Body):
    query: str = Field(min_length=1)
    cube_id: str | None = None
    top_k: int = Field(default=10, ge=1, le=1000)
    filters: SearchFilters | None = None
    token_budget: int | None = Field(default=None, ge=1, le=1_000_000)
    now: datetime | None = None
    explain: bool = Field(default=True, description="each hit's stage scores and why")


class SearchResult(BaseModel):
    hits: list[SearchHit]
    context: str | None = Field(
        default=None, description="with token_budget: the hits packed as prompt text"
    )


class Update(_Body):
    cube_id: str | None = None
    expected_version: int | None = Field(
        default=None, description="refuse (409) unless the item is still at this version"
    )
    reason: str | None = Field(default=None, max_length=1000)
    text: str | None = None
    kind: MemoryKind | None = None
    layer: MemoryLayer | None = None
    status: MemoryStatus | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    expires_at: datetime | None = None
    speaker: str | None = None
    entities: list[str] | None = None
    tags: list[str] | None = None
    confidence: float | None = Field(default=None, ge=0, le=1)
    importance: float | None = Field(default=None, ge=0, le=1)
    metadata: dict[str, Any] | None = None
    session_id: str | None = None
    agent_id: str | None = None

    def changes(self) -> dict[str, Any]:
        data = self.model_dump(exclude_unset=True)
        for key in ("cube_id", "expected_version", "reason"):
            data.pop(key, None)
        return data


class Deleted(BaseModel):
    id: str
    purged: bool


class Chat(_Body):
    query: str = Field(min_length=1)
    session_id: str | None = None
    cube_id: str | None = None
    token_budget: int = Field(default=1000, ge=1, le=100_000)
    now: datetime | None = None


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    store: str
    llm: str | None


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


__all__ = ["MemoryItem"]
