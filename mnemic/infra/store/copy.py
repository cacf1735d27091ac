"""Copy a whole store to another one, SQLite or PostgreSQL, checked by counts and hashes.

``copy_store(src, dst)`` reads one consistent snapshot of the source and, scope by scope,
writes its items (with their vectors), their history rows (with their original times and
content), then its cubes and meta. Each scope's items and history are hashed in a canonical
form on the way out and read back and hashed from the destination: a copy that differs in
one field of one row fails loudly. ``mnemic migrate-store SRC DST`` is this module, and the
PostgreSQL store's ``backup`` is a copy into a new SQLite file.

A store is named by a path (SQLite) or a libpq connection string (``postgresql://...`` or
``host=... dbname=...``).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mnemic.errors import InvalidInput, StoreError
from mnemic.models import HistoryEntry, MemoryItem, utcnow

BATCH = 1000  # rows per read and per write transaction


@dataclass
class ScopeCopy:
    """What was copied for one (user, cube) scope, and the hash both sides agreed on."""

    user_id: str
    cube_id: str
    items: int = 0
    vectors: int = 0
    history: int = 0
    sha256: str = ""


@dataclass
class CopyReport:
    source: str
    destination: str
    cubes: int = 0
    scopes: list[ScopeCopy] = field(default_factory=list)

    @property
    def items(self) -> int:
        return sum(s.items for s in self.scopes)

    @property
    def history(self) -> int:
        return sum(s.history for s in self.scopes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "destination": self.destination,
            "cubes": self.cubes,
            "items": self.items,
            "vectors": sum(s.vectors for s in self.scopes),
            "history": self.history,
            "scopes": [s.__dict__ for s in self.scopes],
        }


def is_dsn(target: str) -> bool:
    return target.startswith(("postgresql://", "postgres://")) or (
        "=" in target and ("dbname" in target or "host" in target)
    )


def open_store(target: str, *, dim: int | None = None) -> Any:
    """The store a path or DSN names (created if it does not exist yet)."""
    if is_dsn(target):
        from mnemic.infra.store.postgres import PostgresStore

        return PostgresStore(target, dim=dim, pool_size=2)
    from mnemic.infra.store.sqlite import SQLiteStore

    return SQLiteStore(Path(target).expanduser(), dim=dim)


# ---------------------------------------------------------------------- canonical hashing


def _item_line(item: MemoryItem, vector: np.ndarray | None) -> bytes:
    data = item.model_dump(mode="json")
    data["vector"] = None if vector is None else vector.astype(np.float32).tobytes().hex()
    return json.dumps(data, sort_keys=True).encode() + b"\n"


def _history_line(row: dict[str, Any]) -> bytes:
    data = {k: row[k] for k in ("item_id", "action", "actor", "reason", "before", "after")}
    data["at"] = row["at"].isoformat()
    return json.dumps(data, sort_keys=True).encode() + b"\n"


# ---------------------------------------------------------------------- the two sides


class _Side(Protocol):
    store: Any

    def scopes(self) -> list[tuple[str, str]]: ...
    def cubes(self) -> list[tuple[str, str, str]]: ...
    def meta(self) -> dict[str, str]: ...
    def items(
        self, user_id: str, cube_id: str
    ) -> Iterator[list[tuple[MemoryItem, np.ndarray | None]]]: ...
    def history(self, user_id: str, cube_id: str) -> Iterator[list[dict[str, Any]]]: ...
    def is_empty(self) -> bool: ...
    def refresh(self) -> None: ...
    def close(self) -> None: ...


class _SQLiteSide:
    """Reads through its own connection in one read transaction: a consistent snapshot."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.db = sqlite3.connect(f"file:{store.path}?mode=ro", uri=True)
        self.db.row_factory = sqlite3.Row
        self.db.execute("BEGIN")

    def scopes(self) -> list[tuple[str, str]]:
        rows = self.db.execute(
            "SELECT user_id, cube_id FROM items UNION SELECT user_id, cube_id FROM history "
            "ORDER BY 1, 2"
        ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def cubes(self) -> list[tuple[str, str, str]]:
        rows = self.db.execute("SELECT cube_id, owner_id, manifest FROM cubes ORDER BY cube_id")
        return [(r[0], r[1], r[2]) for r in rows]

    def meta(self) -> dict[str, str]:
        return {r[0]: r[1] for r in self.db.execute("SELECT key, value FROM meta")}

    def items(
        self, user_id: str, cube_id: str
    ) -> Iterator[list[tuple[MemoryItem, np.ndarray | None]]]:
        from mnemic.infra.store.sqlite import _SELECT, row_to_item

        cursor = self.db.execute(
            f"{_SELECT}, v.vec AS vec_ FROM items i LEFT JOIN vectors v "
            "ON v.item_rowid = i.rowid WHERE i.user_id = ? AND i.cube_id = ? ORDER BY i.rowid",
            (user_id, cube_id),
        )
        while rows := cursor.fetchmany(BATCH):
            yield [
                (
                    row_to_item(r),
                    None if r["vec_"] is None else np.frombuffer(r["vec_"], dtype=np.float32),
                )
                for r in rows
            ]

    def history(self, user_id: str, cube_id: str) -> Iterator[list[dict[str, Any]]]:
        from datetime import UTC, datetime

        cursor = self.db.execute(
            "SELECT * FROM history WHERE user_id = ? AND cube_id = ? ORDER BY id",
            (user_id, cube_id),
        )
        while rows := cursor.fetchmany(BATCH):
            yield [
                {
                    "item_id": r["item_id"],
                    "action": r["action"],
                    "actor": r["actor"],
                    "at": datetime.strptime(r["at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC),
                    "reason": r["reason"],
                    "before": json.loads(r["before"]) if r["before"] else None,
                    "after": json.loads(r["after"]) if r["after"] else None,
                }
                for r in rows
            ]

    def is_empty(self) -> bool:
        return not any(
            self.db.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone()
            for t in ("items", "history", "cubes")
        )

    def refresh(self) -> None:
        """A new snapshot (after this process wrote through the store)."""
        self.db.rollback()
        self.db.execute("BEGIN")

    def close(self) -> None:
        self.db.close()


class _PostgresSide:
    """Reads in one REPEATABLE READ transaction: a consistent snapshot of every table."""

    def __init__(self, store: Any) -> None:
        import psycopg
        from psycopg.rows import dict_row

        self.store = store
        self.db = psycopg.connect(store.dsn, row_factory=dict_row)
        self.db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        self._cursors = 0

    def scopes(self) -> list[tuple[str, str]]:
        rows = self.db.execute(
            "SELECT user_id, cube_id FROM items UNION SELECT user_id, cube_id FROM history "
            "ORDER BY 1, 2"
        ).fetchall()
        return [(r["user_id"], r["cube_id"]) for r in rows]

    def cubes(self) -> list[tuple[str, str, str]]:
        rows = self.db.execute("SELECT cube_id, owner_id, manifest FROM cubes ORDER BY cube_id")
        return [(r["cube_id"], r["owner_id"], r["manifest"]) for r in rows]

    def meta(self) -> dict[str, str]:
        return {r["key"]: r["value"] for r in self.db.execute("SELECT key, value FROM mnemic_meta")}

    def _stream(self, sql: str, params: tuple[Any, ...]) -> Iterator[list[dict[str, Any]]]:
        self._cursors += 1
        with self.db.cursor(name=f"copy_{self._cursors}") as cursor:
            cursor.execute(sql, params)  # type: ignore[arg-type]
            while rows := cursor.fetchmany(BATCH):
                yield rows

    def items(
        self, user_id: str, cube_id: str
    ) -> Iterator[list[tuple[MemoryItem, np.ndarray | None]]]:
        from mnemic.infra.store.postgres import _SELECT, parse_vector, row_to_item

        for rows in self._stream(
            f"{_SELECT}, i.embedding::text AS vec_ FROM items i "
            "WHERE i.user_id = %s AND i.cube_id = %s ORDER BY i.seq",
            (user_id, cube_id),
        ):
            yield [
                (row_to_item(r), None if r["vec_"] is None else parse_vector(r["vec_"]))
                for r in rows
            ]

    def history(self, user_id: str, cube_id: str) -> Iterator[list[dict[str, Any]]]:
        from datetime import UTC

        for rows in self._stream(
            "SELECT item_id, action, actor, at, reason, before, after FROM history "
            "WHERE user_id = %s AND cube_id = %s ORDER BY id",
            (user_id, cube_id),
        ):
            for r in rows:
                r["at"] = r["at"].astimezone(UTC)
            yield rows

    def is_empty(self) -> bool:
        return not any(
            self.db.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone()
            for t in ("items", "history", "cubes")
        )

    def refresh(self) -> None:
        self.db.rollback()
        self.db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def close(self) -> None:
        self.db.close()


def _side(store: Any) -> _SQLiteSide | _PostgresSide:
    return _PostgresSide(store) if hasattr(store, "dsn") else _SQLiteSide(store)


# ---------------------------------------------------------------------- writer


def _history_entries(user_id: str, cube_id: str, rows: list[dict[str, Any]]) -> list[HistoryEntry]:
    """Rows as read by a side, as :meth:`Store.import_items` takes them (ids are renumbered)."""
    return [HistoryEntry(id=0, user_id=user_id, cube_id=cube_id, **r) for r in rows]


# ---------------------------------------------------------------------- the copy


def _hash_scope(side: _Side, user_id: str, cube_id: str) -> tuple[ScopeCopy, str]:
    digest = hashlib.sha256()
    out = ScopeCopy(user_id, cube_id)
    for batch in side.items(user_id, cube_id):
        for item, vector in batch:
            digest.update(_item_line(item, vector))
            out.items += 1
            out.vectors += vector is not None
    digest.update(b"--history--\n")
    for rows in side.history(user_id, cube_id):
        for r in rows:
            digest.update(_history_line(r))
            out.history += 1
    out.sha256 = digest.hexdigest()
    return out, out.sha256


def copy_store(src: Any, dst: Any, *, force: bool = False) -> CopyReport:
    """Copy every scope of the open store ``src`` into the open store ``dst``.

    ``dst`` must be empty unless ``force``; even then none of ``src``'s scopes may already be
    in it. Raises :class:`StoreError` if what landed in ``dst`` differs from ``src``."""
    source, target = _side(src), _side(dst)
    report = CopyReport(source=_name(src), destination=_name(dst))
    try:
        if not target.is_empty():
            if not force:
                raise InvalidInput(
                    f"{report.destination} already holds memories; give an empty store, or "
                    "force to add to it"
                )
            taken = set(target.scopes()) & set(source.scopes())
            if taken:
                user_id, cube_id = sorted(taken)[0]
                raise InvalidInput(
                    f"{report.destination} already has cube {cube_id} of user {user_id}; "
                    "copying over it would mix two histories"
                )
        # hold no lock on the destination while writing to it (fixing the vector dimension
        # alters its table)
        target.refresh()
        to_pg = hasattr(dst, "dsn")
        for user_id, cube_id in source.scopes():
            digest = hashlib.sha256()
            scope = ScopeCopy(user_id, cube_id)
            for batch in source.items(user_id, cube_id):
                for item, vector in batch:
                    digest.update(_item_line(item, vector))
                    scope.items += 1
                    scope.vectors += vector is not None
                dst.import_items([i for i, _ in batch], [v for _, v in batch], [])
            digest.update(b"--history--\n")
            for rows in source.history(user_id, cube_id):
                for r in rows:
                    digest.update(_history_line(r))
                    scope.history += 1
                dst.import_items([], None, _history_entries(user_id, cube_id, rows))
            scope.sha256 = digest.hexdigest()
            report.scopes.append(scope)
        _copy_cubes_and_meta(source, dst, to_pg)
        report.cubes = len(source.cubes())
        for grant in source.store.grants():  # who a cube is shared with goes along
            dst.grant(grant.cube_id, grant.grantee, grant.access)
        # read back what landed and compare, scope by scope
        target.refresh()
        for scope in report.scopes:
            landed, digest_hex = _hash_scope(target, scope.user_id, scope.cube_id)
            if (landed.items, landed.vectors, landed.history, digest_hex) != (
                scope.items,
                scope.vectors,
                scope.history,
                scope.sha256,
            ):
                raise StoreError(
                    f"the copy of cube {scope.cube_id} of user {scope.user_id} differs from "
                    f"the source ({landed.items} items, {landed.history} history rows landed "
                    f"of {scope.items} and {scope.history}); discard {report.destination}"
                )
        return report
    finally:
        source.close()
        target.close()


def _copy_cubes_and_meta(source: _Side, dst: Any, to_pg: bool) -> None:
    cubes = source.cubes()
    meta = {k: v for k, v in source.meta().items() if k not in ("schema_version", "embedding_dim")}
    if to_pg:
        with dst._tx() as db, db.cursor() as cur:
            cur.executemany(
                "INSERT INTO cubes(cube_id, owner_id, manifest) VALUES (%s, %s, %s) "
                "ON CONFLICT (cube_id) DO NOTHING",
                cubes,
            )
            cur.executemany(
                "INSERT INTO mnemic_meta(key, value) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                list(meta.items()),
            )
    else:
        with dst._tx() as db:
            db.executemany(
                "INSERT OR IGNORE INTO cubes(cube_id, owner_id, manifest) VALUES (?, ?, ?)", cubes
            )
            db.executemany("INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)", meta.items())


def _name(store: Any) -> str:
    return store.where if hasattr(store, "dsn") else str(store.path)


def migrate(src: str, dst: str, *, force: bool = False) -> CopyReport:
    """Copy the store named ``src`` (path or DSN) into the one named ``dst``."""
    if is_dsn(src) is False and not Path(src).expanduser().is_file():
        raise InvalidInput(f"{src} is neither an existing SQLite file nor a PostgreSQL DSN")
    source = open_store(src)
    try:
        target = open_store(dst, dim=source.dim)
        try:
            return copy_store(source, target, force=force)
        finally:
            target.close()
    finally:
        source.close()


def backup_to_folder(store: Any, dest: Path) -> dict[str, Any]:
    """A PostgreSQL store's backup: its consistent copy as a SQLite backup folder (the
    format of :mod:`mnemic.infra.store.backup`, verifiable and restorable the same way)."""
    from mnemic.infra.hashing import sha256_file
    from mnemic.infra.store import backup
    from mnemic.infra.store.sqlite import SQLiteStore

    if dest.exists() and any(dest.iterdir()):
        raise InvalidInput(f"{dest} exists and is not empty; give a new folder for the backup")
    dest.mkdir(parents=True, exist_ok=True)
    db_path = dest / backup.DB_NAME
    with SQLiteStore(db_path, dim=store.dim) as copy:
        report = copy_store(store, copy)
    with sqlite3.connect(db_path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        schema = conn.execute("PRAGMA user_version").fetchone()[0]
    conn.close()
    snapshots = db_path.with_name(db_path.name + ".vectors")
    if snapshots.exists():  # derived; the restored store rebuilds it
        import shutil

        shutil.rmtree(snapshots)
    manifest = {
        "format": backup.FORMAT,
        "created_at": utcnow().isoformat(),
        "schema_version": schema,
        "items": report.items,
        "history": report.history,
        "source": report.source,
        "files": {backup.DB_NAME: sha256_file(db_path)},
    }
    (dest / backup.MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest
