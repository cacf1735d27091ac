"""The Store protocol: the only way the operation layer reaches storage.

Every read and write is scoped by ``user_id`` and ``cube_id``; no method can touch another
user's rows. Implementations: :mod:`mnemic.infra.store.sqlite` (embedded default).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mnemic.errors import InvalidInput
from mnemic.models import (
    CubeManifest,
    Edge,
    HistoryEntry,
    MemoryItem,
    MemoryKind,
    MemoryStatus,
    TopicNode,
    as_utc,
)


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


def one_scope(items: Sequence[MemoryItem]) -> tuple[str, str]:
    """The one (user, cube) of a batch that re-keys stored items; else InvalidInput."""
    scopes = {(i.user_id, i.cube_id) for i in items}
    if len(scopes) != 1:
        raise InvalidInput("a batch that re-keys stored items must hold items of one scope")
    return next(iter(scopes))


def item_matches(item: MemoryItem, flt: ItemFilter) -> bool:
    """Whether an item passes the filter, as the stores' SQL decides it (for items reached
    without a filtered query: tree leaves, graph neighbours)."""

    def utc(value: datetime | None) -> datetime | None:
        return None if value is None else as_utc(value)

    start, end = utc(item.valid_from), utc(item.valid_to)
    return (
        (not flt.statuses or item.status in flt.statuses)
        and (not flt.kinds or item.kind in flt.kinds)
        and (flt.session_id is None or item.session_id == flt.session_id)
        and (flt.agent_id is None or item.agent_id == flt.agent_id)
        and (flt.speaker is None or item.speaker == flt.speaker)
        and all(tag in item.tags for tag in flt.tags)
        and (flt.valid_after is None or (start is not None and start >= utc(flt.valid_after)))  # type: ignore[operator]
        and (flt.valid_before is None or (start is not None and start < utc(flt.valid_before)))  # type: ignore[operator]
        and (
            flt.as_of is None
            or (
                (start is None or start <= utc(flt.as_of))  # type: ignore[operator]
                and (end is None or end > utc(flt.as_of))  # type: ignore[operator]
            )
        )
        and (flt.known_at is None or utc(item.recorded_at) <= utc(flt.known_at))  # type: ignore[operator]
    )


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


FULLTEXT_BUDGET = 5_000
"""Full text at scale: a query's terms, rarest first, are searched over all their rows
while their row counts add up to at most this many ("narrow" terms); the rest ("broad"
terms, each in a large share of the scope) are searched over the scope's newest
FULLTEXT_WINDOW rows only. A row holding a narrow term is scored with every term of the
query; a row holding only broad terms is found if it is among the newest. Scopes under the
budget or the window are searched exhaustively, as are queries whose terms fit the budget."""
FULLTEXT_WINDOW = 5_000


def split_terms(dfs: Sequence[int | None], budget: int) -> tuple[list[int], list[int]]:
    """Positions of the narrow and the broad terms, given each term's row count (None:
    unknown, counted as narrow). Narrow: the rarest terms whose counts add up to at most
    ``budget``, and every term of unknown count; broad: the others."""
    order = sorted(range(len(dfs)), key=lambda i: (dfs[i] is not None, dfs[i] or 0, i))
    narrow: list[int] = []
    broad: list[int] = []
    spent = 0
    for i in order:
        df = dfs[i]
        if df is None or (not broad and spent + df <= budget):
            narrow.append(i)
            spent += df or 0
        else:
            broad.append(i)
    return sorted(narrow), sorted(broad)


@dataclass
class ItemChange:
    """A new state of a stored item inside a :class:`TreeChange`, checked against
    ``expected_version``; history records ``action`` and ``reason`` (before and after)."""

    item: MemoryItem
    expected_version: int
    action: str
    reason: str | None = None


@dataclass
class TreeChange:
    """One step of organizing a scope, applied by :meth:`Store.organize` in one transaction:
    item changes (merges), topics written or dropped, items placed under a topic or taken
    out of the tree, edges added or dropped, and history rows for topics.

    Placing an item already under another topic is a move: its history gets a ``move`` row
    (before and after: ``{"topic_id": ...}``) with ``move_reason``."""

    user_id: str
    cube_id: str
    items: list[ItemChange] = field(default_factory=list)
    topics: list[TopicNode] = field(default_factory=list)  # inserted or replaced (by id)
    drop_topics: list[str] = field(default_factory=list)
    place: dict[str, str] = field(default_factory=dict)  # item id -> topic id
    unplace: list[str] = field(default_factory=list)  # item ids taken out of the tree
    add_edges: list[Edge] = field(default_factory=list)
    drop_edges: list[tuple[str, str, str]] = field(default_factory=list)  # (src, kind, dst)
    # history rows about topics: (topic id, action, reason, details)
    notes: list[tuple[str, str, str, dict[str, Any]]] = field(default_factory=list)
    move_reason: str | None = None
    # the tree the step was planned from: topic id -> version and item id -> topic id; if
    # the stored tree differs when the step is applied (another pass ran meanwhile),
    # ``organize`` raises Conflict and writes nothing
    expected_topics: dict[str, int] | None = None
    expected_members: dict[str, str] | None = None

    def empty(self) -> bool:
        return not (
            self.items
            or self.topics
            or self.drop_topics
            or self.place
            or self.unplace
            or self.add_edges
            or self.drop_edges
            or self.notes
        )


def tree_changed(change: TreeChange, topics: dict[str, int], members: dict[str, str]) -> bool:
    """Whether the stored tree (``topics``: id -> version, ``members``) is no longer the
    one ``change`` was planned from."""
    return (change.expected_topics is not None and topics != change.expected_topics) or (
        change.expected_members is not None and members != change.expected_members
    )


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
        rekey: Mapping[str, str] | None = None,
    ) -> None:
        """Insert items (and their vectors) in one transaction, with a history row each.

        ``rekey``: item id -> new index keys (``index_text``) for items already stored in the
        batch's scope (the batch must then hold one scope), replaced in the same transaction;
        keys are derived data, so this makes no version and no history row (a turn's keys
        gain the turns that follow it in this batch). Unknown ids are skipped."""
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

    def session_tail(
        self, user_id: str, cube_id: str, session_id: str, n: int, kinds: Sequence[MemoryKind]
    ) -> list[MemoryItem]:
        """The session's last ``n`` active items of ``kinds`` in insertion order, oldest
        first, read through the session index (the context of an add that continues a
        session: cheap however large the scope)."""
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

    # the memory tree and the graph (store migration 3)
    def topics(self, user_id: str, cube_id: str) -> list[TopicNode]:
        """The scope's topic nodes with their centroids, ``size`` counting their items; by
        creation then id."""
        ...

    def topic_members(
        self, user_id: str, cube_id: str, topic_ids: Sequence[str] | None = None
    ) -> dict[str, str]:
        """item id -> topic id for the items placed in the tree (under ``topic_ids`` only,
        when given)."""
        ...

    def links(
        self,
        user_id: str,
        cube_id: str,
        ids: Sequence[str] | None = None,
        kinds: Sequence[str] = (),
    ) -> list[Edge]:
        """The graph edges touching any of ``ids`` (as source or target; every edge of the
        scope when None), of the given ``kinds`` (all when empty); by source, kind, target."""
        ...

    def organize(self, change: TreeChange, *, actor: str) -> None:
        """Apply one organizing step in one transaction: a crash leaves the old state or the
        new one, never a mix. Raises ``Conflict`` (nothing applied) when an item is no longer
        at its expected version."""
        ...

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
