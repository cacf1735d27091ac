"""The server store: PostgreSQL with pgvector (HNSW) for vectors and tsvector/GIN for BM25.

Same contract as :class:`~mnemic.infra.store.sqlite.SQLiteStore`, for many processes and
hosts on one database. Every per-user table has ``user_id, cube_id`` leading its primary
key and no foreign keys, so it can be distributed by ``user_id`` with Citus (docs/scale.md);
``cubes``, ``mnemic_meta`` and ``mnemic_migrations`` are small reference tables.

Three choices keep search indexed however many users share the tables:

* each item's tsvectors carry a token naming its (user, cube) scope, so a full-text query
  is ``scope AND (term OR term ...)`` answered inside the GIN index;
* ``scopes`` keeps each scope's item and vector counts (updated in the writing
  transaction): a vector search over a small scope is exact, over a large one it goes
  through the HNSW index with ``hnsw.ef_search`` raised for the filter, and falls back to
  exact search if the filter left fewer than ``k`` rows;
* ``scopes.generation`` moves with every write, so per-scope caches (speakers) stay valid
  across processes for the price of one primary-key lookup.

psycopg 3 is imported lazily: ``pip install 'mnemic[postgres]'``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mnemic.errors import (
    ConfigError,
    Conflict,
    InvalidInput,
    NotFound,
    SchemaTooNew,
    StoreError,
)
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

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

# Numbered, append-only migrations: migration i brings the schema from version i to i + 1.
# The text-search configuration is English snowball stemming without a stopword list (like
# SQLite's porter tokenizer): stopwords are dropped from queries, not from the index.
MIGRATIONS: list[str] = [
    """
    CREATE TEXT SEARCH DICTIONARY mnemic_stem (TEMPLATE = snowball, Language = english);
    CREATE TEXT SEARCH CONFIGURATION mnemic (COPY = pg_catalog.english);
    ALTER TEXT SEARCH CONFIGURATION mnemic
        ALTER MAPPING FOR asciiword, asciihword, hword_asciipart, word, hword, hword_part
        WITH mnemic_stem;
    CREATE FUNCTION mnemic_tokens(tsvector) RETURNS INTEGER
        LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
        AS $$ SELECT coalesce(sum(array_length(positions, 1)), 0)::int FROM unnest($1) $$;
    CREATE TABLE mnemic_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE cubes (
        cube_id TEXT PRIMARY KEY,
        owner_id TEXT NOT NULL,
        manifest TEXT NOT NULL
    );
    CREATE INDEX cubes_owner ON cubes (owner_id, cube_id);
    CREATE TABLE scopes (
        user_id TEXT NOT NULL,
        cube_id TEXT NOT NULL,
        items BIGINT NOT NULL DEFAULT 0,
        vectors BIGINT NOT NULL DEFAULT 0,
        generation BIGINT NOT NULL DEFAULT 0,
        keyed BIGINT NOT NULL DEFAULT 0,
        body_tokens BIGINT NOT NULL DEFAULT 0,
        keys_tokens BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (user_id, cube_id)
    );
    CREATE TABLE items (
        user_id TEXT NOT NULL,
        cube_id TEXT NOT NULL,
        id TEXT NOT NULL,
        seq BIGINT GENERATED ALWAYS AS IDENTITY,
        scope TEXT NOT NULL,
        session_id TEXT,
        agent_id TEXT,
        text TEXT NOT NULL,
        index_text TEXT,
        kind TEXT NOT NULL,
        layer TEXT NOT NULL,
        status TEXT NOT NULL,
        version INTEGER NOT NULL,
        supersedes TEXT,
        valid_from TIMESTAMPTZ,
        valid_to TIMESTAMPTZ,
        created_at TIMESTAMPTZ NOT NULL,
        recorded_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL,
        expires_at TIMESTAMPTZ,
        speaker TEXT,
        source JSONB NOT NULL,
        entities JSONB NOT NULL,
        tags JSONB NOT NULL,
        confidence DOUBLE PRECISION NOT NULL,
        importance DOUBLE PRECISION NOT NULL,
        access_count INTEGER NOT NULL,
        last_accessed TIMESTAMPTZ,
        metadata JSONB NOT NULL,
        embedding vector,
        body_tsv tsvector GENERATED ALWAYS AS (
            to_tsvector('simple', scope)
            || to_tsvector('mnemic', coalesce(speaker || ': ', '') || text)
        ) STORED,
        keys_tsv tsvector GENERATED ALWAYS AS (
            to_tsvector('simple', scope) || to_tsvector('mnemic', coalesce(index_text, ''))
        ) STORED,
        body_len INTEGER GENERATED ALWAYS AS (
            mnemic_tokens(to_tsvector('mnemic', coalesce(speaker || ': ', '') || text))
        ) STORED,
        keys_len INTEGER GENERATED ALWAYS AS (
            mnemic_tokens(to_tsvector('mnemic', coalesce(index_text, '')))
        ) STORED,
        PRIMARY KEY (user_id, cube_id, id)
    );
    CREATE INDEX items_status ON items (user_id, cube_id, status, valid_from);
    CREATE INDEX items_session ON items (user_id, cube_id, session_id, seq);
    CREATE INDEX items_speaker ON items (user_id, cube_id, speaker);
    CREATE INDEX items_body_tsv ON items USING gin (body_tsv);
    CREATE INDEX items_keys_tsv ON items USING gin (keys_tsv);
    CREATE TABLE history (
        user_id TEXT NOT NULL,
        cube_id TEXT NOT NULL,
        item_id TEXT NOT NULL,
        id BIGINT GENERATED ALWAYS AS IDENTITY,
        action TEXT NOT NULL,
        actor TEXT NOT NULL,
        at TIMESTAMPTZ NOT NULL,
        reason TEXT,
        before JSONB,
        after JSONB,
        PRIMARY KEY (user_id, cube_id, item_id, id)
    );
    """,
    # 2: cube sharing; like cubes, a small reference table (a grant names a cube, not a scope)
    """
    CREATE TABLE grants (
        cube_id TEXT NOT NULL,
        grantee TEXT NOT NULL,
        access TEXT NOT NULL CHECK (access IN ('read', 'write')),
        granted_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (cube_id, grantee)
    );
    CREATE INDEX grants_grantee ON grants (grantee);
    """,
    # 3: the memory tree (topics over items) and the graph of cross-links between items;
    # per-user tables: (user_id, cube_id) lead every key, no foreign keys (Citus-ready)
    """
    CREATE TABLE topics (
        user_id TEXT NOT NULL,
        cube_id TEXT NOT NULL,
        id TEXT NOT NULL,
        title TEXT NOT NULL,
        summary TEXT NOT NULL,
        centroid BYTEA,
        version INTEGER NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (user_id, cube_id, id)
    );
    CREATE TABLE topic_members (
        user_id TEXT NOT NULL,
        cube_id TEXT NOT NULL,
        item_id TEXT NOT NULL,
        topic_id TEXT NOT NULL,
        PRIMARY KEY (user_id, cube_id, item_id)
    );
    CREATE INDEX topic_members_topic ON topic_members (user_id, cube_id, topic_id);
    CREATE TABLE edges (
        user_id TEXT NOT NULL,
        cube_id TEXT NOT NULL,
        src TEXT NOT NULL,
        kind TEXT NOT NULL,
        dst TEXT NOT NULL,
        weight DOUBLE PRECISION NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (user_id, cube_id, src, kind, dst)
    );
    CREATE INDEX edges_dst ON edges (user_id, cube_id, dst);
    """,
    # 4: BM25 from posting lists. One row per (scope, column, term, item) with the term's
    # frequency and the row's length, kept by statement triggers on items (every write path,
    # migrate-store and restores included), and each term's document frequency per scope:
    # a query reads its terms' postings by key instead of scoring rows one by one in SQL.
    # col 0 is an item's own words (body_tsv), 1 its index keys (keys_tsv); the scope's
    # own token is not a term. (user_id, cube_id) lead every key (Citus-ready).
    """
    CREATE TABLE postings (
        user_id TEXT NOT NULL,
        cube_id TEXT NOT NULL,
        col SMALLINT NOT NULL,
        term TEXT NOT NULL,
        seq BIGINT NOT NULL,
        tf SMALLINT NOT NULL,
        dl INTEGER NOT NULL,
        -- covering: a query reads a term's postings from the index alone
        PRIMARY KEY (user_id, cube_id, col, term, seq) INCLUDE (tf, dl)
    );
    CREATE TABLE term_stats (
        user_id TEXT NOT NULL,
        cube_id TEXT NOT NULL,
        col SMALLINT NOT NULL,
        term TEXT NOT NULL,
        df BIGINT NOT NULL,
        PRIMARY KEY (user_id, cube_id, col, term)
    );
    CREATE INDEX items_recent ON items (user_id, cube_id, seq);
    -- the terms of one row's column: (user, cube, col, term, seq, tf, dl); dl counts the
    -- scope token, as FTS5 counts its scope column
    CREATE FUNCTION mnemic_row_postings(
        in_user TEXT, in_cube TEXT, in_scope TEXT, in_seq BIGINT, in_body tsvector,
        in_body_len INTEGER, in_keys tsvector, in_keys_len INTEGER
    ) RETURNS TABLE (user_id TEXT, cube_id TEXT, col SMALLINT, term TEXT, seq BIGINT,
                     tf SMALLINT, dl INTEGER)
        LANGUAGE sql IMMUTABLE PARALLEL SAFE
        AS $$
        SELECT in_user, in_cube, v.c, t.lexeme, in_seq,
               least(coalesce(array_length(t.positions, 1), 1), 32767)::smallint, v.len + 1
        FROM (VALUES (0::smallint, in_body, in_body_len), (1::smallint, in_keys, in_keys_len))
             AS v(c, tsv, len)
        CROSS JOIN LATERAL unnest(v.tsv) AS t
        WHERE t.lexeme <> in_scope
        $$;
    -- rows in: their postings added and their terms counted; rows out: the reverse
    CREATE FUNCTION mnemic_postings_insert(added items[]) RETURNS void LANGUAGE sql AS $$
        WITH inserted AS (
            INSERT INTO postings (user_id, cube_id, col, term, seq, tf, dl)
            SELECT p.* FROM unnest(added) n CROSS JOIN LATERAL mnemic_row_postings(
                n.user_id, n.cube_id, n.scope, n.seq, n.body_tsv, n.body_len,
                n.keys_tsv, n.keys_len) AS p
            ON CONFLICT DO NOTHING
            RETURNING user_id, cube_id, col, term
        )
        INSERT INTO term_stats AS s (user_id, cube_id, col, term, df)
        SELECT user_id, cube_id, col, term, count(*) FROM inserted
        GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
        ON CONFLICT (user_id, cube_id, col, term) DO UPDATE SET df = s.df + EXCLUDED.df
        $$;
    CREATE FUNCTION mnemic_postings_remove(gone items[]) RETURNS void LANGUAGE sql AS $$
        WITH dropped AS (
            DELETE FROM postings AS p USING unnest(gone) o
            CROSS JOIN LATERAL mnemic_row_postings(
                o.user_id, o.cube_id, o.scope, o.seq, o.body_tsv, o.body_len,
                o.keys_tsv, o.keys_len) AS d
            WHERE p.user_id = d.user_id AND p.cube_id = d.cube_id AND p.col = d.col
              AND p.term = d.term AND p.seq = d.seq
            RETURNING p.user_id, p.cube_id, p.col, p.term
        ), counted AS (
            SELECT user_id, cube_id, col, term, count(*) AS n FROM dropped GROUP BY 1, 2, 3, 4
        )
        UPDATE term_stats AS s SET df = s.df - c.n FROM counted c
        WHERE s.user_id = c.user_id AND s.cube_id = c.cube_id AND s.col = c.col
          AND s.term = c.term
        $$;
    CREATE FUNCTION mnemic_postings_add() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM mnemic_postings_insert(ARRAY(SELECT n::items FROM new_rows n));
        RETURN NULL;
    END $$;
    CREATE FUNCTION mnemic_postings_drop() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM mnemic_postings_remove(ARRAY(SELECT o::items FROM old_rows o));
        RETURN NULL;
    END $$;
    -- an update re-indexes only the rows whose words or scope changed (most updates touch
    -- access counts or statuses): old postings out, new ones in
    CREATE FUNCTION mnemic_postings_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM mnemic_postings_remove(ARRAY(
            SELECT o::items FROM old_rows o JOIN new_rows n ON n.seq = o.seq
            WHERE (o.body_tsv IS DISTINCT FROM n.body_tsv OR o.keys_tsv IS DISTINCT FROM n.keys_tsv
                   OR o.user_id <> n.user_id OR o.cube_id <> n.cube_id)));
        PERFORM mnemic_postings_insert(ARRAY(
            SELECT n::items FROM new_rows n JOIN old_rows o ON o.seq = n.seq
            WHERE (o.body_tsv IS DISTINCT FROM n.body_tsv OR o.keys_tsv IS DISTINCT FROM n.keys_tsv
                   OR o.user_id <> n.user_id OR o.cube_id <> n.cube_id)));
        RETURN NULL;
    END $$;
    INSERT INTO postings (user_id, cube_id, col, term, seq, tf, dl)
    SELECT p.* FROM items i CROSS JOIN LATERAL mnemic_row_postings(
        i.user_id, i.cube_id, i.scope, i.seq, i.body_tsv, i.body_len, i.keys_tsv, i.keys_len
    ) AS p;
    INSERT INTO term_stats (user_id, cube_id, col, term, df)
    SELECT user_id, cube_id, col, term, count(*) FROM postings GROUP BY 1, 2, 3, 4;
    CREATE TRIGGER items_postings_add AFTER INSERT ON items
        REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
        EXECUTE FUNCTION mnemic_postings_add();
    CREATE TRIGGER items_postings_drop AFTER DELETE ON items
        REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT
        EXECUTE FUNCTION mnemic_postings_drop();
    CREATE TRIGGER items_postings_change AFTER UPDATE ON items
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT
        EXECUTE FUNCTION mnemic_postings_change();
    -- full text reads the postings now; the GIN indexes only slowed writes
    DROP INDEX items_body_tsv;
    DROP INDEX items_keys_tsv;
    """,
]

# fmt: off
ITEM_COLUMNS = (
    "id", "user_id", "cube_id", "session_id", "agent_id", "text", "index_text", "kind",
    "layer", "status", "version", "supersedes", "valid_from", "valid_to", "created_at",
    "recorded_at", "updated_at", "expires_at", "speaker", "source", "entities", "tags",
    "confidence", "importance", "access_count", "last_accessed", "metadata",
)
# fmt: on
_JSON_COLUMNS = ("source", "entities", "tags", "metadata")
_TIME_COLUMNS = tuple(
    name
    for name, field in MemoryItem.model_fields.items()
    if field.annotation in (datetime, datetime | None)
)
_SELECT = "SELECT " + ", ".join(f"i.{c}" for c in ITEM_COLUMNS)
_ITEM_ROW = "(" + ", ".join("%s" for _ in (*ITEM_COLUMNS, "scope")) + ", %s::vector)"
_INSERT_CHUNK = 500  # rows a statement: 29 parameters a row, PostgreSQL takes 65,535


def _insert_items(cur: psycopg.Cursor[Any], rows: list[dict[str, Any]]) -> None:
    """item_params() rows, each with its "embedding" (vector literal or None), in
    multi-row statements: the postings triggers run once a statement, not once a row."""
    names = (*ITEM_COLUMNS, "scope", "embedding")
    for start in range(0, len(rows), _INSERT_CHUNK):
        chunk = rows[start : start + _INSERT_CHUNK]
        cur.execute(
            f"INSERT INTO items({', '.join(names)}) VALUES " + ", ".join(_ITEM_ROW for _ in chunk),
            [row[c] for row in chunk for c in names],
        )


_WORD = re.compile(r"\w+", re.UNICODE)
_MIGRATION_LOCK = 0x6D6E656D6963  # pg_advisory_xact_lock key: one migrator at a time

HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
EXACT_THRESHOLD = 3_000
"""A scope with at most this many vectors is searched exactly (a scan of its rows: a few ms;
PostgreSQL computes distances row by row, so this is lower than SQLite's 10,000)."""
DEFAULT_EF_SEARCH = 200
"""hnsw.ef_search for a scope that is the whole table; raised for a scope that is a part of
it, since the index returns the nearest rows of every scope and the filter drops others'."""
MAX_EF_SEARCH = 1000  # pgvector's upper bound
_HEX_TO_LETTERS = str.maketrans("0123456789", "ghijklmnop")
_RETRIES = 5  # deadlocks and serialization failures are retried this many times


def scope_token(user_id: str, cube_id: str) -> str:
    """One lexeme naming a (user, cube) scope inside the tsvectors; no text can forge it."""
    digest = hashlib.sha256(f"{user_id}\x00{cube_id}".encode()).hexdigest()[:24]
    # letters only, so the text-search parser keeps it one token
    return "scope" + digest.translate(_HEX_TO_LETTERS)


def query_words(text: str) -> list[str]:
    """The words of a free-text query (stopwords dropped unless nothing else is left); they
    reach PostgreSQL one by one through plainto_tsquery, so no tsquery syntax gets through."""
    words = [w.lower() for w in _WORD.findall(text)]
    kept = [w for w in words if w not in STOPWORDS] or words
    return list(dict.fromkeys(w for w in kept if w.strip("_")))[:64]


def vector_literal(vector: np.ndarray) -> str:
    """pgvector's text form; float32 -> Python float -> repr round-trips exactly."""
    return "[" + ",".join(map(repr, vector.astype(np.float32).tolist())) + "]"


def parse_vector(text: str) -> np.ndarray:
    return np.array(text[1:-1].split(","), dtype=np.float32)


def item_params(item: MemoryItem) -> dict[str, Any]:
    """Column values of an item as psycopg parameters (JSON columns as JSON text)."""
    out: dict[str, Any] = {}
    for col in ITEM_COLUMNS:
        value = getattr(item, col)
        if col == "source":
            value = json.dumps(item.source.model_dump(mode="json"))
        elif col in _JSON_COLUMNS:
            value = json.dumps(value)
        elif isinstance(value, MemoryKind | MemoryLayer | MemoryStatus):
            value = value.value
        out[col] = value
    out["scope"] = scope_token(item.user_id, item.cube_id)
    return out


def row_to_item(row: dict[str, Any]) -> MemoryItem:
    """Rows were validated on their way in, so they are rebuilt without re-validation."""
    data: dict[str, Any] = {col: row[col] for col in ITEM_COLUMNS}
    for col in _TIME_COLUMNS:
        if data[col] is not None:
            data[col] = data[col].astimezone(UTC)
    data["kind"] = MemoryKind(data["kind"])
    data["layer"] = MemoryLayer(data["layer"])
    data["status"] = MemoryStatus(data["status"])
    source = dict(data["source"])
    if source.get("offsets") is not None:
        source["offsets"] = tuple(source["offsets"])
    data["source"] = rebuild(Source, source)
    return rebuild(MemoryItem, data)


def _public(item: MemoryItem) -> str:
    return json.dumps(item.model_dump(mode="json"))


def describe_dsn(dsn: str) -> str:
    """The server and database a DSN names, without its password (for error messages)."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        parts = conninfo_to_dict(dsn)
    except Exception:
        return "the PostgreSQL server"
    host = parts.get("host") or "localhost"
    return f"PostgreSQL database {parts.get('dbname') or '?'} on {host}"


class PostgresStore:
    """The server :class:`~mnemic.infra.store.base.Store`: ``PostgresStore(dsn, dim=384)``."""

    def __init__(
        self,
        dsn: str,
        *,
        dim: int | None = None,
        pool_size: int = 8,
        ef_search: int = DEFAULT_EF_SEARCH,
        exact_threshold: int = EXACT_THRESHOLD,
    ) -> None:
        try:
            import psycopg  # noqa: F401
            from psycopg.rows import dict_row
            from psycopg_pool import ConnectionPool
        except ImportError as exc:
            raise ConfigError(
                "the postgres store needs psycopg 3: pip install 'mnemic[postgres]'"
            ) from exc
        if not dsn:
            raise ConfigError("the postgres store needs a DSN, e.g. postgresql://host/mnemic")
        self.dsn = dsn
        self.where = describe_dsn(dsn)
        self.dim = dim
        self.ef_search = max(1, min(MAX_EF_SEARCH, ef_search))
        self.exact_threshold = exact_threshold
        self._closed = False
        self._lock = threading.Lock()
        self._speakers: dict[tuple[str, str], tuple[int, list[str]]] = {}
        self.fulltext_budget = FULLTEXT_BUDGET
        self.fulltext_window = FULLTEXT_WINDOW
        self._pool: ConnectionPool = ConnectionPool(
            dsn,
            min_size=1,
            max_size=max(1, pool_size),
            # autocommit: a read is one round trip (no BEGIN/ROLLBACK around it); writes and
            # multi-statement reads open their transaction explicitly
            kwargs={"row_factory": dict_row, "autocommit": True},
            open=False,
            name="mnemic",
        )
        try:
            self._pool.open(wait=True, timeout=30)
        except Exception as exc:
            self._pool.close()
            raise StoreError(f"cannot connect to {self.where}: {exc}") from exc
        try:
            self._migrate()
            self._setup_dim()
        except BaseException:
            self._pool.close()
            raise

    # ------------------------------------------------------------------ plumbing

    def _migrate(self) -> None:
        with self._tx() as db:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            db.execute(
                "CREATE TABLE IF NOT EXISTS mnemic_migrations "
                "(version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)"
            )
            row = db.execute("SELECT coalesce(max(version), 0) AS v FROM mnemic_migrations")
            version = int(row.fetchone()["v"])  # type: ignore[index]
            if version > len(MIGRATIONS):
                raise SchemaTooNew(
                    f"{self.where} has schema version {version} but this mnemic knows up to "
                    f"{len(MIGRATIONS)}; upgrade mnemic (pip install -U mnemic) to open it"
                )
            if version < len(MIGRATIONS):
                self._ensure_vector_extension(db)
            for number in range(version, len(MIGRATIONS)):
                db.execute(MIGRATIONS[number])  # type: ignore[arg-type]
                db.execute(
                    "INSERT INTO mnemic_migrations(version, applied_at) VALUES (%s, now())",
                    (number + 1,),
                )
            db.execute(
                "INSERT INTO mnemic_meta(key, value) VALUES ('schema_version', %s) "
                "ON CONFLICT (key) DO NOTHING",
                (str(SCHEMA_VERSION),),
            )

    def _ensure_vector_extension(self, db: psycopg.Connection[Any]) -> None:
        found = db.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone()
        if found is not None:
            return
        try:
            with db.transaction():
                db.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except Exception as exc:
            raise StoreError(
                f"{self.where} lacks the pgvector extension and this role may not create it "
                f"({exc}); run CREATE EXTENSION vector as a superuser once"
            ) from exc

    def _setup_dim(self) -> None:
        stored = self._meta("embedding_dim")
        if stored is not None:
            if self.dim is not None and self.dim != int(stored):
                raise InvalidInput(
                    f"{self.where} holds {stored}-dimensional vectors, not {self.dim}; use the "
                    "embedder the store was made with, or migrate the data to a new store"
                )
            self.dim = int(stored)
        elif self.dim is not None:
            self._fix_dim(self.dim)

    def _fix_dim(self, dim: int) -> None:
        """Give the vector column its dimension and build its HNSW index (once per store)."""
        with self._tx() as db:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            row = db.execute("SELECT value FROM mnemic_meta WHERE key = 'embedding_dim'").fetchone()
            if row is None:
                # a once-per-store ALTER: never queue every reader behind it for long
                db.execute("SET LOCAL lock_timeout = '30s'")
                db.execute(f"ALTER TABLE items ALTER COLUMN embedding TYPE vector({int(dim)})")
                db.execute(
                    "CREATE INDEX IF NOT EXISTS items_embedding ON items "
                    "USING hnsw (embedding vector_cosine_ops) "
                    f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})"
                )
                db.execute(
                    "INSERT INTO mnemic_meta(key, value) VALUES ('embedding_dim', %s)",
                    (str(dim),),
                )
            elif int(row["value"]) != dim:
                raise InvalidInput(
                    f"vectors have {dim} dimensions but this store holds {row['value']}; "
                    "use the embedder the store was made with, or migrate the cube"
                )
        self.dim = dim

    def _meta(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM mnemic_meta WHERE key = %s", (key,))
        return rows[0]["value"] if rows else None

    @contextlib.contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Any]]:
        import psycopg

        if self._closed:
            raise StoreError(f"the store on {self.where} is closed")
        try:
            with self._pool.connection(timeout=60) as conn:
                yield conn
        except psycopg.errors.UniqueViolation as exc:
            raise Conflict(
                f"an item with this id already exists ({exc.diag.message_detail})"
            ) from exc
        except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
            raise  # retried by _retrying
        except psycopg.DataError as exc:
            raise InvalidInput(f"{self.where} refused a value: {exc}") from exc
        except psycopg.OperationalError as exc:
            raise StoreError(f"{self.where} failed: {exc}") from exc

    @contextlib.contextmanager
    def _tx(self) -> Iterator[psycopg.Connection[Any]]:
        """A transaction on a pooled connection: committed on success, rolled back on error."""
        with self._conn() as conn, conn.transaction():
            yield conn

    def _retrying(self, work: Any) -> Any:
        """Run ``work(db)`` in a transaction, again if it lost a deadlock or serialization
        race (PostgreSQL rolled it back whole, so a retry is safe)."""
        import psycopg

        for attempt in range(_RETRIES):
            try:
                with self._tx() as db:
                    return work(db)
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
                if attempt == _RETRIES - 1:
                    raise
                time.sleep(0.01 * 2**attempt)
        raise AssertionError("unreachable")

    def _read(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        with self._conn() as conn:
            return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._pool.close()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ cubes

    def ensure_cube(
        self, cube_id: str, owner_id: str, *, embedder: str | None, dim: int | None
    ) -> CubeManifest:
        manifest = CubeManifest(
            cube_id=cube_id, owner_id=owner_id, embedder=embedder, embedding_dim=dim
        )
        with self._tx() as db:
            db.execute(
                "INSERT INTO cubes(cube_id, owner_id, manifest) VALUES (%s, %s, %s) "
                "ON CONFLICT (cube_id) DO NOTHING",
                (cube_id, owner_id, manifest.model_dump_json()),
            )
            row = db.execute("SELECT manifest FROM cubes WHERE cube_id = %s", (cube_id,)).fetchone()
        return CubeManifest.model_validate_json(row["manifest"])  # type: ignore[index]

    def get_cube(self, cube_id: str) -> CubeManifest | None:
        rows = self._read("SELECT manifest FROM cubes WHERE cube_id = %s", (cube_id,))
        return CubeManifest.model_validate_json(rows[0]["manifest"]) if rows else None

    def list_cubes(self, owner_id: str) -> list[CubeManifest]:
        rows = self._read(
            "SELECT manifest FROM cubes WHERE owner_id = %s ORDER BY cube_id", (owner_id,)
        )
        return [CubeManifest.model_validate_json(r["manifest"]) for r in rows]

    # ------------------------------------------------------------------ items

    def _check_vectors(self, vectors: np.ndarray | None, n: int) -> np.ndarray | None:
        if vectors is None:
            return None
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != n:
            raise InvalidInput(f"expected {n} vectors, got an array of shape {vectors.shape}")
        if self.dim is not None and vectors.shape[1] != self.dim:
            raise InvalidInput(
                f"vectors have {vectors.shape[1]} dimensions but this store holds {self.dim}; "
                "use the embedder the store was made with, or migrate the cube"
            )
        if n and not bool(np.isfinite(vectors).all()):
            raise InvalidInput("vectors must be finite (no NaN or infinity)")
        if n and bool((np.abs(vectors).max(axis=1) == 0).any()):
            raise InvalidInput("a zero vector has no direction; it cannot be searched by cosine")
        if self.dim is None:
            self._fix_dim(int(vectors.shape[1]))
        return vectors

    def _bump_scopes(
        self, db: psycopg.Connection[Any], deltas: dict[tuple[str, str], tuple[int, int]]
    ) -> None:
        """Count items and vectors per scope and move its generation; in sorted scope order,
        so two transactions never wait on each other's scope rows in a cycle."""
        for (user_id, cube_id), (items, vectors) in sorted(deltas.items()):
            db.execute(
                "INSERT INTO scopes(user_id, cube_id, items, vectors, generation) "
                "VALUES (%s, %s, %s, %s, 1) ON CONFLICT (user_id, cube_id) DO UPDATE SET "
                "items = scopes.items + excluded.items, "
                "vectors = scopes.vectors + excluded.vectors, "
                "generation = scopes.generation + 1",
                (user_id, cube_id, items, vectors),
            )

    def _count_tokens(
        self, db: psycopg.Connection[Any], user_id: str, cube_id: str, ids: list[str], sign: int
    ) -> None:
        """Add (sign +1) or remove (-1) these items' token counts to their scope's BM25
        statistics; call after inserting or before deleting them, in the same transaction."""
        db.execute(
            "UPDATE scopes s SET body_tokens = s.body_tokens + %s * x.b, "
            "keys_tokens = s.keys_tokens + %s * x.k, keyed = s.keyed + %s * x.kd "
            "FROM (SELECT coalesce(sum(body_len), 0) AS b, coalesce(sum(keys_len), 0) AS k, "
            "count(*) FILTER (WHERE keys_len > 0) AS kd FROM items "
            "WHERE user_id = %s AND cube_id = %s AND id = ANY(%s)) x "
            "WHERE s.user_id = %s AND s.cube_id = %s",
            (sign, sign, sign, user_id, cube_id, ids, user_id, cube_id),
        )

    # ------------------------------------------------------------------ sharing

    def grant(self, cube_id: str, grantee: str, access: str) -> Grant:
        if access not in ("read", "write"):
            raise InvalidInput(f"access must be 'read' or 'write', not {access!r}")
        now = utcnow()
        with self._tx() as db:
            if db.execute("SELECT 1 FROM cubes WHERE cube_id = %s", (cube_id,)).fetchone() is None:
                raise NotFound(f"no cube {cube_id!r}; create it before sharing it")
            db.execute(
                "INSERT INTO grants(cube_id, grantee, access, granted_at) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (cube_id, grantee) DO UPDATE SET "
                "access = excluded.access, granted_at = excluded.granted_at",
                (cube_id, grantee, access, now),
            )
        return Grant(cube_id=cube_id, grantee=grantee, access=access, granted_at=now)

    def revoke(self, cube_id: str, grantee: str) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "DELETE FROM grants WHERE cube_id = %s AND grantee = %s", (cube_id, grantee)
            )
            return cur.rowcount > 0

    def grants(self, *, cube_id: str | None = None, grantee: str | None = None) -> list[Grant]:
        clauses, params = [], []
        if cube_id is not None:
            clauses.append("cube_id = %s")
            params.append(cube_id)
        if grantee is not None:
            clauses.append("grantee = %s")
            params.append(grantee)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._read(f"SELECT * FROM grants{where} ORDER BY cube_id, grantee", params)
        return [
            Grant(
                cube_id=r["cube_id"],
                grantee=r["grantee"],
                access=r["access"],
                granted_at=r["granted_at"],
            )
            for r in rows
        ]

    # ------------------------------------------------------------------ items

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
        ids = [(i.user_id, i.cube_id, i.id) for i in items]
        if len(set(ids)) != len(ids):
            raise Conflict("the batch holds the same item id twice")
        now = utcnow()
        deltas: dict[tuple[str, str], tuple[int, int]] = {}
        rows = []
        history = []
        for n, item in enumerate(items):
            key = (item.user_id, item.cube_id)
            count, vec_count = deltas.get(key, (0, 0))
            deltas[key] = (count + 1, vec_count + (vectors is not None))
            params = item_params(item)
            params["embedding"] = None if vectors is None else vector_literal(vectors[n])
            rows.append(params)
            history.append(
                (item.user_id, item.cube_id, item.id, "add", actor, now, reason, _public(item))
            )

        def work(db: psycopg.Connection[Any]) -> None:
            self._bump_scopes(db, deltas)
            with db.cursor() as cur:
                _insert_items(cur, rows)
                cur.executemany(
                    "INSERT INTO history(user_id, cube_id, item_id, action, actor, at, reason, "
                    "after) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    history,
                )
            for user_id, cube_id in sorted(deltas):
                scope_ids = [i.id for i in items if (i.user_id, i.cube_id) == (user_id, cube_id)]
                self._count_tokens(db, user_id, cube_id, scope_ids, +1)
            if rekey and scope_of_rekey is not None:
                self._rekey(db, *scope_of_rekey, rekey)

        self._retrying(work)

    def _rekey(
        self, db: psycopg.Connection[Any], user_id: str, cube_id: str, keys: Mapping[str, str]
    ) -> None:
        """Replace stored items' index keys (no version), with the scope's BM25 statistics;
        keys_tsv follows the column and the postings trigger follows keys_tsv."""
        ids = sorted(keys)
        db.execute(  # rows locked in id order, after the scope row (add locked it)
            "SELECT 1 FROM items WHERE user_id = %s AND cube_id = %s AND id = ANY(%s) "
            "ORDER BY id FOR UPDATE",
            (user_id, cube_id, ids),
        )
        self._count_tokens(db, user_id, cube_id, ids, -1)
        with db.cursor() as cur:
            cur.executemany(
                "UPDATE items SET index_text = %s WHERE user_id = %s AND cube_id = %s AND id = %s",
                [(keys[i], user_id, cube_id, i) for i in ids],
            )
        self._count_tokens(db, user_id, cube_id, ids, +1)

    def put_vectors(
        self, user_id: str, cube_id: str, ids: Sequence[str], vectors: np.ndarray
    ) -> int:
        checked = self._check_vectors(vectors, len(ids))
        assert checked is not None
        rows = [
            (vector_literal(checked[n]), user_id, cube_id, item_id) for n, item_id in enumerate(ids)
        ]

        def work(db: psycopg.Connection[Any]) -> int:
            # the scope row first, as every writer: one lock order
            if (
                db.execute(
                    "SELECT 1 FROM scopes WHERE user_id = %s AND cube_id = %s FOR UPDATE",
                    (user_id, cube_id),
                ).fetchone()
                is None
            ):
                return 0
            counted = db.execute(
                "SELECT count(*) AS n FROM items WHERE user_id = %s AND cube_id = %s "
                "AND id = ANY(%s) AND embedding IS NULL",
                (user_id, cube_id, list(dict.fromkeys(ids))),
            ).fetchone()
            missing = int(counted["n"]) if counted else 0
            done = 0
            with db.cursor() as cur:
                for row in rows:
                    cur.execute(
                        "UPDATE items SET embedding = %s::vector "
                        "WHERE user_id = %s AND cube_id = %s AND id = %s",
                        row,
                    )
                    done += cur.rowcount
            db.execute(
                "UPDATE scopes SET generation = generation + 1, vectors = vectors + %s "
                "WHERE user_id = %s AND cube_id = %s",
                (missing, user_id, cube_id),
            )
            return done

        result: int = self._retrying(work)
        return result

    def get_items(self, user_id: str, cube_id: str, ids: Sequence[str]) -> list[MemoryItem]:
        if not ids:
            return []
        rows = self._read(
            f"{_SELECT} FROM items i WHERE i.user_id = %s AND i.cube_id = %s AND i.id = ANY(%s)",
            (user_id, cube_id, list(dict.fromkeys(ids))),
        )
        found = {r["id"]: row_to_item(r) for r in rows}
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
            f"{_SELECT} FROM items i WHERE i.user_id = %s AND i.cube_id = %s{where} "
            "ORDER BY i.valid_from NULLS LAST, i.seq LIMIT %s OFFSET %s",
            (user_id, cube_id, *params, limit, offset),
        )
        return [row_to_item(r) for r in rows]

    def count_items(self, user_id: str, cube_id: str, flt: ItemFilter = ItemFilter()) -> int:
        where, params = _where(flt)
        rows = self._read(
            f"SELECT count(*) AS n FROM items i WHERE i.user_id = %s AND i.cube_id = %s{where}",
            (user_id, cube_id, *params),
        )
        return int(rows[0]["n"])

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

        def work(db: psycopg.Connection[Any]) -> MemoryItem:
            return self._update_in(db, item, vectors, actor, action, reason, expected_version)

        result: MemoryItem = self._retrying(work)
        return result

    def _update_in(
        self,
        db: psycopg.Connection[Any],
        item: MemoryItem,
        vectors: np.ndarray | None,
        actor: str,
        action: str,
        reason: str | None,
        expected_version: int | None,
    ) -> MemoryItem:
        """Replace a stored item inside the caller's transaction, with its history row."""
        # lock the scope row first, as add and purge do: one lock order for all writers
        scope_row = db.execute(
            "SELECT 1 FROM scopes WHERE user_id = %s AND cube_id = %s FOR UPDATE",
            (item.user_id, item.cube_id),
        ).fetchone()
        row = db.execute(
            f"{_SELECT}, i.embedding IS NOT NULL AS has_vector FROM items i "
            "WHERE i.user_id = %s AND i.cube_id = %s AND i.id = %s FOR UPDATE",
            (item.user_id, item.cube_id, item.id),
        ).fetchone()
        if row is None or scope_row is None:
            raise NotFound(f"no item {item.id} in cube {item.cube_id} of user {item.user_id}")
        old = row_to_item(row)
        if expected_version is not None and old.version != expected_version:
            raise Conflict(
                f"item {item.id} is at version {old.version}, not {expected_version}; "
                "re-read it and apply the change again"
            )
        new = item.model_copy(update={"updated_at": utcnow()})
        self._count_tokens(db, item.user_id, item.cube_id, [item.id], -1)
        params = item_params(new)
        settable = [c for c in ITEM_COLUMNS if c not in ("id", "user_id", "cube_id")]
        assignments = ", ".join(f"{c} = %({c})s" for c in settable)
        if vectors is not None:
            assignments += ", embedding = %(embedding)s::vector"
            params["embedding"] = vector_literal(vectors[0])
        db.execute(
            f"UPDATE items SET {assignments} "
            "WHERE user_id = %(user_id)s AND cube_id = %(cube_id)s AND id = %(id)s",
            params,
        )
        self._count_tokens(db, item.user_id, item.cube_id, [item.id], +1)
        added_vector = int(vectors is not None and not row["has_vector"])
        db.execute(
            "UPDATE scopes SET generation = generation + 1, vectors = vectors + %s "
            "WHERE user_id = %s AND cube_id = %s",
            (added_vector, item.user_id, item.cube_id),
        )
        db.execute(
            "INSERT INTO history(user_id, cube_id, item_id, action, actor, at, reason, "
            "before, after) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                new.user_id,
                new.cube_id,
                new.id,
                action,
                actor,
                new.updated_at,
                reason,
                _public(old),
                _public(new),
            ),
        )
        return new

    def purge_item(self, user_id: str, cube_id: str, item_id: str, *, actor: str) -> None:
        def work(db: psycopg.Connection[Any]) -> None:
            db.execute(
                "SELECT 1 FROM scopes WHERE user_id = %s AND cube_id = %s FOR UPDATE",
                (user_id, cube_id),
            )
            self._count_tokens(db, user_id, cube_id, [item_id], -1)
            row = db.execute(
                "DELETE FROM items WHERE user_id = %s AND cube_id = %s AND id = %s "
                "RETURNING embedding IS NOT NULL AS has_vector",
                (user_id, cube_id, item_id),
            ).fetchone()
            if row is None:
                raise NotFound(f"no item {item_id} in cube {cube_id} of user {user_id}")
            db.execute(
                "UPDATE scopes SET generation = generation + 1, items = items - 1, "
                "vectors = vectors - %s WHERE user_id = %s AND cube_id = %s",
                (int(row["has_vector"]), user_id, cube_id),
            )
            # the tree and the graph only ever reference items that exist; the topic that held
            # it forgets the title, summary and centroid made from it (the next pass rewrites it)
            db.execute(
                "UPDATE topics SET title = '', summary = '', centroid = NULL "
                "WHERE user_id = %s AND cube_id = %s AND id IN (SELECT topic_id FROM topic_members "
                "WHERE user_id = %s AND cube_id = %s AND item_id = %s)",
                (user_id, cube_id, user_id, cube_id, item_id),
            )
            db.execute(
                "DELETE FROM topic_members WHERE user_id = %s AND cube_id = %s AND item_id = %s",
                (user_id, cube_id, item_id),
            )
            db.execute(
                "DELETE FROM edges WHERE user_id = %s AND cube_id = %s AND (src = %s OR dst = %s)",
                (user_id, cube_id, item_id, item_id),
            )
            # the content goes from history too: a purge is the owner's request to forget
            db.execute(
                "UPDATE history SET before = NULL, after = NULL "
                "WHERE user_id = %s AND cube_id = %s AND item_id = %s",
                (user_id, cube_id, item_id),
            )
            db.execute(
                "INSERT INTO history(user_id, cube_id, item_id, action, actor, at, reason) "
                "VALUES (%s, %s, %s, 'purge', %s, %s, 'purged on request')",
                (user_id, cube_id, item_id, actor, utcnow()),
            )

        self._retrying(work)

    def record_access(self, user_id: str, cube_id: str, ids: Sequence[str]) -> None:
        if not ids:
            return
        counts: dict[str, int] = {}
        for i in ids:
            counts[i] = counts.get(i, 0) + 1
        ordered = sorted(counts)

        def work(db: psycopg.Connection[Any]) -> None:
            # rows locked in id order: concurrent callers queue instead of deadlocking
            db.execute(
                "SELECT 1 FROM items WHERE user_id = %s AND cube_id = %s AND id = ANY(%s) "
                "ORDER BY id FOR UPDATE",
                (user_id, cube_id, ordered),
            )
            db.execute(
                "UPDATE items i SET access_count = i.access_count + c.n, last_accessed = %s "
                "FROM unnest(%s::text[], %s::int[]) AS c(id, n) "
                "WHERE i.user_id = %s AND i.cube_id = %s AND i.id = c.id",
                (utcnow(), ordered, [counts[i] for i in ordered], user_id, cube_id),
            )

        self._retrying(work)

    def facets(
        self, user_id: str, cube_id: str, ids: Sequence[str]
    ) -> dict[str, tuple[str | None, str | None]]:
        if not ids:
            return {}
        rows = self._read(
            "SELECT id, speaker, session_id FROM items WHERE user_id = %s AND cube_id = %s "
            "AND id = ANY(%s)",
            (user_id, cube_id, list(dict.fromkeys(ids))),
        )
        return {r["id"]: (r["speaker"], r["session_id"]) for r in rows}

    def speakers(self, user_id: str, cube_id: str) -> list[str]:
        key = (user_id, cube_id)
        with self._conn() as db:
            row = db.execute(
                "SELECT generation FROM scopes WHERE user_id = %s AND cube_id = %s", key
            ).fetchone()
            generation = int(row["generation"]) if row else 0
            cached = self._speakers.get(key)
            if cached is not None and cached[0] == generation:
                db.rollback()
                return cached[1]
            rows = db.execute(
                "SELECT DISTINCT speaker FROM items WHERE user_id = %s AND cube_id = %s "
                "AND speaker IS NOT NULL",
                key,
            ).fetchall()
            db.rollback()
        names = sorted(r["speaker"] for r in rows)
        self._speakers[key] = (generation, names)
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
        with self._conn() as db:
            for item_id in dict.fromkeys(ids):
                row = db.execute(
                    "SELECT seq, session_id FROM items WHERE user_id = %s AND cube_id = %s "
                    "AND id = %s",
                    (user_id, cube_id, item_id),
                ).fetchone()
                if row is None or row["session_id"] is None:
                    continue
                found: list[tuple[str, int]] = []
                for op, order in (("<", "DESC"), (">", "ASC")):
                    near = db.execute(
                        f"SELECT i.id FROM items i WHERE i.user_id = %s AND i.cube_id = %s "
                        f"AND i.session_id = %s AND i.seq {op} %s{where} "
                        f"ORDER BY i.seq {order} LIMIT %s",
                        (user_id, cube_id, row["session_id"], row["seq"], *params, window),
                    ).fetchall()
                    found.extend((r["id"], n) for n, r in enumerate(near, start=1))
                out[item_id] = found
            db.rollback()
        return out

    def session_tail(
        self, user_id: str, cube_id: str, session_id: str, n: int, kinds: Sequence[MemoryKind]
    ) -> list[MemoryItem]:
        if n <= 0 or not kinds:
            return []
        rows = self._read(
            f"{_SELECT} FROM items i WHERE i.user_id = %s AND i.cube_id = %s "
            "AND i.session_id = %s AND i.status = %s AND i.kind = ANY(%s) "
            "ORDER BY i.seq DESC LIMIT %s",  # items_session (user, cube, session, seq)
            (user_id, cube_id, session_id, MemoryStatus.ACTIVE.value, [k.value for k in kinds], n),
        )
        return [row_to_item(r) for r in reversed(rows)]

    def history(self, user_id: str, cube_id: str, item_id: str) -> list[HistoryEntry]:
        rows = self._read(
            "SELECT * FROM history WHERE user_id = %s AND cube_id = %s AND item_id = %s "
            "ORDER BY id",
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
                at=r["at"].astimezone(UTC),
                reason=r["reason"],
                before=r["before"],
                after=r["after"],
            )
            for r in rows
        ]

    # ------------------------------------------------------------------ tree and graph

    def topics(self, user_id: str, cube_id: str) -> list[TopicNode]:
        rows = self._read(
            "SELECT t.*, (SELECT count(*) FROM topic_members m WHERE m.user_id = t.user_id "
            "AND m.cube_id = t.cube_id AND m.topic_id = t.id) AS size FROM topics t "
            "WHERE t.user_id = %s AND t.cube_id = %s ORDER BY t.created_at, t.id",
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
                else np.frombuffer(bytes(r["centroid"]), dtype=np.float32).tolist(),
                created_at=r["created_at"].astimezone(UTC),
                updated_at=r["updated_at"].astimezone(UTC),
            )
            for r in rows
        ]

    def topic_members(
        self, user_id: str, cube_id: str, topic_ids: Sequence[str] | None = None
    ) -> dict[str, str]:
        sql = "SELECT item_id, topic_id FROM topic_members WHERE user_id = %s AND cube_id = %s"
        params: list[Any] = [user_id, cube_id]
        if topic_ids is not None:
            sql += " AND topic_id = ANY(%s)"
            params.append(list(dict.fromkeys(topic_ids)))
        rows = self._read(sql + " ORDER BY item_id", params)
        return {r["item_id"]: r["topic_id"] for r in rows}

    def links(
        self,
        user_id: str,
        cube_id: str,
        ids: Sequence[str] | None = None,
        kinds: Sequence[str] = (),
    ) -> list[Edge]:
        sql = "SELECT * FROM edges WHERE user_id = %s AND cube_id = %s"
        params: list[Any] = [user_id, cube_id]
        if kinds:
            sql += " AND kind = ANY(%s)"
            params.append(list(kinds))
        if ids is not None:
            wanted = list(dict.fromkeys(ids))
            sql += " AND (src = ANY(%s) OR dst = ANY(%s))"
            params.extend([wanted, wanted])
        rows = self._read(sql + " ORDER BY src, kind, dst", params)
        return [
            Edge.model_construct(
                user_id=r["user_id"],
                cube_id=r["cube_id"],
                src=r["src"],
                kind=r["kind"],
                dst=r["dst"],
                weight=float(r["weight"]),
                created_at=r["created_at"].astimezone(UTC),
            )
            for r in rows
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
        now = utcnow()

        def work(db: psycopg.Connection[Any]) -> None:
            # the scope row first, as every writer: one lock order
            db.execute(
                "SELECT 1 FROM scopes WHERE user_id = %s AND cube_id = %s FOR UPDATE",
                (user_id, cube_id),
            )
            if change.expected_topics is not None or change.expected_members is not None:
                topics = {
                    r["id"]: r["version"]
                    for r in db.execute(
                        "SELECT id, version FROM topics WHERE user_id = %s AND cube_id = %s",
                        (user_id, cube_id),
                    ).fetchall()
                }
                members = {
                    r["item_id"]: r["topic_id"]
                    for r in db.execute(
                        "SELECT item_id, topic_id FROM topic_members "
                        "WHERE user_id = %s AND cube_id = %s",
                        (user_id, cube_id),
                    ).fetchall()
                }
                if tree_changed(change, topics, members):
                    raise Conflict("the tree changed while this pass was planned; plan again")
            for c in change.items:
                self._update_in(db, c.item, None, actor, c.action, c.reason, c.expected_version)
            if change.drop_topics:
                db.execute(
                    "DELETE FROM topics WHERE user_id = %s AND cube_id = %s AND id = ANY(%s)",
                    (user_id, cube_id, list(change.drop_topics)),
                )
            with db.cursor() as cur:
                cur.executemany(
                    "INSERT INTO topics(user_id, cube_id, id, title, summary, centroid, version, "
                    "created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (user_id, cube_id, id) DO UPDATE SET title = excluded.title, "
                    "summary = excluded.summary, centroid = excluded.centroid, "
                    "version = excluded.version, updated_at = excluded.updated_at",
                    [
                        (
                            user_id,
                            cube_id,
                            t.id,
                            t.title,
                            t.summary,
                            None
                            if t.centroid is None
                            else np.asarray(t.centroid, dtype=np.float32).tobytes(),
                            t.version,
                            t.created_at,
                            t.updated_at,
                        )
                        for t in change.topics
                    ],
                )
            if change.unplace:
                db.execute(
                    "DELETE FROM topic_members WHERE user_id = %s AND cube_id = %s "
                    "AND item_id = ANY(%s)",
                    (user_id, cube_id, list(change.unplace)),
                )
            if change.place:
                placed = sorted(change.place)
                before = {
                    r["item_id"]: r["topic_id"]
                    for r in db.execute(
                        "SELECT item_id, topic_id FROM topic_members WHERE user_id = %s "
                        "AND cube_id = %s AND item_id = ANY(%s) FOR UPDATE",
                        (user_id, cube_id, placed),
                    ).fetchall()
                }
                changed = [i for i in placed if before.get(i) != change.place[i]]
                with db.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO topic_members(user_id, cube_id, item_id, topic_id) "
                        "VALUES (%s, %s, %s, %s) ON CONFLICT (user_id, cube_id, item_id) "
                        "DO UPDATE SET topic_id = excluded.topic_id",
                        [(user_id, cube_id, i, change.place[i]) for i in changed],
                    )
                    cur.executemany(
                        "INSERT INTO history(user_id, cube_id, item_id, action, actor, at, "
                        "reason, before, after) VALUES (%s, %s, %s, 'move', %s, %s, %s, %s, %s)",
                        [
                            (
                                user_id,
                                cube_id,
                                i,
                                actor,
                                now,
                                change.move_reason,
                                json.dumps({"topic_id": before[i]}),
                                json.dumps({"topic_id": change.place[i]}),
                            )
                            for i in changed
                            if i in before
                        ],
                    )
            with db.cursor() as cur:
                cur.executemany(
                    "DELETE FROM edges WHERE user_id = %s AND cube_id = %s AND src = %s "
                    "AND kind = %s AND dst = %s",
                    [(user_id, cube_id, *key) for key in change.drop_edges],
                )
                cur.executemany(
                    "INSERT INTO edges(user_id, cube_id, src, kind, dst, weight, created_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    [
                        (user_id, cube_id, e.src, e.kind, e.dst, e.weight, e.created_at)
                        for e in change.add_edges
                        if (e.user_id, e.cube_id) == scope
                    ],
                )
                cur.executemany(
                    "INSERT INTO history(user_id, cube_id, item_id, action, actor, at, reason, "
                    "after) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    [
                        (user_id, cube_id, topic_id, action, actor, now, reason, json.dumps(d))
                        for topic_id, action, reason, d in change.notes
                    ],
                )
            self._check_tree(db, user_id, cube_id, change)

        self._retrying(work)

    def _check_tree(
        self, db: psycopg.Connection[Any], user_id: str, cube_id: str, change: TreeChange
    ) -> None:
        """Refuse (and roll back) a step that would leave the tree or the graph pointing at
        a topic or an item that does not exist."""
        if change.drop_topics:
            left = db.execute(
                "SELECT item_id, topic_id FROM topic_members WHERE user_id = %s "
                "AND cube_id = %s AND topic_id = ANY(%s) LIMIT 1",
                (user_id, cube_id, list(change.drop_topics)),
            ).fetchone()
            if left is not None:
                raise InvalidInput(
                    f"topic {left['topic_id']} is dropped but item {left['item_id']} still "
                    "sits under it; place or unplace its items in the same step (nothing was "
                    "changed)"
                )
        wanted = sorted(set(change.place.values()))
        if wanted:
            found = {
                r["id"]
                for r in db.execute(
                    "SELECT id FROM topics WHERE user_id = %s AND cube_id = %s AND id = ANY(%s)",
                    (user_id, cube_id, wanted),
                ).fetchall()
            }
            missing = sorted(set(wanted) - found)
            if missing:
                raise InvalidInput(
                    f"items are placed under topic {missing[0]}, which is not in this scope; "
                    "write the topic in the same step (nothing was changed)"
                )
        ends = {e.src for e in change.add_edges} | {e.dst for e in change.add_edges}
        ends |= set(change.place)
        if ends:
            found = {
                r["id"]
                for r in db.execute(
                    "SELECT id FROM items WHERE user_id = %s AND cube_id = %s AND id = ANY(%s)",
                    (user_id, cube_id, sorted(ends)),
                ).fetchall()
            }
            missing = sorted(ends - found)
            if missing:
                raise InvalidInput(
                    f"item {missing[0]} is linked or placed but is not in this scope; "
                    "nothing was changed"
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
        words = query_words(query)
        if not words or k <= 0:
            return []
        where, params = _where(flt)
        with self._conn() as db:
            # one snapshot for the statistics, the frequencies and the rows they rank (set on
            # the connection, so it rides on the BEGIN instead of a round trip of its own)
            from psycopg import IsolationLevel

            db.isolation_level = IsolationLevel.REPEATABLE_READ
            db.read_only = True
            try:
                with db.transaction():
                    scores = self._fulltext(
                        db, user_id, cube_id, words, k, where, params, keys_weight
                    )
            finally:
                db.isolation_level = None
                db.read_only = None
        best = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)[:k]
        return [Scored(item_id, score) for item_id, score in best]

    def _fulltext(
        self,
        db: psycopg.Connection[Any],
        user_id: str,
        cube_id: str,
        words: list[str],
        k: int,
        where: str,
        params: list[Any],
        keys_weight: float,
    ) -> dict[str, float]:
        stats = db.execute(
            "SELECT (SELECT array_agg(DISTINCT lexeme) "
            "        FROM unnest(to_tsvector('mnemic', %s))) AS lexemes, "
            "s.items, s.keyed, s.body_tokens, s.keys_tokens "
            "FROM (SELECT 1) AS one LEFT JOIN scopes s ON s.user_id = %s AND s.cube_id = %s",
            (" ".join(words), user_id, cube_id),
        ).fetchone()
        terms = sorted(stats["lexemes"] or []) if stats is not None else []  # type: ignore[index]
        if stats is None or stats["items"] is None or not terms:
            return {}
        # Own words (col 0) and keys (col 1) are ranked separately, each with its own
        # document frequencies: a key repeats its neighbours' words, and counted together
        # those repeats would make a word look common.
        columns = [
            (col, int(rows), int(tokens), weight)
            for col, rows, tokens, weight in (
                (0, stats["items"], stats["body_tokens"], 1.0),
                (1, stats["keyed"], stats["keys_tokens"], keys_weight),
            )
            if weight > 0 and rows > 0
        ]
        if not columns:
            return {}
        dfs = {
            (r["col"], r["term"]): int(r["df"])
            for r in db.execute(
                "SELECT col, term, df FROM term_stats WHERE user_id = %s AND cube_id = %s "
                "AND col = ANY(%s) AND term = ANY(%s)",
                (user_id, cube_id, [c for c, *_ in columns], terms),
            )
        }
        floor: list[int | None] = []  # the scope's FULLTEXT_WINDOW-th newest seq, read once
        scores: dict[str, float] = {}
        for col, rows, tokens, weight in columns:
            counts = [dfs.get((col, t), 0) for t in terms]
            present = [i for i, df in enumerate(counts) if df > 0]
            if not present:
                continue
            narrow, broad = split_terms([counts[i] for i in present], self.fulltext_budget)
            if broad and not floor:
                row = db.execute(  # the seq below the scope's newest FULLTEXT_WINDOW rows
                    "SELECT seq FROM items WHERE user_id = %s AND cube_id = %s "
                    "ORDER BY seq DESC OFFSET %s LIMIT 1",
                    (user_id, cube_id, self.fulltext_window),
                ).fetchone()
                floor.append(None if row is None else int(row["seq"]))
            if not broad or floor[0] is None:  # the whole scope is within the window
                narrow, broad = narrow + broad, []
            idfs = []
            for i in present:
                df = min(rows, counts[i])
                idf = math.log((rows - df + 0.5) / (df + 0.5))
                idfs.append(idf if idf > 0 else 1e-6)
            for item_id, score in self._bm25(
                db,
                col,
                user_id,
                cube_id,
                [terms[i] for i in present],
                idfs,
                [j in broad for j in range(len(present))],
                floor[0] if broad else None,
                (tokens + rows) / rows,  # +1 token a row: FTS5 counts the scope column too
                sum(counts[i] for i in present),
                where,
                params,
                2 * k,
            ):
                scores[item_id] = scores.get(item_id, 0.0) + weight * score
        return scores

    def _bm25(
        self,
        db: psycopg.Connection[Any],
        col: int,
        user_id: str,
        cube_id: str,
        terms: list[str],
        idfs: list[float],
        broad: list[bool],
        floor: int | None,
        avgdl: float,
        postings: int,
        where: str,
        params: list[Any],
        limit: int,
    ) -> list[tuple[str, float]]:
        """Okapi BM25 as SQLite's FTS5 computes it (k1 1.2, b 0.75, an IDF that is not
        positive clamped to 1e-6; a row's length counts its scope token), within one scope,
        summed from the terms' postings; the best ``limit`` rows that pass the filter.

        Broad terms (``broad``) are read only above ``floor`` (the scope's newest rows); an
        older row found by a narrow term gets its broad terms' share by key lookups."""
        tf_part = "{p}.tf * 2.2 / ({p}.tf + 1.2 * (0.25 + 0.75 * {p}.dl / %s))"
        sql = (
            "WITH w(term, idf, broad) AS ("
            "  SELECT * FROM unnest(%s::text[], %s::float8[], %s::bool[])), "
            "part AS ("
            f"  SELECT p.seq, sum(w.idf * {tf_part.format(p='p')}) AS score FROM w "
            "  JOIN postings p ON p.user_id = %s AND p.cube_id = %s AND p.col = %s "
            "  AND p.term = w.term AND p.seq > CASE WHEN w.broad THEN %s ELSE -1 END "
            "  GROUP BY p.seq ORDER BY score DESC, p.seq LIMIT %s), "
            "whole AS ("
            "  SELECT part.seq, part.score + coalesce(("
            f"    SELECT sum(w.idf * {tf_part.format(p='b')}) FROM w "
            "    JOIN postings b ON b.user_id = %s AND b.cube_id = %s AND b.col = %s "
            "    AND b.term = w.term AND b.seq = part.seq "
            "    WHERE w.broad AND part.seq <= %s), 0) AS score FROM part) "
            "SELECT i.id, whole.score FROM whole JOIN items i "
            "ON i.user_id = %s AND i.cube_id = %s AND i.seq = whole.seq "
            f"WHERE TRUE{where} ORDER BY whole.score DESC, i.id LIMIT %s"
        )
        edge = -1 if floor is None else floor
        pool = max(4 * limit, 100)
        while True:
            found = db.execute(
                sql,
                (
                    terms,
                    idfs,
                    broad,
                    avgdl,
                    user_id,
                    cube_id,
                    col,
                    edge,
                    pool,
                    avgdl,
                    user_id,
                    cube_id,
                    col,
                    edge,
                    user_id,
                    cube_id,
                    *params,
                    limit,
                ),
            ).fetchall()
            # the filter may have dropped most of the pool: widen it while rows remain
            if len(found) >= limit or pool >= postings:
                return [(r["id"], float(r["score"])) for r in found]
            pool *= 8

    def vector_search(
        self,
        user_id: str,
        cube_id: str,
        vector: np.ndarray,
        k: int,
        flt: ItemFilter = ItemFilter(),
    ) -> list[Scored]:
        if k <= 0 or self.dim is None:
            return []
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        if query.shape[0] != self.dim:
            raise InvalidInput(
                f"the query vector has {query.shape[0]} dimensions, the store {self.dim}"
            )
        if not bool(np.isfinite(query).all()) or not bool(np.abs(query).max() > 0):
            return []
        literal = vector_literal(query)
        where, params = _where(flt)
        with self._conn() as db:
            row = db.execute(
                "SELECT vectors FROM scopes WHERE user_id = %s AND cube_id = %s",
                (user_id, cube_id),
            ).fetchone()
            size = int(row["vectors"]) if row else 0
            found: list[Any] = []
            if size > self.exact_threshold:
                # rows in the whole table, from the planner's statistics (no scan)
                stats = db.execute(
                    "SELECT reltuples::bigint AS n FROM pg_class WHERE oid = 'items'::regclass"
                ).fetchone()
                share = size / max(size, int(stats["n"]) if stats else size)
                ef = min(MAX_EF_SEARCH, max(self.ef_search, k) * math.ceil(1 / share))
                # the index returns the table's nearest rows, ours among them at about our
                # share: worth asking only if ef_search of them can hold k of ours
                if ef * share >= 2 * k:
                    found = self._ann(db, literal, user_id, cube_id, ef, k, where, params)
            if len(found) < k and size > 0:
                # small scope, or the filter left fewer than k of the index's candidates
                found = db.execute(
                    "SELECT i.id, 1 - (i.embedding <=> %s::vector) AS sim FROM items i "
                    "WHERE i.user_id = %s AND i.cube_id = %s AND i.embedding IS NOT NULL"
                    f"{where} ORDER BY sim DESC, i.id LIMIT %s",
                    (literal, user_id, cube_id, *params, k),
                ).fetchall()
            db.rollback()
        return [Scored(r["id"], float(r["sim"])) for r in found]

    def _ann(
        self,
        db: psycopg.Connection[Any],
        literal: str,
        user_id: str,
        cube_id: str,
        ef: int,
        k: int,
        where: str,
        params: list[Any],
    ) -> list[Any]:
        """HNSW search with ``hnsw.ef_search`` set for this query (this transaction) only."""
        with db.transaction():
            db.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(ef),))
            return db.execute(
                "SELECT i.id, 1 - (i.embedding <=> %s::vector) AS sim FROM items i "
                f"WHERE i.user_id = %s AND i.cube_id = %s{where} "
                "ORDER BY i.embedding <=> %s::vector LIMIT %s",
                (literal, user_id, cube_id, *params, literal, k),
            ).fetchall()

    # ------------------------------------------------------------------ copies

    def backup(self, dest: str | Path) -> dict[str, Any]:
        """A consistent copy of every scope into a new SQLite backup folder ``dest`` (the
        same format as the SQLite store's backups; ``mnemic migrate-store`` brings it back
        into PostgreSQL)."""
        from mnemic.infra.store.copy import backup_to_folder

        return backup_to_folder(self, Path(dest))

    # ------------------------------------------------------------------ whole cubes

    def get_vectors(self, user_id: str, cube_id: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        if not ids:
            return {}
        rows = self._read(
            "SELECT id, embedding::text AS vec FROM items WHERE user_id = %s AND cube_id = %s "
            "AND id = ANY(%s) AND embedding IS NOT NULL",
            (user_id, cube_id, list(dict.fromkeys(ids))),
        )
        return {r["id"]: parse_vector(r["vec"]) for r in rows}

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
        keys = [(i.user_id, i.cube_id, i.id) for i in items]
        if len(set(keys)) != len(keys):
            raise Conflict("the batch holds the same item id twice")
        deltas: dict[tuple[str, str], tuple[int, int]] = {}
        rows = []
        for n, item in enumerate(items):
            vector = None if vectors is None else vectors[n]
            count, vec_count = deltas.get((item.user_id, item.cube_id), (0, 0))
            deltas[(item.user_id, item.cube_id)] = (count + 1, vec_count + (vector is not None))
            params = item_params(item)
            params["embedding"] = None if vector is None else vector_literal(np.asarray(vector))
            rows.append(params)
        history_rows = [
            (
                h.user_id,
                h.cube_id,
                h.item_id,
                h.action,
                h.actor,
                h.at,
                h.reason,
                None if h.before is None else json.dumps(h.before),
                None if h.after is None else json.dumps(h.after),
            )
            for h in history
        ]

        def work(db: psycopg.Connection[Any]) -> None:
            if cube is not None:
                # one cube load at a time store-wide, so that two loads of one archive under
                # two cube ids cannot both find its ids free (held until commit)
                db.execute("SELECT pg_advisory_xact_lock(hashtext('mnemic:cube-load'))")
                created = db.execute(
                    "INSERT INTO cubes(cube_id, owner_id, manifest) VALUES (%s, %s, %s) "
                    "ON CONFLICT (cube_id) DO NOTHING",
                    (cube.cube_id, cube.owner_id, cube.model_dump_json()),
                )
                if created.rowcount == 0:
                    raise Conflict(
                        f"cube {cube.cube_id!r} exists already; load under another cube id"
                    )
                # ids are unique store-wide in SQLite; here the key is per scope, so look
                # (a scan of the primary key: loading a cube is rare, and must agree)
                taken = db.execute(
                    "SELECT id FROM items WHERE id = ANY(%s) LIMIT 1", ([k[2] for k in keys],)
                ).fetchone()
                if taken is not None:
                    raise Conflict(
                        f"an item with id {taken['id']} already exists in this store (was "
                        "this cube loaded here before?)"
                    )
            self._bump_scopes(db, deltas)
            with db.cursor() as cur:
                if rows:
                    _insert_items(cur, rows)
                if history_rows:
                    cur.executemany(
                        "INSERT INTO history(user_id, cube_id, item_id, action, actor, at, "
                        "reason, before, after) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                        history_rows,
                    )
            for user_id, cube_id in sorted(deltas):
                scope_ids = [k[2] for k in keys if (k[0], k[1]) == (user_id, cube_id)]
                self._count_tokens(db, user_id, cube_id, scope_ids, +1)

        self._retrying(work)


def _where(flt: ItemFilter) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if flt.statuses:
        clauses.append("i.status = ANY(%s)")
        params.append([MemoryStatus(s).value for s in flt.statuses])
    if flt.kinds:
        clauses.append("i.kind = ANY(%s)")
        params.append([str(k) for k in flt.kinds])
    if flt.session_id is not None:
        clauses.append("i.session_id = %s")
        params.append(flt.session_id)
    if flt.agent_id is not None:
        clauses.append("i.agent_id = %s")
        params.append(flt.agent_id)
    if flt.speaker is not None:
        clauses.append("i.speaker = %s")
        params.append(flt.speaker)
    for tag in flt.tags:
        clauses.append("i.tags @> %s::jsonb")
        params.append(json.dumps([tag]))
    if flt.valid_after is not None:
        clauses.append("i.valid_from >= %s")
        params.append(_aware(flt.valid_after))
    if flt.valid_before is not None:
        clauses.append("i.valid_from < %s")
        params.append(_aware(flt.valid_before))
    if flt.as_of is not None:
        at = _aware(flt.as_of)
        clauses.append("(i.valid_from IS NULL OR i.valid_from <= %s)")
        clauses.append("(i.valid_to IS NULL OR i.valid_to > %s)")
        params.extend([at, at])
    if flt.known_at is not None:
        clauses.append("i.recorded_at <= %s")
        params.append(_aware(flt.known_at))
    return ("".join(f" AND {c}" for c in clauses), params)


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value
