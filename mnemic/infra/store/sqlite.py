"""The embedded store: one SQLite file (WAL) with FTS5 for BM25 and usearch HNSW for vectors.

SQLite is the source of truth. Each item's vector lives in the ``vectors`` table and every
vector insert or removal appends to ``vector_log`` in the same transaction; the HNSW index of
a (user, cube) scope is derived state, snapshotted beside the database and brought up to date
from the log before each vector search. So a crash, or another process writing the same file,
never leaves the index disagreeing with the rows for longer than one search.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from mnemic.errors import Conflict, InvalidInput, NotFound, SchemaTooNew, StoreError
from mnemic.infra.store import fts5_bm25
from mnemic.infra.store.base import (
    FULLTEXT_BUDGET,
    FULLTEXT_WINDOW,
    Grant,
    ItemFilter,
    Scored,
    TreeChange,
    one_scope,
    split_terms,
    tree_changed,
)
from mnemic.infra.store.fts5_postings import SmallTablePostings
from mnemic.infra.store.vector_index import VectorIndex
from mnemic.infra.text import STOPWORDS
from mnemic.models import (
    SCHEMA_VERSION,
    CubeManifest,
    Edge,
    HistoryEntry,
    MemoryItem,
    MemoryKind,
    MemoryLayer,
    MemoryStatus,
    Source,
    TopicNode,
    rebuild,
    utcnow,
)

# Numbered, append-only migrations: migration i brings the schema from version i to i + 1.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE cubes (
        cube_id TEXT PRIMARY KEY,
        owner_id TEXT NOT NULL,
        manifest TEXT NOT NULL
    );
    CREATE INDEX cubes_owner ON cubes(owner_id);
    CREATE TABLE items (
        rowid INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        user_id TEXT NOT NULL,
        cube_id TEXT NOT NULL,
        session_id TEXT,
        agent_id TEXT,
        text TEXT NOT NULL,
        index_text TEXT,
        kind TEXT NOT NULL,
        layer TEXT NOT NULL,
        status TEXT NOT NULL,
        version INTEGER NOT NULL,
        supersedes TEXT,
        valid_from TEXT,
        valid_to TEXT,
        created_at TEXT NOT NULL,
        recorded_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        expires_at TEXT,
        speaker TEXT,
        source TEXT NOT NULL,
        entities TEXT NOT NULL,
        tags TEXT NOT NULL,
        confidence REAL NOT NULL,
        importance REAL NOT NULL,
        access_count INTEGER NOT NULL,
        last_accessed TEXT,
        metadata TEXT NOT NULL
    );
    CREATE INDEX items_scope ON items(user_id, cube_id, status, valid_from);
    CREATE INDEX items_session ON items(user_id, cube_id, session_id);
    CREATE VIRTUAL TABLE items_fts USING fts5(
        scope, body, tokenize = 'porter unicode61 remove_diacritics 2'
    );
    CREATE VIRTUAL TABLE keys_fts USING fts5(
        scope, keys, tokenize = 'porter unicode61 remove_diacritics 2'
    );
    CREATE TABLE vectors (
        item_rowid INTEGER PRIMARY KEY,
        scope TEXT NOT NULL,
        vec BLOB NOT NULL
    );
    CREATE TABLE vector_log (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        scope TEXT NOT NULL,
        item_rowid INTEGER NOT NULL,
        op INTEGER NOT NULL
    );
    CREATE INDEX vector_log_scope ON vector_log(scope, seq);
    CREATE TABLE history (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        item_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        cube_id TEXT NOT NULL,
        action TEXT NOT NULL,
        actor TEXT NOT NULL,
        at TEXT NOT NULL,
        reason TEXT,
        before TEXT,
        after TEXT
    );
    CREATE INDEX history_item ON history(user_id, cube_id, item_id);
    """,
    """
    CREATE TABLE grants (
        cube_id TEXT NOT NULL,
        grantee TEXT NOT NULL,
        access TEXT NOT NULL CHECK (access IN ('read', 'write')),
        granted_at TEXT NOT NULL,
        PRIMARY KEY (cube_id, grantee)
    );
    CREATE INDEX grants_grantee ON grants(grantee);
    """,
    # 3: the memory tree (topics over items) and the graph of cross-links between items
    """
    CREATE TABLE topics (
        user_id TEXT NOT NULL,
        cube_id TEXT NOT NULL,
        id TEXT NOT NULL,
        title TEXT NOT NULL,
        summary TEXT NOT NULL,
        centroid BLOB,
        version INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (user_id, cube_id, id)
    );
    CREATE TABLE topic_members (
        user_id TEXT NOT NULL,
        cube_id TEXT NOT NULL,
        item_id TEXT NOT NULL,
        topic_id TEXT NOT NULL,
        PRIMARY KEY (user_id, cube_id, item_id)
    );
    CREATE INDEX topic_members_topic ON topic_members(user_id, cube_id, topic_id);
    CREATE TABLE edges (
        user_id TEXT NOT NULL,
        cube_id TEXT NOT NULL,
        src TEXT NOT NULL,
        kind TEXT NOT NULL,
        dst TEXT NOT NULL,
        weight REAL NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (user_id, cube_id, src, kind, dst)
    );
    CREATE INDEX edges_dst ON edges(user_id, cube_id, dst);
    """,
    # 4: a scope's rows in insertion order (the index ends with the rowid), for full text's
    # window of newest rows
    """
    CREATE INDEX items_recent ON items(user_id, cube_id);
    """,
    # 5: a scope's items by speaker, for searches kept to what one speaker said (the
    # retriever's speaker_recall): a rare speaker's rows are then read, not the scope's
    """
    CREATE INDEX items_speaker ON items(user_id, cube_id, speaker);
    """,
]

# fmt: off
_ITEM_COLUMNS = (
    "id", "user_id", "cube_id", "session_id", "agent_id", "text", "index_text", "kind",
    "layer", "status", "version", "supersedes", "valid_from", "valid_to", "created_at",
    "recorded_at", "updated_at", "expires_at", "speaker", "source", "entities", "tags",
    "confidence", "importance", "access_count", "last_accessed", "metadata",
)
# fmt: on
_JSON_COLUMNS = {"source", "entities", "tags", "metadata"}
_TIME_COLUMNS = {  # stored as fixed-width UTC text, see ts()
    name
    for name, field in MemoryItem.model_fields.items()
    if field.annotation in (datetime, datetime | None)
}
_SELECT = "SELECT i.rowid AS rowid_, " + ", ".join(f"i.{c}" for c in _ITEM_COLUMNS)
_INSERT_ITEM = (
    f"INSERT INTO items({', '.join(_ITEM_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _ITEM_COLUMNS)})"
)

_WORD = re.compile(r"\w+", re.UNICODE)

SNAPSHOT_EVERY = 5_000  # log entries applied before an index snapshot is rewritten
# A filtered vector search that finds fewer than k of its rows among this many nearest
# candidates scores the filter's rows exactly instead of widening further.
FILTERED_ANN_MAX = 1_024
# From this many rows in a full-text table, BM25 is summed by the store (see _bm25_scan and
# fts5_bm25) instead of ranked by FTS5's bm25(), which walks every query word's posting list
# on each call: below this size that one query costs less than counting the words first.
FTS_PRUNE_ROWS = 10_000
SCOPES_KEPT = 64  # small scopes whose rows' ids and statuses are kept for full-text search
STEMS_KEPT = 100_000  # words whose FTS5 tokens are remembered (the tokenizer never changes)


def ts(value: datetime | None) -> str | None:
    """Fixed-width UTC text so that string order is time order in SQL."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    # isoformat pads years below 1000 to four digits (strftime's %Y does not, on glibc),
    # which both keeps string order and lets fromisoformat read the value back
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def scope_key(user_id: str, cube_id: str) -> str:
    """A single alphanumeric token naming a (user, cube) scope, usable inside FTS5 queries."""
    digest = hashlib.sha256(f"{user_id}\x00{cube_id}".encode()).hexdigest()[:24]
    return f"s{digest}"


def fts_words(text: str) -> list[str]:
    """The distinct words of free text that a full-text query searches (at most 64)."""
    words = [w.lower() for w in _WORD.findall(text)]
    kept = [w for w in words if w not in STOPWORDS] or words
    return list(dict.fromkeys(w.replace('"', "") for w in kept if w.strip("_")))[:64]


def fts_query(text: str) -> str | None:
    """Turn free text into a safe FTS5 OR-query of quoted terms (no FTS syntax gets through)."""
    return _or_query(fts_words(text))


def _or_query(words: Sequence[str]) -> str | None:
    return " OR ".join(f'"{w}"' for w in words) if words else None


def item_to_row(item: MemoryItem) -> dict[str, Any]:
    data = item.model_dump(mode="python")
    row: dict[str, Any] = {}
    for col in _ITEM_COLUMNS:
        value = data[col]
        if col in _JSON_COLUMNS:
            value = json.dumps(item.source.model_dump(mode="json") if col == "source" else value)
        elif col in _TIME_COLUMNS:
            value = ts(value)
        elif hasattr(value, "value"):
            value = value.value
        row[col] = value
    return row


def row_to_item(row: sqlite3.Row) -> MemoryItem:
    """Rows were validated on their way in, so they are rebuilt without re-validation
    (``rebuild``): this sits on the search hot path, a few hundred rows a query."""
    data: dict[str, Any] = {col: row[col] for col in _ITEM_COLUMNS}
    for col in _TIME_COLUMNS:
        if data[col] is not None:
            data[col] = datetime.fromisoformat(data[col])
    data["kind"] = MemoryKind(data["kind"])
    data["layer"] = MemoryLayer(data["layer"])
    data["status"] = MemoryStatus(data["status"])
    source = json.loads(data["source"])
    if source.get("offsets") is not None:
        source["offsets"] = tuple(source["offsets"])
    data["source"] = rebuild(Source, source)
    data["entities"] = _json(data["entities"])
    data["tags"] = _json(data["tags"])
    data["metadata"] = _json(data["metadata"])
    return rebuild(MemoryItem, data)


def _json(text: str) -> Any:
    """json.loads, with the empty list and mapping most rows hold made without parsing."""
    if text == "[]":
        return []
    if text == "{}":
        return {}
    return json.loads(text)


@dataclass
class _ScopeIndex:
    index: VectorIndex
    seq: int  # last vector_log entry applied
    unsaved: int = 0


class SQLiteStore:
    """The embedded :class:`~mnemic.infra.store.base.Store`: ``SQLiteStore(path, dim=384)``."""

    def __init__(self, path: str | Path, *, dim: int | None = None) -> None:
        text = str(path)
        if text.startswith(("postgresql://", "postgres://")) or "dbname=" in text:
            raise InvalidInput(
                f"{text!r} is a PostgreSQL connection string, not a SQLite file: set "
                "store.backend = 'postgres' and store.dsn to it (or pass it to PostgresStore)"
            )
        self.path = Path(path)
        self.dim = dim
        self.fulltext_budget = FULLTEXT_BUDGET  # see FULLTEXT_BUDGET; per store for tests
        self.fulltext_window = FULLTEXT_WINDOW
        # (table, token) -> (rows holding it, table rows then): counts of broad words
        self._row_counts: dict[tuple[str, str], tuple[int, int]] = {}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the database {self.path}: {exc}") from exc
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._indexes: dict[str, _ScopeIndex] = {}
        self._snapshots = self.path.with_name(self.path.name + ".vectors")
        self._closed = False
        self._writes = 0  # commits through this connection (others show in data_version)
        self._speakers: dict[str, tuple[tuple[int, int], list[str]]] = {}
        self._fts_helpers = False  # temp tables that tell the stems and counts of words
        self._stem_of: dict[str, list[str]] = {}  # word -> FTS5's tokens of it (fixed)
        self._scope_items: dict[
            str, tuple[tuple[int, int], dict[int, tuple[str, str, str | None]]]
        ] = {}
        self._postings = {  # small tables' posting lists, until the next commit
            "items_fts": SmallTablePostings("items_fts", "body"),
            "keys_fts": SmallTablePostings("keys_fts", "keys"),
        }
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit that returned survives power loss, not only a process crash
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=30000")
            self._migrate()

    # ------------------------------------------------------------------ plumbing

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise SchemaTooNew(
                f"{self.path} has schema version {version} but this mnemic knows up to "
                f"{len(MIGRATIONS)}; upgrade mnemic (pip install -U mnemic) to open it"
            )
        for number in range(version, len(MIGRATIONS)):
            with self._tx():
                # re-check under the write lock: another process may have migrated meanwhile
                if self._db.execute("PRAGMA user_version").fetchone()[0] > number:
                    continue
                for statement in _split_sql(MIGRATIONS[number]):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number + 1}")
        with self._tx():
            self._db.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; BEGIN IMMEDIATE takes the write lock up front (no deadlocks)."""
        with self._lock:
            if self._closed:
                raise StoreError(f"the store {self.path} is closed")
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StoreError(
                    f"{self.path} stayed locked by another writer for 30 s: {exc}"
                ) from exc
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")
                self._writes += 1

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            if self._closed:
                raise StoreError(f"the store {self.path} is closed")
            return self._db.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            for scope, entry in self._indexes.items():
                if entry.unsaved:
                    self._save_snapshot(scope, entry)
            self._db.close()
            self._closed = True

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ cubes

    def ensure_cube(
        self, cube_id: str, owner_id: str, *, embedder: str | None, dim: int | None
    ) -> CubeManifest:
        with self._tx() as db:
            row = db.execute("SELECT manifest FROM cubes WHERE cube_id = ?", (cube_id,)).fetchone()
            if row is not None:
                return CubeManifest.model_validate_json(row["manifest"])
            manifest = CubeManifest(
                cube_id=cube_id, owner_id=owner_id, embedder=embedder, embedding_dim=dim
            )
            db.execute(
                "INSERT INTO cubes(cube_id, owner_id, manifest) VALUES (?, ?, ?)",
                (cube_id, owner_id, manifest.model_dump_json()),
            )
            return manifest

    def get_cube(self, cube_id: str) -> CubeManifest | None:
        rows = self._read("SELECT manifest FROM cubes WHERE cube_id = ?", (cube_id,))
        return CubeManifest.model_validate_json(rows[0]["manifest"]) if rows else None

    def list_cubes(self, owner_id: str) -> list[CubeManifest]:
        rows = self._read(
            "SELECT manifest FROM cubes WHERE owner_id = ? ORDER BY cube_id", (owner_id,)
        )
        return [CubeManifest.model_validate_json(r["manifest"]) for r in rows]

    # ------------------------------------------------------------------ sharing

    def grant(self, cube_id: str, grantee: str, access: str) -> Grant:
        if access not in ("read", "write"):
            raise InvalidInput(f"access must be 'read' or 'write', not {access!r}")
        now = utcnow()
        with self._tx() as db:
            if db.execute("SELECT 1 FROM cubes WHERE cube_id = ?", (cube_id,)).fetchone() is None:
                raise NotFound(f"no cube {cube_id!r}; create it before sharing it")
            db.execute(
                "INSERT INTO grants(cube_id, grantee, access, granted_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(cube_id, grantee) DO UPDATE SET access = excluded.access, "
                "granted_at = excluded.granted_at",
                (cube_id, grantee, access, ts(now)),
            )
        return Grant(cube_id=cube_id, grantee=grantee, access=access, granted_at=now)

    def revoke(self, cube_id: str, grantee: str) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "DELETE FROM grants WHERE cube_id = ? AND grantee = ?", (cube_id, grantee)
            )
            return cur.rowcount > 0

    def grants(self, *, cube_id: str | None = None, grantee: str | None = None) -> list[Grant]:
        clauses, params = [], []
        if cube_id is not None:
            clauses.append("cube_id = ?")
            params.append(cube_id)
        if grantee is not None:
            clauses.append("grantee = ?")
            params.append(grantee)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._read(f"SELECT * FROM grants{where} ORDER BY cube_id, grantee", params)
        return [
            Grant(
                cube_id=r["cube_id"],
                grantee=r["grantee"],
                access=r["access"],
                granted_at=datetime.fromisoformat(r["granted_at"]),
            )
            for r in rows
        ]

    # ------------------------------------------------------------------ items

    def _check_vectors(self, vectors: np.ndarray | None, n: int) -> np.ndarray | None:
        if vectors is None:
            return None
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != n:
            raise InvalidInput(f"expected {n} vectors, got an array of shape {vectors.shape}")
        if self.dim is None:
            self.dim = int(vectors.shape[1])
        if vectors.shape[1] != self.dim:
            raise InvalidInput(
                f"vectors have {vectors.shape[1]} dimensions but this store holds {self.dim}; "
                "use the embedder the store was made with, or migrate the cube"
            )
        return vectors

    def add_items(
        self,
        items: Sequence[MemoryItem],
        vectors: np.ndarray | None,
        *,
        actor: str,
        reason: str | None = None,
        rekey: Mapping[str, str] | None = None,
    ) -> None:
        if not items:
            return
        vectors = self._check_vectors(vectors, len(items))
        scope_of_rekey = one_scope(items) if rekey else None
        now = ts(utcnow())
        with self._tx() as db:
            for n, item in enumerate(items):
                row = item_to_row(item)
                try:
                    cur = db.execute(_INSERT_ITEM, [row[c] for c in _ITEM_COLUMNS])
                except sqlite3.IntegrityError as exc:
                    raise Conflict(f"an item with id {item.id} already exists") from exc
                rowid = cur.lastrowid
                scope = scope_key(item.user_id, item.cube_id)
                self._put_fulltext(db, rowid, scope, item)
                if vectors is not None:
                    self._put_vector(db, rowid, scope, vectors[n])
                self._write_history(
                    db, item, "add", actor, now, reason, before=None, after=_public(item)
                )
            if rekey and scope_of_rekey is not None:
                self._rekey(db, *scope_of_rekey, rekey)
        # keep loaded HNSW indexes current now, so insertion cost is paid by writers in
        # small steps instead of by the next search all at once
        with self._lock:
            for scope in {scope_key(i.user_id, i.cube_id) for i in items}:
                if scope in self._indexes:
                    self._sync_index(scope)

    def _rekey(
        self, db: sqlite3.Connection, user_id: str, cube_id: str, keys: Mapping[str, str]
    ) -> None:
        """Replace stored items' index keys, in the row and in keys_fts (no version)."""
        scope = scope_key(user_id, cube_id)
        for item_id, text in keys.items():
            row = db.execute(
                "SELECT rowid FROM items WHERE user_id = ? AND cube_id = ? AND id = ?",
                (user_id, cube_id, item_id),
            ).fetchone()
            if row is None:
                continue
            db.execute("UPDATE items SET index_text = ? WHERE rowid = ?", (text, row[0]))
            db.execute("DELETE FROM keys_fts WHERE rowid = ?", (row[0],))
            if text:
                db.execute(
                    "INSERT INTO keys_fts(rowid, scope, keys) VALUES (?, ?, ?)",
                    (row[0], scope, text),
                )

    def _put_fulltext(
        self, db: sqlite3.Connection, rowid: int | None, scope: str, item: MemoryItem
    ) -> None:
        body, keys = _fts_columns(item)
        db.execute(
            "INSERT INTO items_fts(rowid, scope, body) VALUES (?, ?, ?)", (rowid, scope, body)
        )
        if keys:
            db.execute(
                "INSERT INTO keys_fts(rowid, scope, keys) VALUES (?, ?, ?)", (rowid, scope, keys)
            )

    def _drop_fulltext(self, db: sqlite3.Connection, rowid: int) -> None:
        db.execute("DELETE FROM items_fts WHERE rowid = ?", (rowid,))
        db.execute("DELETE FROM keys_fts WHERE rowid = ?", (rowid,))

    def _put_vector(
        self, db: sqlite3.Connection, rowid: int | None, scope: str, vector: np.ndarray
    ) -> None:
        db.execute(
            "INSERT OR REPLACE INTO vectors(item_rowid, scope, vec) VALUES (?, ?, ?)",
            (rowid, scope, vector.astype(np.float32).tobytes()),
        )
        db.execute("INSERT INTO vector_log(scope, item_rowid, op) VALUES (?, ?, 1)", (scope, rowid))

    def _write_history(
        self,
        db: sqlite3.Connection,
        item: MemoryItem,
        action: str,
        actor: str,
        at: str | None,
        reason: str | None,
        *,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
    ) -> None:
        self._history_row(
            db, item.id, item.user_id, item.cube_id, action, actor, at, reason, before, after
        )

    def _history_row(
        self,
        db: sqlite3.Connection,
        item_id: str,
        user_id: str,
        cube_id: str,
        action: str,
        actor: str,
        at: str | None,
        reason: str | None,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
    ) -> None:
        db.execute(
            "INSERT INTO history(item_id, user_id, cube_id, action, actor, at, reason, before,"
            " after) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                item_id,
                user_id,
                cube_id,
                action,
                actor,
                at,
                reason,
                json.dumps(before) if before is not None else None,
                json.dumps(after) if after is not None else None,
            ),
        )

    def put_vectors(
        self, user_id: str, cube_id: str, ids: Sequence[str], vectors: np.ndarray
    ) -> int:
        checked = self._check_vectors(vectors, len(ids))
        assert checked is not None
        scope = scope_key(user_id, cube_id)
        done = 0
        with self._tx() as db:
            for n, item_id in enumerate(ids):
                row = db.execute(
                    "SELECT rowid FROM items WHERE id = ? AND user_id = ? AND cube_id = ?",
                    (item_id, user_id, cube_id),
                ).fetchone()
                if row is not None:
                    self._put_vector(db, row[0], scope, checked[n])
                    done += 1
        with self._lock:
            if scope in self._indexes:
                self._sync_index(scope)
        return done

    def _rows_by_id(
        self, select: str, user_id: str, cube_id: str, ids: Sequence[str]
    ) -> list[sqlite3.Row]:
        """Rows of the scope's items among ``ids``, in chunks that fit SQLite's limits."""
        return _chunked(
            self._read,
            f"{select} FROM items i WHERE i.user_id = ? AND i.cube_id = ? AND i.id IN ({{marks}})",
            (user_id, cube_id),
            ids,
        )

    def get_items(self, user_id: str, cube_id: str, ids: Sequence[str]) -> list[MemoryItem]:
        found = {r["id"]: row_to_item(r) for r in self._rows_by_id(_SELECT, user_id, cube_id, ids)}
        return [found[i] for i in ids if i in found]

    def list_items(
        self,
        user_id: str,
        cube_id: str,
        flt: ItemFilter = ItemFilter(),
        *,
        limit: int = 100,
        offset: int = 0,
    ) -> list[MemoryItem]:
        where, params = _where(flt)
        rows = self._read(
            f"{_SELECT} FROM items i WHERE i.user_id = ? AND i.cube_id = ?{where} "
            "ORDER BY i.valid_from IS NULL, i.valid_from, i.rowid LIMIT ? OFFSET ?",
            (user_id, cube_id, *params, limit, offset),
        )
        return [row_to_item(r) for r in rows]

    def count_items(self, user_id: str, cube_id: str, flt: ItemFilter = ItemFilter()) -> int:
        where, params = _where(flt)
        rows = self._read(
            f"SELECT count(*) FROM items i WHERE i.user_id = ? AND i.cube_id = ?{where}",
            (user_id, cube_id, *params),
        )
        return int(rows[0][0])

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
        vectors = self._check_vectors(None if vector is None else vector[None, :], 1)
        with self._tx() as db:
            return self._update_row(
                db,
                item,
                None if vectors is None else vectors[0],
                actor=actor,
                action=action,
                reason=reason,
                expected_version=expected_version,
            )

    def _update_row(
        self,
        db: sqlite3.Connection,
        item: MemoryItem,
        vector: np.ndarray | None,
        *,
        actor: str,
        action: str,
        reason: str | None,
        expected_version: int | None,
    ) -> MemoryItem:
        """Replace a stored item inside the caller's transaction, with its history row."""
        row = db.execute(
            f"{_SELECT} FROM items i WHERE i.id = ? AND i.user_id = ? AND i.cube_id = ?",
            (item.id, item.user_id, item.cube_id),
        ).fetchone()
        if row is None:
            raise NotFound(f"no item {item.id} in cube {item.cube_id} of user {item.user_id}")
        old = row_to_item(row)
        if expected_version is not None and old.version != expected_version:
            raise Conflict(
                f"item {item.id} is at version {old.version}, not {expected_version}; "
                "re-read it and apply the change again"
            )
        new = item.model_copy(update={"updated_at": utcnow()})
        values = item_to_row(new)
        assignments = ", ".join(f"{c} = ?" for c in _ITEM_COLUMNS if c != "id")
        db.execute(
            f"UPDATE items SET {assignments} WHERE rowid = ?",
            [values[c] for c in _ITEM_COLUMNS if c != "id"] + [row["rowid_"]],
        )
        scope = scope_key(new.user_id, new.cube_id)
        if _fts_columns(new) != _fts_columns(old):
            self._drop_fulltext(db, row["rowid_"])
            self._put_fulltext(db, row["rowid_"], scope, new)
        if vector is not None:
            self._put_vector(db, row["rowid_"], scope, vector)
        self._write_history(
            db,
            new,
            action,
            actor,
            ts(new.updated_at),
            reason,
            before=_public(old),
            after=_public(new),
        )
        return new

    def purge_item(self, user_id: str, cube_id: str, item_id: str, *, actor: str) -> None:
        with self._tx() as db:
            row = db.execute(
                f"{_SELECT} FROM items i WHERE i.id = ? AND i.user_id = ? AND i.cube_id = ?",
                (item_id, user_id, cube_id),
            ).fetchone()
            if row is None:
                raise NotFound(f"no item {item_id} in cube {cube_id} of user {user_id}")
            rowid = row["rowid_"]
            scope = scope_key(user_id, cube_id)
            self._drop_fulltext(db, rowid)
            if db.execute("DELETE FROM vectors WHERE item_rowid = ?", (rowid,)).rowcount:
                db.execute(
                    "INSERT INTO vector_log(scope, item_rowid, op) VALUES (?, ?, 0)",
                    (scope, rowid),
                )
            db.execute("DELETE FROM items WHERE rowid = ?", (rowid,))
            # the tree and the graph only ever reference items that exist; the topic that held
            # it forgets the title, summary and centroid made from it (the next pass rewrites it)
            db.execute(
                "UPDATE topics SET title = '', summary = '', centroid = NULL "
                "WHERE user_id = ? AND cube_id = ? AND id IN (SELECT topic_id FROM topic_members "
                "WHERE user_id = ? AND cube_id = ? AND item_id = ?)",
                (user_id, cube_id, user_id, cube_id, item_id),
            )
            db.execute(
                "DELETE FROM topic_members WHERE user_id = ? AND cube_id = ? AND item_id = ?",
                (user_id, cube_id, item_id),
            )
            db.execute(
                "DELETE FROM edges WHERE user_id = ? AND cube_id = ? AND (src = ? OR dst = ?)",
                (user_id, cube_id, item_id, item_id),
            )
            # the content goes from history too: a purge is the owner's request to forget
            db.execute(
                "UPDATE history SET before = NULL, after = NULL "
                "WHERE user_id = ? AND cube_id = ? AND item_id = ?",
                (user_id, cube_id, item_id),
            )
            self._write_history(
                db,
                row_to_item(row),
                "purge",
                actor,
                ts(utcnow()),
                "purged on request",
                before=None,
                after=None,
            )

    def record_access(self, user_id: str, cube_id: str, ids: Sequence[str]) -> None:
        if not ids:
            return
        now = ts(utcnow())
        with self._tx() as db:
            db.executemany(
                "UPDATE items SET access_count = access_count + 1, last_accessed = ? "
                "WHERE user_id = ? AND cube_id = ? AND id = ?",
                [(now, user_id, cube_id, i) for i in ids],
            )

    def _generation(self) -> tuple[int, int]:
        """Changes whenever anyone commits: our own writes or another connection's."""
        return self._db.execute("PRAGMA data_version").fetchone()[0], self._writes

    def facets(
        self, user_id: str, cube_id: str, ids: Sequence[str]
    ) -> dict[str, tuple[str | None, str | None]]:
        rows = self._rows_by_id("SELECT i.id, i.speaker, i.session_id", user_id, cube_id, ids)
        return {r["id"]: (r["speaker"], r["session_id"]) for r in rows}

    def speakers(self, user_id: str, cube_id: str) -> list[str]:
        scope = scope_key(user_id, cube_id)
        with self._lock:
            generation = self._generation()
            cached = self._speakers.get(scope)
            if cached is not None and cached[0] == generation:
                return cached[1]
            rows = self._db.execute(
                "SELECT DISTINCT speaker FROM items WHERE user_id = ? AND cube_id = ? "
                "AND speaker IS NOT NULL",
                (user_id, cube_id),
            ).fetchall()
            names = sorted(r[0] for r in rows)
            self._speakers[scope] = (generation, names)
            return names

    def neighbors(
        self,
        user_id: str,
        cube_id: str,
        ids: Sequence[str],
        window: int,
        flt: ItemFilter = ItemFilter(),
    ) -> dict[str, list[tuple[str, int]]]:
        if window <= 0 or not ids:
            return {}
        where, params = _where(flt)
        out: dict[str, list[tuple[str, int]]] = {}
        with self._lock:
            for item_id in dict.fromkeys(ids):
                row = self._db.execute(
                    "SELECT rowid, session_id FROM items WHERE id = ? AND user_id = ? "
                    "AND cube_id = ?",
                    (item_id, user_id, cube_id),
                ).fetchone()
                if row is None or row["session_id"] is None:
                    continue
                found: list[tuple[str, int]] = []
                for op, order in (("<", "DESC"), (">", "ASC")):
                    near = self._db.execute(
                        f"SELECT i.id FROM items i WHERE i.user_id = ? AND i.cube_id = ? "
                        f"AND i.session_id = ? AND i.rowid {op} ?{where} "
                        f"ORDER BY i.rowid {order} LIMIT ?",
                        (user_id, cube_id, row["session_id"], row["rowid"], *params, window),
                    ).fetchall()
                    found.extend((r["id"], n) for n, r in enumerate(near, start=1))
                out[item_id] = found
        return out

    def session_tail(
        self, user_id: str, cube_id: str, session_id: str, n: int, kinds: Sequence[MemoryKind]
    ) -> list[MemoryItem]:
        if n <= 0 or not kinds:
            return []
        marks = ", ".join("?" for _ in kinds)
        # the session index names the session's rows in rowid order: without INDEXED BY the
        # planner may walk the whole scope through items_scope instead
        rows = self._read(
            f"{_SELECT} FROM items i INDEXED BY items_session WHERE i.user_id = ? "
            f"AND i.cube_id = ? AND i.session_id = ? AND i.status = ? AND i.kind IN ({marks}) "
            "ORDER BY i.rowid DESC LIMIT ?",
            (user_id, cube_id, session_id, MemoryStatus.ACTIVE.value, *(k.value for k in kinds), n),
        )
        return [row_to_item(r) for r in reversed(rows)]

    def history(self, user_id: str, cube_id: str, item_id: str) -> list[HistoryEntry]:
        rows = self._read(
            "SELECT * FROM history WHERE user_id = ? AND cube_id = ? AND item_id = ? ORDER BY id",
            (user_id, cube_id, item_id),
        )
        return [
            HistoryEntry(
                id=r["id"],
                item_id=r["item_id"],
                user_id=r["user_id"],
                cube_id=r["cube_id"],
                action=r["action"],
                actor=r["actor"],
                at=datetime.strptime(r["at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC),
                reason=r["reason"],
                before=json.loads(r["before"]) if r["before"] else None,
                after=json.loads(r["after"]) if r["after"] else None,
            )
            for r in rows
        ]

    # ------------------------------------------------------------------ tree and graph

    def topics(self, user_id: str, cube_id: str) -> list[TopicNode]:
        rows = self._read(
            "SELECT t.*, (SELECT count(*) FROM topic_members m WHERE m.user_id = t.user_id "
            "AND m.cube_id = t.cube_id AND m.topic_id = t.id) AS size FROM topics t "
            "WHERE t.user_id = ? AND t.cube_id = ? ORDER BY t.created_at, t.id",
            (user_id, cube_id),
        )
        return [
            TopicNode.model_construct(
                id=r["id"],
                user_id=r["user_id"],
                cube_id=r["cube_id"],
                title=r["title"],
                summary=r["summary"],
                size=int(r["size"]),
                version=int(r["version"]),
                centroid=None
                if r["centroid"] is None
                else np.frombuffer(r["centroid"], dtype=np.float32).tolist(),
                created_at=datetime.fromisoformat(r["created_at"]),
                updated_at=datetime.fromisoformat(r["updated_at"]),
            )
            for r in rows
        ]

    def topic_members(
        self, user_id: str, cube_id: str, topic_ids: Sequence[str] | None = None
    ) -> dict[str, str]:
        sql = "SELECT item_id, topic_id FROM topic_members WHERE user_id = ? AND cube_id = ?"
        if topic_ids is None:
            rows = self._read(sql + " ORDER BY item_id", (user_id, cube_id))
        else:
            rows = _chunked(
                self._read,
                sql + " AND topic_id IN ({marks}) ORDER BY item_id",
                (user_id, cube_id),
                topic_ids,
            )
        return {r["item_id"]: r["topic_id"] for r in rows}

    def links(
        self,
        user_id: str,
        cube_id: str,
        ids: Sequence[str] | None = None,
        kinds: Sequence[str] = (),
    ) -> list[Edge]:
        kind_sql = f" AND kind IN ({', '.join('?' for _ in kinds)})" if kinds else ""
        base = "SELECT * FROM edges WHERE user_id = ? AND cube_id = ?" + kind_sql
        rows: dict[tuple[str, str, str], sqlite3.Row] = {}
        if ids is None:
            for r in self._read(base, (user_id, cube_id, *kinds)):
                rows[(r["src"], r["kind"], r["dst"])] = r
        else:
            for r in _chunked(
                self._read,
                base + " AND (src IN ({marks}) OR dst IN ({marks}))",
                (user_id, cube_id, *kinds),
                ids,
                repeat=2,
                size=400,
            ):
                rows[(r["src"], r["kind"], r["dst"])] = r
        return [
            Edge.model_construct(
                user_id=r["user_id"],
                cube_id=r["cube_id"],
                src=r["src"],
                kind=r["kind"],
                dst=r["dst"],
                weight=float(r["weight"]),
                created_at=datetime.fromisoformat(r["created_at"]),
            )
            for _, r in sorted(rows.items())
        ]

    def organize(self, change: TreeChange, *, actor: str) -> None:
        if change.empty():
            return
        user_id, cube_id = change.user_id, change.cube_id
        scope = (user_id, cube_id)
        if any((c.item.user_id, c.item.cube_id) != scope for c in change.items) or any(
            (t.user_id, t.cube_id) != scope for t in change.topics
        ):
            raise InvalidInput("an organizing step works on one scope: its own items and topics")
        now = ts(utcnow())
        with self._tx() as db:
            if change.expected_topics is not None or change.expected_members is not None:
                topics = {
                    r[0]: r[1]
                    for r in db.execute(
                        "SELECT id, version FROM topics WHERE user_id = ? AND cube_id = ?",
                        (user_id, cube_id),
                    )
                }
                members = {
                    r[0]: r[1]
                    for r in db.execute(
                        "SELECT item_id, topic_id FROM topic_members "
                        "WHERE user_id = ? AND cube_id = ?",
                        (user_id, cube_id),
                    )
                }
                if tree_changed(change, topics, members):
                    raise Conflict("the tree changed while this pass was planned; plan again")
            for c in change.items:
                self._update_row(
                    db,
                    c.item,
                    None,
                    actor=actor,
                    action=c.action,
                    reason=c.reason,
                    expected_version=c.expected_version,
                )
            for topic_id in change.drop_topics:
                db.execute(
                    "DELETE FROM topics WHERE user_id = ? AND cube_id = ? AND id = ?",
                    (user_id, cube_id, topic_id),
                )
            for t in change.topics:
                centroid = (
                    None
                    if t.centroid is None
                    else np.asarray(t.centroid, dtype=np.float32).tobytes()
                )
                db.execute(
                    "INSERT INTO topics(user_id, cube_id, id, title, summary, centroid, version, "
                    "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT(user_id, cube_id, id) DO UPDATE SET title = excluded.title, "
                    "summary = excluded.summary, centroid = excluded.centroid, "
                    "version = excluded.version, updated_at = excluded.updated_at",
                    (
                        user_id,
                        cube_id,
                        t.id,
                        t.title,
                        t.summary,
                        centroid,
                        t.version,
                        ts(t.created_at),
                        ts(t.updated_at),
                    ),
                )
            db.executemany(
                "DELETE FROM topic_members WHERE user_id = ? AND cube_id = ? AND item_id = ?",
                [(user_id, cube_id, i) for i in change.unplace],
            )
            for item_id, topic_id in change.place.items():
                row = db.execute(
                    "SELECT topic_id FROM topic_members WHERE user_id = ? AND cube_id = ? "
                    "AND item_id = ?",
                    (user_id, cube_id, item_id),
                ).fetchone()
                if row is not None and row[0] == topic_id:
                    continue
                db.execute(
                    "INSERT OR REPLACE INTO topic_members(user_id, cube_id, item_id, topic_id) "
                    "VALUES (?, ?, ?, ?)",
                    (user_id, cube_id, item_id, topic_id),
                )
                if row is not None:
                    self._history_row(
                        db,
                        item_id,
                        user_id,
                        cube_id,
                        "move",
                        actor,
                        now,
                        change.move_reason,
                        {"topic_id": row[0]},
                        {"topic_id": topic_id},
                    )
            db.executemany(
                "DELETE FROM edges WHERE user_id = ? AND cube_id = ? AND src = ? AND kind = ? "
                "AND dst = ?",
                [(user_id, cube_id, *key) for key in change.drop_edges],
            )
            db.executemany(
                "INSERT OR IGNORE INTO edges(user_id, cube_id, src, kind, dst, weight, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (user_id, cube_id, e.src, e.kind, e.dst, e.weight, ts(e.created_at))
                    for e in change.add_edges
                    if (e.user_id, e.cube_id) == scope
                ],
            )
            for topic_id, action, reason, details in change.notes:
                self._history_row(
                    db, topic_id, user_id, cube_id, action, actor, now, reason, None, details
                )
            self._check_tree(db, user_id, cube_id, change)

    def _check_tree(
        self, db: sqlite3.Connection, user_id: str, cube_id: str, change: TreeChange
    ) -> None:
        """Refuse (and roll back) a step that would leave the tree or the graph pointing at
        a topic or an item that does not exist."""
        for topic_id in change.drop_topics:
            left = db.execute(
                "SELECT item_id FROM topic_members WHERE user_id = ? AND cube_id = ? "
                "AND topic_id = ? LIMIT 1",
                (user_id, cube_id, topic_id),
            ).fetchone()
            if left is not None:
                raise InvalidInput(
                    f"topic {topic_id} is dropped but item {left[0]} still sits under it; "
                    "place or unplace its items in the same step (nothing was changed)"
                )
        for topic_id in set(change.place.values()):
            if (
                db.execute(
                    "SELECT 1 FROM topics WHERE user_id = ? AND cube_id = ? AND id = ?",
                    (user_id, cube_id, topic_id),
                ).fetchone()
                is None
            ):
                raise InvalidInput(
                    f"items are placed under topic {topic_id}, which is not in this scope; "
                    "write the topic in the same step (nothing was changed)"
                )
        ends = {e.src for e in change.add_edges} | {e.dst for e in change.add_edges}
        ends |= set(change.place)
        if ends:
            found = {r["id"] for r in self._rows_by_id_in(db, user_id, cube_id, list(ends))}
            missing = sorted(ends - found)
            if missing:
                raise InvalidInput(
                    f"item {missing[0]} is linked or placed but is not in this scope; "
                    "nothing was changed"
                )

    def _rows_by_id_in(
        self, db: sqlite3.Connection, user_id: str, cube_id: str, ids: list[str]
    ) -> list[sqlite3.Row]:
        return _chunked(
            lambda sql, params: db.execute(sql, params).fetchall(),
            "SELECT id FROM items WHERE user_id = ? AND cube_id = ? AND id IN ({marks})",
            (user_id, cube_id),
            ids,
        )

    # ------------------------------------------------------------------ search

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
        words = fts_words(query)
        if not words or k <= 0:
            return []
        where, params = _where(flt)
        scope = scope_key(user_id, cube_id)
        # Own words and keys live in separate tables so that each has its own document
        # frequencies: a key repeats its neighbours' words, and in one table those repeats
        # would push common words past half the rows, where BM25's IDF turns to nothing.
        scores: dict[str, float] = {}
        with self._lock:
            if self._closed:
                raise StoreError(f"the store {self.path} is closed")
            tables = [(t, w) for t, w in (("items_fts", 1.0), ("keys_fts", keys_weight)) if w > 0]
            # both before the snapshot below: stems write a temporary table in a transaction
            # of their own, and a generation read first is at worst older than what is read
            # (the cache of posting lists then starts over once more, never serves old rows)
            tokens_of = self._stems(words)
            generation = self._generation()
            floor = functools.cache(functools.partial(self._window_floor, user_id, cube_id))
            # one snapshot for every read, so that counts, lengths and rows agree while
            # other processes commit
            self._db.execute("BEGIN")
            try:
                for table, weight in tables:
                    counts = self._counts(table, words, tokens_of)
                    if counts is None:  # a small table
                        found = self._bm25_small(
                            table,
                            scope,
                            words,
                            tokens_of,
                            generation,
                            user_id,
                            cube_id,
                            flt,
                            where,
                            params,
                            2 * k,
                        )
                    else:
                        found = self._bm25_scan(
                            table,
                            scope,
                            words,
                            counts,
                            user_id,
                            cube_id,
                            where,
                            params,
                            2 * k,
                            floor,
                        )
                    for item_id, score in found.items():
                        scores[item_id] = scores.get(item_id, 0.0) + weight * score
            finally:
                self._db.execute("ROLLBACK")
        best = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)[:k]
        return [Scored(item_id, score) for item_id, score in best]

    def _bm25_small(
        self,
        table: str,
        scope: str,
        words: list[str],
        tokens_of: list[list[str]] | None,
        generation: tuple[int, int],
        user_id: str,
        cube_id: str,
        flt: ItemFilter,
        where: str,
        params: list[Any],
        limit: int,
    ) -> dict[str, float]:
        """BM25 over a small table from posting lists kept in memory until the next commit
        (fts5_postings); FTS5's bm25() when they cannot tell (no fts5vocab, a phrase).
        ``where`` and ``params`` are ``flt`` in SQL."""
        stats = fts5_bm25.averages(self._db, table)
        ranked = None
        if stats is not None and tokens_of is not None:
            ranked = self._postings[table].rank(self._db, generation, scope, tokens_of, stats)
        if ranked is None:
            return self._bm25_fts5(table, scope, words, user_id, cube_id, where, params, limit)
        if flt != ItemFilter(statuses=flt.statuses, speaker=flt.speaker):
            # more than statuses and a speaker: the SQL decides
            return self._best_passing(*ranked, user_id, cube_id, where, params, limit)
        # statuses (the default, active items) and a speaker: from the scope's rows, kept in
        # memory like the posting lists (the table is small, and so is the scope)
        rows = self._scope_rows(scope, user_id, cube_id, generation)
        wanted = {MemoryStatus(x).value for x in flt.statuses}
        out: dict[str, float] = {}
        for rowid, score in zip(ranked[0].tolist(), ranked[1].tolist(), strict=True):
            row = rows.get(rowid)
            if (
                row is not None
                and (not wanted or row[1] in wanted)
                and (flt.speaker is None or row[2] == flt.speaker)
            ):
                out[row[0]] = score
                if len(out) >= limit:
                    break
        return out

    def _scope_rows(
        self, scope: str, user_id: str, cube_id: str, generation: tuple[int, int]
    ) -> dict[int, tuple[str, str, str | None]]:
        """rowid -> (id, status, speaker) of a small scope's items, until the next commit."""
        cached = self._scope_items.get(scope)
        if cached is not None and cached[0] == generation:
            return cached[1]
        rows = {
            r[0]: (r[1], r[2], r[3])
            for r in self._db.execute(
                "SELECT rowid, id, status, speaker FROM items WHERE user_id = ? AND cube_id = ?",
                (user_id, cube_id),
            )
        }
        if len(self._scope_items) >= SCOPES_KEPT:
            self._scope_items.clear()
        self._scope_items[scope] = (generation, rows)
        return rows

    def _bm25_fts5(
        self,
        table: str,
        scope: str,
        words: list[str],
        user_id: str,
        cube_id: str,
        where: str,
        params: list[Any],
        limit: int,
    ) -> dict[str, float]:
        """FTS5's own bm25() over every row of the scope that holds a word: the best
        ``limit`` rows. Each call walks every word's posting list (see fts5_bm25), which on
        a small table costs less than counting the words first."""
        rows = self._db.execute(
            f"SELECT i.id, bm25({table}, 0.0, 1.0) AS rank FROM {table} "
            f"JOIN items i ON i.rowid = {table}.rowid "
            f"WHERE {table} MATCH ? AND i.user_id = ? AND i.cube_id = ?{where} "
            "ORDER BY rank LIMIT ?",
            (f'scope : "{scope}" AND ({_or_query(words)})', user_id, cube_id, *params, limit),
        ).fetchall()
        # FTS5's bm25() is negative (lower is better): flipped so that higher is better
        return {r["id"]: -float(r["rank"]) for r in rows}

    def _bm25_scan(
        self,
        table: str,
        scope: str,
        words: list[str],
        counts: tuple[int, float, list[int]],
        user_id: str,
        cube_id: str,
        where: str,
        params: list[Any],
        limit: int,
        floor: Callable[[], int | None],
    ) -> dict[str, float]:
        """BM25 for a large table, summed in Python (fts5_bm25): the best ``limit`` rows of
        the scope that pass the filter.

        A narrow word (see FULLTEXT_BUDGET) is ranked by FTS5's bm25() alone, over all its
        rows: cheap, its list is short, and exactly FTS5's share. A broad word is looked up
        only among the scope's newest FULLTEXT_WINDOW rows (all of them in a smaller scope)
        and in the best older rows a narrow word found, and counts once a row: its repeats
        are not counted (FTS5 would re-read and re-tokenize each row to tell them; a
        broad word's IDF is small and BM25 saturates in repeats)."""
        total, avgdl, dfs = counts
        narrow, broad = split_terms(dfs, self.fulltext_budget)
        edge = (floor() or -1) if broad else -1
        ids: list[np.ndarray] = []
        shares: list[np.ndarray] = []
        for i in narrow:  # every scope's rows: the list is short; the filter drops others'
            found = self._db.execute(
                f"SELECT rowid, bm25({table}, 0.0, 1.0) FROM {table} WHERE {table} MATCH ?",
                (f'"{words[i]}"',),
            ).fetchall()
            if found:
                pairs = np.array(found, dtype=np.float64).reshape(-1, 2)
                ids.append(pairs[:, 0].astype(np.int64))
                shares.append(-pairs[:, 1])
        if broad:
            narrow_ids, narrow_scores = fts5_bm25.sum_by_row(ids, shares)
            # older rows found by a narrow word get their broad words' share too: the best
            # of them (a broad word adds at most 2.2 times its small IDF)
            old = narrow_ids <= edge
            best = np.argsort(-narrow_scores[old], kind="stable")[: max(4 * limit, 100)]
            older = narrow_ids[old][best].tolist()
            found_ids, found_weights = [], []
            for i in broad:
                weight = fts5_bm25.idf(total, min(dfs[i], total))
                rows = fts5_bm25.matching_rows(
                    self._db, table, f'scope : "{scope}" AND "{words[i]}"', above=edge
                )
                if older:
                    rows += fts5_bm25.matching_rows(self._db, table, f'"{words[i]}"', rowids=older)
                found_ids.append(np.array(rows, dtype=np.int64))
                found_weights.append(np.full(len(rows), weight))
            rows_b, weight_b = fts5_bm25.sum_by_row(found_ids, found_weights)
            if len(rows_b):
                lengths = fts5_bm25.row_lengths(self._db, table, rows_b)
                ids.append(rows_b)
                shares.append(fts5_bm25.term_score(weight_b, 1, lengths, avgdl))
        rowids, sums = fts5_bm25.sum_by_row(ids, shares)
        order = np.argsort(-sums, kind="stable")
        return self._best_passing(
            rowids[order], sums[order], user_id, cube_id, where, params, limit
        )

    def _best_passing(
        self,
        rowids: np.ndarray,
        scores: np.ndarray,
        user_id: str,
        cube_id: str,
        where: str,
        params: list[Any],
        limit: int,
    ) -> dict[str, float]:
        """id -> score of the first ``limit`` rows, in the given (rank) order, that are in
        the scope and pass the filter."""
        ranked, score_of = rowids.tolist(), scores.tolist()
        out: dict[str, float] = {}
        for start in range(0, len(ranked), 500):
            chunk = ranked[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            passed = dict(
                self._db.execute(  # NOT INDEXED: by rowid, not a walk of the scope's index
                    f"SELECT i.rowid, i.id FROM items i NOT INDEXED WHERE i.rowid IN ({marks}) "
                    f"AND i.user_id = ? AND i.cube_id = ?{where}",
                    (*chunk, user_id, cube_id, *params),
                ).fetchall()
            )
            for n, rowid in enumerate(chunk, start):
                if rowid in passed:
                    out[passed[rowid]] = score_of[n]
                    if len(out) >= limit:
                        return out
        return out

    def _window_floor(self, user_id: str, cube_id: str) -> int | None:
        """The rowid below the scope's FULLTEXT_WINDOW newest rows; None if it has fewer."""
        row = self._db.execute(
            "SELECT rowid FROM items INDEXED BY items_recent WHERE user_id = ? AND cube_id = ? "
            "ORDER BY rowid DESC LIMIT 1 OFFSET ?",
            (user_id, cube_id, self.fulltext_window),
        ).fetchone()
        return None if row is None else int(row[0])

    def _stems(self, words: Sequence[str]) -> list[list[str]] | None:
        """The tokens FTS5 makes of each word (porter stems), or None if it cannot say.

        Tokenized by a temporary FTS5 table on this connection (nothing is written to the
        database file): the same tokenizer as the items, so the stems are the ones stored.
        """
        try:
            if not self._fts_helpers:
                tokenize = "porter unicode61 remove_diacritics 2"
                for sql in (
                    f"CREATE VIRTUAL TABLE IF NOT EXISTS temp.mnemic_words "
                    f"USING fts5(w, tokenize = '{tokenize}')",
                    "CREATE VIRTUAL TABLE IF NOT EXISTS temp.mnemic_words_v "
                    "USING fts5vocab(temp, mnemic_words, 'instance')",
                    "CREATE VIRTUAL TABLE IF NOT EXISTS temp.mnemic_items_fts_v "
                    "USING fts5vocab(main, items_fts, 'row')",
                    "CREATE VIRTUAL TABLE IF NOT EXISTS temp.mnemic_keys_fts_v "
                    "USING fts5vocab(main, keys_fts, 'row')",
                    # posting lists of small tables (fts5_postings)
                    "CREATE VIRTUAL TABLE IF NOT EXISTS temp.mnemic_items_fts_i "
                    "USING fts5vocab(main, items_fts, 'instance')",
                    "CREATE VIRTUAL TABLE IF NOT EXISTS temp.mnemic_keys_fts_i "
                    "USING fts5vocab(main, keys_fts, 'instance')",
                ):
                    self._db.execute(sql)
                self._fts_helpers = True
            known = self._stem_of
            new = [w for w in dict.fromkeys(words) if w not in known]
            if new:
                if len(known) + len(new) > STEMS_KEPT:
                    known.clear()
                out: list[list[str]] = [[] for _ in new]
                # written and rolled back in one transaction: only the temporary table is
                # touched
                self._db.execute("BEGIN")
                try:
                    self._db.executemany(
                        "INSERT INTO temp.mnemic_words(rowid, w) VALUES (?, ?)", enumerate(new)
                    )
                    for r in self._db.execute(
                        "SELECT doc, term FROM temp.mnemic_words_v ORDER BY doc, offset"
                    ):
                        out[r[0]].append(r[1])
                finally:
                    self._db.execute("ROLLBACK")
                known.update(zip(new, out, strict=True))
            return [known[w] for w in words]
        except sqlite3.Error:
            return None  # no fts5vocab: every term is searched at once, as before

    def _counts(
        self,
        table: str,
        words: Sequence[str],
        tokens_of: list[list[str]] | None,
    ) -> tuple[int, float, list[int]] | None:
        """The table's row count, average row length and each word's row count (FTS5's own
        statistics, table-wide, as its bm25() uses them); None for a table under
        FTS_PRUNE_ROWS rows or when the counts are unknown.

        A count walks the word's posting list (~130 ms for a word in most of 1M rows), so
        the counts of broad words (over FULLTEXT_BUDGET) are kept and reused until the
        table's row count moves by more than 1/32; narrow words are counted each time."""
        try:
            stats = fts5_bm25.averages(self._db, table)
            if stats is None or stats[0] < FTS_PRUNE_ROWS:
                return None
            total, avgdl = stats
            if tokens_of is None:
                return None
            counts: list[int] = []
            for word, tokens in zip(words, tokens_of, strict=True):
                if len(tokens) != 1:  # a phrase to FTS5: its rows counted by a match
                    found = self._db.execute(
                        f"SELECT count(*) FROM {table} WHERE {table} MATCH ?", (f'"{word}"',)
                    ).fetchone()
                    counts.append(int(found[0]))
                    continue
                cached = self._row_counts.get((table, tokens[0]))
                if cached is not None and abs(total - cached[1]) * 32 <= cached[1]:
                    counts.append(cached[0])
                    continue
                found = self._db.execute(
                    f"SELECT doc FROM temp.mnemic_{table}_v WHERE term = ?", (tokens[0],)
                ).fetchone()
                df = 0 if found is None else int(found[0])
                if df > self.fulltext_budget:
                    self._row_counts[(table, tokens[0])] = (df, total)
                counts.append(df)
            return total, avgdl, counts
        except (sqlite3.Error, IndexError):
            return None

    def vector_search(
        self,
        user_id: str,
        cube_id: str,
        vector: np.ndarray,
        k: int,
        flt: ItemFilter = ItemFilter(),
    ) -> list[Scored]:
        if k <= 0:
            return []
        scope = scope_key(user_id, cube_id)
        with self._lock:
            if self._closed:
                raise StoreError(f"the store {self.path} is closed")
            entry = self._sync_index(scope)
            if entry is None or len(entry.index) == 0:
                return []
            size = len(entry.index)
            where, params = _where(flt)
            want = min(size, max(4 * k, 64))
            while True:
                keys, sims = entry.index.search(np.asarray(vector, dtype=np.float32), want)
                if len(keys) == 0:
                    return []
                sim_of = {int(key): float(s) for key, s in zip(keys, sims, strict=True)}
                found: list[Scored] = []
                for start in range(0, len(keys), 500):
                    chunk = [int(x) for x in keys[start : start + 500]]
                    marks = ", ".join("?" for _ in chunk)
                    # NOT INDEXED: look the candidates up by rowid. Left to itself the
                    # planner prefers items_scope (user, cube, status) and walks every row
                    # of the scope to find these few: 30 ms at 100k, 185 ms at 1M.
                    rows = self._db.execute(
                        f"SELECT i.rowid AS r, i.id FROM items i NOT INDEXED "
                        f"WHERE i.rowid IN ({marks}) AND i.user_id = ? AND i.cube_id = ?{where}",
                        (*chunk, user_id, cube_id, *params),
                    ).fetchall()
                    found.extend(Scored(r["id"], sim_of[r["r"]]) for r in rows)
                # filters may reject many candidates: widen the net until k pass or all seen
                if len(found) >= k or want >= size:
                    found.sort(key=lambda s: s.score, reverse=True)
                    return found[:k]
                wider = min(size, want * 4)
                # the filter's rows in the scope, as the candidates tell (one more than they
                # hold, so that none among them is not taken for none at all)
                passing = (len(found) + 1) / want * size
                if want >= FILTERED_ANN_MAX or (_indexed_narrowing(flt) and passing <= wider):
                    # fewer than k in thousands of nearest candidates, or a filter on an
                    # indexed column (a session, a speaker) that holds fewer rows than the
                    # wider net would look up: the filter holds a sliver of the scope.
                    # Scoring its rows is exact and cheaper than widening the net.
                    return self._exact_search(user_id, cube_id, vector, k, where, params)
                want = wider

    def _exact_search(
        self,
        user_id: str,
        cube_id: str,
        vector: np.ndarray,
        k: int,
        where: str,
        params: list[Any],
    ) -> list[Scored]:
        """Cosine against the stored vector of every item that passes the filter."""
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        query = query / np.linalg.norm(query)
        cursor = self._db.cursor()
        cursor.row_factory = None  # plain tuples: this may walk many rows
        cursor.execute(
            "SELECT i.id, v.vec FROM items i JOIN vectors v ON v.item_rowid = i.rowid "
            f"WHERE i.user_id = ? AND i.cube_id = ?{where}",
            (user_id, cube_id, *params),
        )
        best: list[Scored] = []
        while rows := cursor.fetchmany(5000):
            vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32)
            vecs = vecs.reshape(len(rows), -1)
            norms = np.linalg.norm(vecs, axis=1)
            sims = (vecs @ query) / np.where(norms > 0, norms, 1.0)
            top = np.argpartition(-sims, k - 1)[:k] if len(rows) > k else range(len(rows))
            best.extend(Scored(rows[int(i)][0], float(sims[i])) for i in top)
            best.sort(key=lambda s: (-s.score, s.item_id))
            del best[k:]
        return best

    # ------------------------------------------------------------------ vector index upkeep

    def _snapshot_paths(self, scope: str) -> tuple[Path, Path]:
        return self._snapshots / f"{scope}.usearch", self._snapshots / f"{scope}.json"

    def _sync_index(self, scope: str) -> _ScopeIndex | None:
        """Bring the scope's HNSW index up to date with the vector log (call under the lock)."""
        head = self._db.execute(
            "SELECT max(seq) FROM vector_log WHERE scope = ?", (scope,)
        ).fetchone()[0]
        entry = self._indexes.get(scope)
        if entry is None:
            if head is None:
                return None
            entry = self._load_snapshot(scope)
            self._indexes[scope] = entry
        if head is None or head <= entry.seq:
            return entry
        oldest = self._db.execute(
            "SELECT min(seq) FROM vector_log WHERE scope = ?", (scope,)
        ).fetchone()[0]
        if entry.seq and oldest is not None and oldest > entry.seq + 1:
            # log entries we never saw were compacted away: rebuild from the table
            entry = self._rebuild(scope)
            self._indexes[scope] = entry
            return entry
        ops = self._db.execute(
            "SELECT seq, item_rowid, op FROM vector_log WHERE scope = ? AND seq > ? ORDER BY seq",
            (scope, entry.seq),
        ).fetchall()
        latest: dict[int, int] = {}
        for op in ops:
            latest[op["item_rowid"]] = op["op"]
        removed = [rowid for rowid, op in latest.items() if op == 0]
        added = [rowid for rowid, op in latest.items() if op == 1]
        if removed:
            entry.index.remove(np.asarray(removed, dtype=np.int64))
        for start in range(0, len(added), 2000):
            chunk = added[start : start + 2000]
            marks = ", ".join("?" for _ in chunk)
            rows = self._db.execute(
                f"SELECT item_rowid, vec FROM vectors WHERE item_rowid IN ({marks})", chunk
            ).fetchall()
            if rows:
                keys = np.asarray([r["item_rowid"] for r in rows], dtype=np.int64)
                vecs = np.stack([np.frombuffer(r["vec"], dtype=np.float32) for r in rows])
                entry.index.add(keys, vecs)
        entry.seq = int(ops[-1]["seq"]) if ops else entry.seq
        entry.unsaved += len(ops)
        if entry.unsaved >= SNAPSHOT_EVERY:
            self._save_snapshot(scope, entry)
        return entry

    def _rebuild(self, scope: str) -> _ScopeIndex:
        seq = self._db.execute(
            "SELECT coalesce(max(seq), 0) FROM vector_log WHERE scope = ?", (scope,)
        ).fetchone()[0]
        # f16 halves memory with the recall of f32 (0.996 at 1M, ef 512); rows keep f32
        index = VectorIndex(self._require_dim(), dtype="f16")
        cursor = self._db.execute(
            "SELECT item_rowid, vec FROM vectors WHERE scope = ? ORDER BY item_rowid", (scope,)
        )
        while rows := cursor.fetchmany(5000):
            keys = np.asarray([r["item_rowid"] for r in rows], dtype=np.int64)
            vecs = np.stack([np.frombuffer(r["vec"], dtype=np.float32) for r in rows])
            index.add(keys, vecs)
        return _ScopeIndex(index=index, seq=int(seq), unsaved=1)

    def _require_dim(self) -> int:
        if self.dim is None:
            row = self._db.execute("SELECT vec FROM vectors LIMIT 1").fetchone()
            if row is None:
                raise StoreError("the store holds no vectors yet, so their dimension is unknown")
            self.dim = len(row["vec"]) // 4
        return self.dim

    def _load_snapshot(self, scope: str) -> _ScopeIndex:
        index_path, meta_path = self._snapshot_paths(scope)
        if index_path.exists() and meta_path.exists():
            try:
                meta = json.loads(meta_path.read_text())
                index = VectorIndex.load(index_path, self._require_dim())
                return _ScopeIndex(index=index, seq=int(meta["seq"]))
            except Exception:  # a bad snapshot is only a cache: rebuild it from the rows
                pass
        return self._rebuild(scope)

    def _save_snapshot(self, scope: str, entry: _ScopeIndex) -> None:
        """Write the index, then its watermark. Replaying the log over a newer index is
        harmless (adds are upserts, removes of absent keys do nothing), so the order is safe."""
        index_path, meta_path = self._snapshot_paths(scope)
        try:
            self._snapshots.mkdir(parents=True, exist_ok=True)
            entry.index.save(index_path)
            tmp = meta_path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps({"seq": entry.seq}))
            tmp.replace(meta_path)
            entry.unsaved = 0
        except OSError:
            pass  # the snapshot is a cache; the next open rebuilds what it lacks

    def backup(self, dest: str | Path) -> dict[str, Any]:
        """An online, consistent copy of the database in the new folder ``dest``, with a
        manifest of its hash and counts (:mod:`mnemic.infra.store.backup`)."""
        from mnemic.infra.store import backup

        with self._lock:
            return backup.backup(self._db, Path(dest))

    def flush(self) -> None:
        """Save every index snapshot that is behind; cheap to call, done on close."""
        with self._lock:
            for scope, entry in self._indexes.items():
                if entry.unsaved:
                    self._save_snapshot(scope, entry)

    # ------------------------------------------------------------------ whole cubes

    def get_vectors(self, user_id: str, cube_id: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        rows = _chunked(
            self._read,
            "SELECT i.id, v.vec FROM items i JOIN vectors v ON v.item_rowid = i.rowid "
            "WHERE i.user_id = ? AND i.cube_id = ? AND i.id IN ({marks})",
            (user_id, cube_id),
            ids,
        )
        return {r["id"]: np.frombuffer(r["vec"], dtype=np.float32).copy() for r in rows}

    def import_items(
        self,
        items: Sequence[MemoryItem],
        vectors: Sequence[np.ndarray | None] | None,
        history: Sequence[HistoryEntry],
        *,
        cube: CubeManifest | None = None,
    ) -> None:
        if vectors is not None and len(vectors) != len(items):
            raise InvalidInput(f"expected {len(items)} vectors (or None), got {len(vectors)}")
        present = [v for v in vectors or () if v is not None]
        if present:
            self._check_vectors(np.stack(present), len(present))
        with self._tx() as db:
            if cube is not None:
                try:
                    db.execute(
                        "INSERT INTO cubes(cube_id, owner_id, manifest) VALUES (?, ?, ?)",
                        (cube.cube_id, cube.owner_id, cube.model_dump_json()),
                    )
                except sqlite3.IntegrityError as exc:
                    raise Conflict(
                        f"cube {cube.cube_id!r} exists already; load under another cube id"
                    ) from exc
            for n, item in enumerate(items):
                row = item_to_row(item)
                try:
                    rowid = db.execute(_INSERT_ITEM, [row[c] for c in _ITEM_COLUMNS]).lastrowid
                except sqlite3.IntegrityError as exc:
                    raise Conflict(
                        f"an item with id {item.id} already exists in this store (was this "
                        "cube loaded here before?)"
                    ) from exc
                scope = scope_key(item.user_id, item.cube_id)
                self._put_fulltext(db, rowid, scope, item)
                vector = None if vectors is None else vectors[n]
                if vector is not None:
                    self._put_vector(db, rowid, scope, np.asarray(vector, dtype=np.float32))
            db.executemany(
                "INSERT INTO history(item_id, user_id, cube_id, action, actor, at, reason, "
                "before, after) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        h.item_id,
                        h.user_id,
                        h.cube_id,
                        h.action,
                        h.actor,
                        ts(h.at),
                        h.reason,
                        None if h.before is None else json.dumps(h.before),
                        None if h.after is None else json.dumps(h.after),
                    )
                    for h in history
                ],
            )
        with self._lock:
            for scope in {scope_key(i.user_id, i.cube_id) for i in items}:
                if scope in self._indexes:
                    self._sync_index(scope)


def _public(item: MemoryItem) -> dict[str, Any]:
    return item.model_dump(mode="json")


def _fts_columns(item: MemoryItem) -> tuple[str, str]:
    """What full-text search sees: the item's own words (with its speaker), and its keys."""
    body = f"{item.speaker}: {item.text}" if item.speaker else item.text
    return body, item.index_text or ""


def _indexed_narrowing(flt: ItemFilter) -> bool:
    """Whether the filter's rows are found through an index of their own (items_session,
    items_speaker), so that reading them costs about as many rows as they are."""
    return flt.session_id is not None or flt.speaker is not None


def _where(flt: ItemFilter) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if flt.statuses:
        clauses.append(f"i.status IN ({', '.join('?' for _ in flt.statuses)})")
        params.extend(MemoryStatus(s).value for s in flt.statuses)
    if flt.kinds:
        clauses.append(f"i.kind IN ({', '.join('?' for _ in flt.kinds)})")
        params.extend(str(k) for k in flt.kinds)
    if flt.session_id is not None:
        clauses.append("i.session_id = ?")
        params.append(flt.session_id)
    if flt.agent_id is not None:
        clauses.append("i.agent_id = ?")
        params.append(flt.agent_id)
    if flt.speaker is not None:
        clauses.append("i.speaker = ?")
        params.append(flt.speaker)
    for tag in flt.tags:
        clauses.append("EXISTS (SELECT 1 FROM json_each(i.tags) WHERE json_each.value = ?)")
        params.append(tag)
    if flt.valid_after is not None:
        clauses.append("i.valid_from >= ?")
        params.append(ts(flt.valid_after))
    if flt.valid_before is not None:
        clauses.append("i.valid_from < ?")
        params.append(ts(flt.valid_before))
    if flt.as_of is not None:
        at = ts(flt.as_of)
        clauses.append("(i.valid_from IS NULL OR i.valid_from <= ?)")
        clauses.append("(i.valid_to IS NULL OR i.valid_to > ?)")
        params.extend([at, at])
    if flt.known_at is not None:
        clauses.append("i.recorded_at <= ?")
        params.append(ts(flt.known_at))
    return ("".join(f" AND {c}" for c in clauses), params)


def _split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def _chunked(
    read: Callable[[str, Sequence[Any]], Iterable[sqlite3.Row]],
    sql: str,
    params: Sequence[Any],
    ids: Sequence[str],
    *,
    repeat: int = 1,
    size: int = 500,
) -> list[sqlite3.Row]:
    """``sql`` run over the distinct ``ids`` in chunks that fit SQLite's variable limit: its
    ``{marks}`` (``repeat`` of them) become one chunk's placeholders, bound after ``params``."""
    rows: list[sqlite3.Row] = []
    unique = list(dict.fromkeys(ids))
    for start in range(0, len(unique), size):
        chunk = unique[start : start + size]
        marks = ", ".join("?" for _ in chunk)
        rows.extend(read(sql.format(marks=marks), (*params, *chunk * repeat)))
    return rows
