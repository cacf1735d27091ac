"""The SDK: ``mnemic.Memory`` — every caller (CLI, REST, MCP, bench) goes through it.

from mnemic import Memory
mem = Memory()                       # embedded store in MNEMIC_HOME or the user data dir
mem.add("I moved to Lisbon in May.", user_id="ana")
for hit in mem.search("where does Ana live?", user_id="ana"):
    print(hit.score, hit.item.text)
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from mnemic.config import RetrievalConfig, Settings, load_settings
from mnemic.errors import AccessDenied, ConfigError, InvalidInput, NotFound
from mnemic.infra.embed import Embedder, get_embedder
from mnemic.infra.store.base import ItemFilter, Store
from mnemic.models import (
    HistoryEntry,
    MemoryItem,
    MemoryKind,
    MemoryLayer,
    MemoryStatus,
    SearchHit,
    utcnow,
)
from mnemic.operation.reader.deterministic import DeterministicReader, embed_text
from mnemic.operation.reader.messages import (
    MessagesInput,
    check_text,
    normalize_messages,
    parse_time,
)
from mnemic.operation.retrieval.packing import pack
from mnemic.operation.retrieval.pipeline import Retriever

MAX_TOP_K = 1000
MAX_TOKEN_BUDGET = 1_000_000
_ID = re.compile(r"^[^\x00-\x1f\x7f]{1,256}$")


class SearchFilters(BaseModel):
    """Filters a caller may pass to ``search`` and ``get_all`` (as a dict or this model)."""

    model_config = ConfigDict(extra="forbid")

    session_id: str | None = None
    agent_id: str | None = None
    speaker: str | None = None
    kinds: list[MemoryKind] | None = None
    statuses: list[MemoryStatus] | None = None
    tags: list[str] | None = None
    after: datetime | None = None  # valid_from >= after
    before: datetime | None = None  # valid_from < before
    as_of: datetime | None = None  # what was true at that time (valid time)
    known_at: datetime | None = None  # what had been recorded by that time (system time)

    def to_item_filter(self) -> ItemFilter:
        statuses: tuple[MemoryStatus, ...]
        if self.statuses is not None:
            statuses = tuple(self.statuses)
        elif self.as_of is not None or self.known_at is not None:
            # a view of the past sees items that were later superseded or archived
            statuses = (MemoryStatus.ACTIVE, MemoryStatus.SUPERSEDED, MemoryStatus.ARCHIVED)
        else:
            statuses = (MemoryStatus.ACTIVE,)
        return ItemFilter(
            statuses=statuses,
            kinds=tuple(self.kinds or ()),
            session_id=self.session_id,
            agent_id=self.agent_id,
            speaker=self.speaker,
            tags=tuple(self.tags or ()),
            valid_after=parse_time(self.after),
            valid_before=parse_time(self.before),
            as_of=parse_time(self.as_of),
            known_at=parse_time(self.known_at),
        )


_UPDATABLE = {
    "text",
    "kind",
    "layer",
    "status",
    "valid_from",
    "valid_to",
    "expires_at",
    "speaker",
    "entities",
    "tags",
    "confidence",
    "importance",
    "metadata",
    "session_id",
    "agent_id",
}


class Memory:
    """A memory system for one or many users, over one store and one embedder."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        home: str | Path | None = None,
        config_file: str | Path | None = None,
        store: Store | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        if settings is None:
            overrides: dict[str, Any] = {"home": Path(home)} if home is not None else {}
            settings = load_settings(config_file, **overrides)
        self.settings = settings
        self._embedder = embedder
        self._embedder_lock = threading.Lock()
        self.store: Store = store if store is not None else self._open_store()
        self.reader = DeterministicReader(context_turns=settings.reader.context_turns)
        self._retriever: Retriever | None = None

    # ------------------------------------------------------------------ wiring

    def _open_store(self) -> Store:
        backend = self.settings.store.backend
        if backend == "sqlite":
            from mnemic.infra.store.sqlite import SQLiteStore

            return SQLiteStore(self.settings.db_path)
        if backend == "postgres":
            from mnemic.infra.store.postgres import PostgresStore

            cfg = self.settings.store
            return PostgresStore(cfg.dsn or "", pool_size=cfg.pool_size)
        raise ConfigError(f"unknown store backend {backend!r}; use sqlite or postgres")

    @property
    def embedder(self) -> Embedder:
        """Loaded on first use, so commands that never embed start fast."""
        if self._embedder is None:
            with self._embedder_lock:
                if self._embedder is None:
                    self._embedder = get_embedder(self.settings.embedder)
        return self._embedder

    @property
    def retriever(self) -> Retriever:
        if self._retriever is None:
            self._retriever = Retriever(self.store, self.embedder, self.settings.retrieval)
        return self._retriever

    def set_retrieval(self, config: RetrievalConfig) -> None:
        """Search with another retrieval recipe from now on (stages, weights, depths)."""
        self._retriever = Retriever(self.store, self.embedder, config)
        self.settings = self.settings.model_copy(update={"retrieval": config})

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ scope

    def _scope(
        self, user_id: str, cube_id: str | None, *, create: bool = False, embeds: bool = False
    ) -> str:
        """The cube a call works on, checked: it exists (or is created), the user owns it, and
        when the call embeds (``create``/``embeds``), the configured embedder is the cube's."""
        _check_id(user_id, "user_id")
        cube = cube_id if cube_id is not None else default_cube(user_id)
        _check_id(cube, "cube_id")
        manifest = self.store.get_cube(cube)
        if manifest is None:
            if not create:
                raise NotFound(f"user {user_id!r} has no cube {cube!r}; add memories to create it")
            manifest = self.store.ensure_cube(
                cube, user_id, embedder=self.embedder.id, dim=self.embedder.dim
            )
        if manifest.owner_id != user_id:
            raise AccessDenied(
                f"cube {cube!r} belongs to another user; use your own cube_id "
                "or ask its owner to share it"
            )
        if (create or embeds) and manifest.embedder and manifest.embedder != self.embedder.id:
            raise ConfigError(
                f"cube {cube!r} was embedded with {manifest.embedder} but the configured "
                f"embedder is {self.embedder.id}; configure that embedder or migrate the cube"
            )
        return cube

    # ------------------------------------------------------------------ writes

    def add(
        self,
        messages: MessagesInput,
        *,
        user_id: str,
        cube_id: str | None = None,
        session_id: str | None = None,
        agent_id: str | None = None,
        timestamp: datetime | str | None = None,
    ) -> list[MemoryItem]:
        """Remember messages or text. Returns the stored items once they are durable.

        ``messages``: a text, a list of texts, or chat messages as dicts with ``content`` (or
        ``text``), and optionally ``role``/``speaker``, ``id`` and ``timestamp``.
        ``timestamp`` is when the conversation happened (default: now); it becomes each
        item's ``valid_from`` unless a message carries its own.
        """
        parsed = normalize_messages(messages, self.settings.max_text_chars)
        cube = self._scope(user_id, cube_id, create=True)
        if session_id is not None:
            _check_id(session_id, "session_id")
        when = parse_time(timestamp) or utcnow()
        items = self.reader.read(
            parsed,
            user_id=user_id,
            cube_id=cube,
            session_id=session_id,
            agent_id=agent_id,
            timestamp=when,
        )
        vectors = self.embedder.embed([embed_text(item) for item in items])
        self.store.add_items(items, vectors, actor=user_id, reason="add")
        return items

    def update(
        self,
        item_id: str,
        *,
        user_id: str,
        cube_id: str | None = None,
        reason: str | None = None,
        **changes: Any,
    ) -> MemoryItem:
        """Change an item's fields; its version goes up and history keeps the old one."""
        unknown = set(changes) - _UPDATABLE
        if unknown:
            raise InvalidInput(
                f"cannot update {sorted(unknown)}; updatable fields: {sorted(_UPDATABLE)}"
            )
        if not changes:
            raise InvalidInput("nothing to update: pass fields such as text=... or tags=[...]")
        cube = self._scope(user_id, cube_id, embeds="text" in changes)
        old = self.get(item_id, user_id=user_id, cube_id=cube)
        if "text" in changes:
            changes["text"] = check_text(changes["text"], self.settings.max_text_chars)
            changes["index_text"] = None  # the old key described the old text
        try:
            new = MemoryItem.model_validate(
                {**old.model_dump(), **changes, "version": old.version + 1}
            )
        except ValidationError as exc:
            raise InvalidInput(f"invalid update of item {item_id}: {exc}") from exc
        vector = self.embedder.embed([embed_text(new)])[0] if "text" in changes else None
        return self.store.update_item(
            new, vector, actor=user_id, reason=reason, expected_version=old.version
        )

    def delete(
        self,
        item_id: str,
        *,
        user_id: str,
        cube_id: str | None = None,
        purge: bool = False,
        reason: str | None = None,
    ) -> None:
        """Mark an item deleted (kept in history, restorable); ``purge=True`` erases it."""
        cube = self._scope(user_id, cube_id)
        if purge:
            self.store.purge_item(user_id, cube, item_id, actor=user_id)
            return
        old = self.get(item_id, user_id=user_id, cube_id=cube)
        if old.status == MemoryStatus.DELETED:
            return
        new = old.model_copy(update={"status": MemoryStatus.DELETED, "version": old.version + 1})
        self.store.update_item(
            new,
            None,
            actor=user_id,
            action="delete",
            reason=reason,
            expected_version=old.version,
        )

    # ------------------------------------------------------------------ reads

    def get(self, item_id: str, *, user_id: str, cube_id: str | None = None) -> MemoryItem:
        cube = self._scope(user_id, cube_id)
        found = self.store.get_items(user_id, cube, [item_id])
        if not found:
            raise NotFound(f"no memory {item_id!r} for user {user_id!r} in cube {cube!r}")
        return found[0]

    def get_all(
        self,
        *,
        user_id: str,
        cube_id: str | None = None,
        filters: Mapping[str, Any] | SearchFilters | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[MemoryItem]:
        if not 1 <= limit <= 10_000 or offset < 0:
            raise InvalidInput("limit must be within 1..10000 and offset at least 0")
        cube = self._scope(user_id, cube_id)
        return self.store.list_items(
            user_id, cube, _filters(filters).to_item_filter(), limit=limit, offset=offset
        )

    def history(
        self, item_id: str, *, user_id: str, cube_id: str | None = None
    ) -> list[HistoryEntry]:
        cube = self._scope(user_id, cube_id)
        entries = self.store.history(user_id, cube, item_id)
        if not entries:
            raise NotFound(f"no memory {item_id!r} for user {user_id!r} in cube {cube!r}")
        return entries

    def search(
        self,
        query: str,
        *,
        user_id: str,
        cube_id: str | None = None,
        top_k: int = 10,
        filters: Mapping[str, Any] | SearchFilters | None = None,
        token_budget: int | None = None,
        now: datetime | str | None = None,
    ) -> list[SearchHit]:
        """Hybrid search in the user's cube. With ``token_budget``, the best hits whose
        rendered context fits that many tokens (cl100k_base), up to ``top_k`` of them.
        ``now`` is when the question is asked: "last May" or "yesterday" in the query count
        back from it (default: the current time)."""
        if not isinstance(query, str) or not query.strip():
            raise InvalidInput("query must be a non-empty string")
        if len(query) > self.settings.max_text_chars:
            raise InvalidInput(f"query is longer than {self.settings.max_text_chars} characters")
        if not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
            raise InvalidInput(f"top_k must be an integer within 1..{MAX_TOP_K}")
        if token_budget is not None and not 1 <= token_budget <= MAX_TOKEN_BUDGET:
            raise InvalidInput(f"token_budget must be within 1..{MAX_TOKEN_BUDGET}")
        try:
            cube = self._scope(user_id, cube_id, embeds=True)
        except NotFound:
            return []  # nothing remembered yet is an empty answer, not an error
        hits = self.retriever.search(
            query,
            user_id=user_id,
            cube_id=cube,
            top_k=top_k,
            flt=_filters(filters).to_item_filter(),
            now=parse_time(now, "now"),
        )
        if token_budget is not None:
            hits = pack(hits, token_budget)
        return hits

    def backup(self, dest: str | Path) -> dict[str, Any]:
        """Copy the whole store, online, to the new folder ``dest`` (with a hash manifest)."""
        return self.store.backup(dest)

    def cubes(self, *, user_id: str) -> list[str]:
        _check_id(user_id, "user_id")
        return [c.cube_id for c in self.store.list_cubes(user_id)]


def restore_backup(
    src: str | Path, settings: Settings | None = None, *, force: bool = False
) -> dict[str, Any]:
    """Put the backup in ``src`` in place of the configured store, after checking its hash and
    integrity. Stop every process using the store first; ``force`` replaces an existing one."""
    from mnemic.infra.store import backup

    settings = settings or load_settings()
    if settings.store.backend != "sqlite":
        raise ConfigError(
            "restore works on the sqlite store; into PostgreSQL, copy the backup with "
            "`mnemic migrate-store SRC/mnemic.db DSN` (or use your database's own tools)"
        )
    return backup.restore(Path(src), settings.db_path, force=force)


# MemOS readers know the system by that name
MemOS = Memory


def default_cube(user_id: str) -> str:
    return f"{user_id}/default"


def _check_id(value: Any, what: str) -> None:
    if not isinstance(value, str) or not _ID.match(value) or not value.strip():
        raise InvalidInput(
            f"{what} must be a non-empty string of at most 256 characters without control "
            f"characters, not {value!r}"
        )


def _filters(filters: Mapping[str, Any] | SearchFilters | None) -> SearchFilters:
    if filters is None:
        return SearchFilters()
    if isinstance(filters, SearchFilters):
        return filters
    try:
        return SearchFilters.model_validate(dict(filters))
    except (ValidationError, TypeError, ValueError) as exc:
        raise InvalidInput(f"invalid filters: {exc}") from exc


__all__ = [
    "MemOS",
    "Memory",
    "MemoryLayer",
    "SearchFilters",
    "default_cube",
    "restore_backup",
]
