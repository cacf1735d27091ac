"""The Store protocol: the only way the operation layer reaches storage.

Every read and write is scoped by ``user_id`` and ``cube_id``; no method can touch another
user's rows. Implementations: :mod:`mnemic.infra.store.sqlite` (embedded default).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mnemic.models import CubeManifest, HistoryEntry, MemoryItem, MemoryKind, MemoryStatus


@dataclass(frozen=True)
class ItemFilter:
    """Conditions on items; all given conditions must hold. Default: active items only."""

    statuses: tuple[MemoryStatus, ...] = (MemoryStatus.ACTIVE,)
    kinds: tuple[MemoryKind, ...] = ()
    session_id: str | None = None
    agent_id: str | None = None
    speaker: str | None = None
    tags: tuple[str, ...] = ()  # every tag must be present
    valid_after: datetime | None = None  # valid_from >= this
    valid_before: datetime | None = None  # valid_from < this
    as_of: datetime | None = None  # valid at that time: what was true then (valid time)
    known_at: datetime | None = None  # recorded by that time: what we knew then (system time)

    @classmethod
    def any_status(cls, **kwargs: object) -> ItemFilter:
        return cls(statuses=(), **kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Grant:
    """Access to a cube given by its owner to another user: ``read`` or ``write``."""

    cube_id: str
    grantee: str
    access: str  # "read" | "write"
    granted_at: datetime | None = None


@dataclass
class Scored:
    """An item id with a stage score (higher is better)."""

    item_id: str
    score: float
    extra: dict[str, float] = field(default_factory=dict)


class Store(Protocol):
    """Durable storage of cubes, items, their vectors, full-text index and history."""

    # cubes
    def ensure_cube(
        self, cube_id: str, owner_id: str, *, embedder: str | None, dim: int | None
    ) -> CubeManifest: ...

    def get_cube(self, cube_id: str) -> CubeManifest | None: ...

    def list_cubes(self, owner_id: str) -> list[CubeManifest]: ...

    # sharing: the owner grants another user read or write access to a cube
    def grant(self, cube_id: str, grantee: str, access: str) -> Grant:
        """Give (or change) ``grantee``'s access to ``cube_id``: ``"read"`` or ``"write"``."""
        ...

    def revoke(self, cube_id: str, grantee: str) -> bool:
        """Take back ``grantee``'s access to ``cube_id``; False if there was none."""
        ...

    def grants(self, *, cube_id: str | None = None, grantee: str | None = None) -> list[Grant]:
        """The grants on a cube, or held by a user (or both conditions), by cube then grantee."""
        ...

    # items
    def add_items(
        self,
        items: Sequence[MemoryItem],
        vectors: np.ndarray | None,
        *,
        actor: str,
        reason: str | None = None,
    ) -> None:
        """Insert items (and their vectors) in one transaction, with a history row each."""
        ...

    def put_vectors(
        self, user_id: str, cube_id: str, ids: Sequence[str], vectors: np.ndarray
    ) -> int:
        """Set (or replace) the vectors of stored items of this scope, row n of ``vectors``
        for ``ids[n]``, in one transaction, without a history row: a vector is derived data
        (``add`` stores raw turns first and embeds them in the background). Ids not in the
        scope are ignored; returns how many were set."""
        ...

    def get_items(self, user_id: str, cube_id: str, ids: Sequence[str]) -> list[MemoryItem]:
        """The items among ``ids`` in this scope, in the order of ``ids``; unknown ids dropped."""
        ...

    def list_items(
        self,
        user_id: str,
        cube_id: str,
        flt: ItemFilter = ItemFilter(),
        *,
        limit: int = 100,
        offset: int = 0,
    ) -> list[MemoryItem]: ...

    def count_items(self, user_id: str, cube_id: str, flt: ItemFilter = ItemFilter()) -> int: ...

    def update_item(
        self,
        item: MemoryItem,
        vector: np.ndarray | None,
        *,
        actor: str,
        action: str = "update",
        reason: str | None = None,
        expected_version: int | None = None,
    ) -> MemoryItem:
        """Replace a stored item (same id and scope); history keeps the before and after."""
        ...

    def purge_item(self, user_id: str, cube_id: str, item_id: str, *, actor: str) -> None:
        """Remove an item's content for good; a history row records that it was purged."""
        ...

    def record_access(self, user_id: str, cube_id: str, ids: Sequence[str]) -> None: ...

    def facets(
        self, user_id: str, cube_id: str, ids: Sequence[str]
    ) -> dict[str, tuple[str | None, str | None]]:
        """(speaker, session_id) of each item among ``ids``: what rescoring stages need,
        without the cost of whole items."""
        ...

    def speakers(self, user_id: str, cube_id: str) -> list[str]:
        """The distinct speakers of the scope's items (cheap: cached until the next write)."""
        ...

    def neighbors(
        self,
        user_id: str,
        cube_id: str,
        ids: Sequence[str],
        window: int,
        flt: ItemFilter = ItemFilter(),
    ) -> dict[str, list[tuple[str, int]]]:
        """For each id, the items of the same session up to ``window`` positions before and
        after it in insertion order, as (item id, distance) pairs."""
        ...

    def history(self, user_id: str, cube_id: str, item_id: str) -> list[HistoryEntry]: ...

    # search
    def fulltext_search(
        self,
        user_id: str,
        cube_id: str,
        query: str,
        k: int,
        flt: ItemFilter = ItemFilter(),
        *,
        keys_weight: float = 2.0,
    ) -> list[Scored]:
        """BM25 over an item's own words plus, times keys_weight, BM25 over its index keys."""
        ...

    def vector_search(
        self,
        user_id: str,
        cube_id: str,
        vector: np.ndarray,
        k: int,
        flt: ItemFilter = ItemFilter(),
    ) -> list[Scored]: ...

    def backup(self, dest: str | Path) -> dict[str, Any]:
        """Write an online, consistent copy of the store to ``dest``; returns its manifest."""
        ...

    def close(self) -> None: ...

    # whole cubes: dumped to files and loaded back (operation/cube_store.py), store copies
    def get_vectors(self, user_id: str, cube_id: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored vectors (float32, exactly as written) of the scope's items among
        ``ids``; items without a vector, and unknown ids, are absent from the answer."""
        ...

    def import_items(
        self,
        items: Sequence[MemoryItem],
        vectors: Sequence[np.ndarray | None] | None,
        history: Sequence[HistoryEntry],
        *,
        cube: CubeManifest | None = None,
    ) -> None:
        """Insert items as they are (their vectors, ``vectors[n]`` for ``items[n]``, None for
        none) and history rows as they are (action, actor, time, before, after; the store
        numbers them anew, in the given order), all in one transaction: on any error nothing
        is written. No history row is added: the rows given are the items' history.

        With ``cube``, that cube is created in the same transaction: :class:`Conflict` if a
        cube of that id exists, or if any of the items' ids is already taken anywhere in the
        store (ids are unique store-wide on every backend)."""
        ...
