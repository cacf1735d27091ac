"""API keys: users of the server and their keys, kept hashed in their own SQLite file.

A key is ``mn_`` + 43 url-safe characters (32 random bytes); only its sha256 is stored, and a
presented key is looked up by its hash then compared in constant time. The admin key comes
from the config (``server.admin_key`` or ``MNEMIC_ADMIN_KEY``) or is generated at the first
start; either way only its hash is on disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mnemic.errors import Conflict, NotFound, StoreError

PREFIX = "mn_"
ADMIN = "\x00admin"  # the admin's principal: no user id can contain a control character

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (user_id TEXT PRIMARY KEY, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS keys (
    key_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS keys_user ON keys(user_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class User:
    user_id: str
    created_at: datetime
    keys: int


class KeyStore:
    """Users and their hashed keys in ``path``; thread-safe."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the key file {self.path}: {exc}") from exc
        self._lock = threading.Lock()
        self._admin_hash: str | None = None

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ admin

    def setup_admin(self, configured: str | None) -> str | None:
        """Use the configured admin key, else the stored one; with neither, make one and
        return it (the only time it is ever shown)."""
        if configured:
            self._admin_hash = hash_key(configured)
            return None
        with self._tx() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'admin_key_hash'").fetchone()
            if row is not None:
                self._admin_hash = row[0]
                return None
            key = new_key()
            db.execute(
                "INSERT INTO meta(key, value) VALUES ('admin_key_hash', ?)", (hash_key(key),)
            )
        self._admin_hash = hash_key(key)
        return key

    # ------------------------------------------------------------------ users

    def create_user(self, user_id: str) -> str:
        """Register ``user_id`` and return its first API key (shown only this once)."""
        key = new_key()
        now = _now()
        with self._tx() as db:
            if db.execute("SELECT 1 FROM users WHERE user_id = ?", (user_id,)).fetchone():
                raise Conflict(
                    f"user {user_id!r} exists already; issue a new key with "
                    f"POST /v1/users/{{user_id}}/keys instead"
                )
            db.execute("INSERT INTO users(user_id, created_at) VALUES (?, ?)", (user_id, now))
            db.execute(
                "INSERT INTO keys(key_hash, user_id, created_at) VALUES (?, ?, ?)",
                (hash_key(key), user_id, now),
            )
        return key

    def issue_key(self, user_id: str, *, revoke_others: bool = False) -> str:
        """A new key for an existing user; ``revoke_others`` makes it the only valid one."""
        key = new_key()
        with self._tx() as db:
            if not db.execute("SELECT 1 FROM users WHERE user_id = ?", (user_id,)).fetchone():
                raise NotFound(f"no user {user_id!r}; create it with POST /v1/users first")
            if revoke_others:
                db.execute("DELETE FROM keys WHERE user_id = ?", (user_id,))
            db.execute(
                "INSERT INTO keys(key_hash, user_id, created_at) VALUES (?, ?, ?)",
                (hash_key(key), user_id, _now()),
            )
        return key

    def users(self) -> list[User]:
        with self._lock:
            rows = self._db.execute(
                "SELECT u.user_id, u.created_at, count(k.key_hash) FROM users u "
                "LEFT JOIN keys k ON k.user_id = u.user_id GROUP BY u.user_id ORDER BY u.user_id"
            ).fetchall()
        return [User(r[0], datetime.fromisoformat(r[1]), r[2]) for r in rows]

    def authenticate(self, key: str) -> str | None:
        """The principal a key belongs to (a user id, or :data:`ADMIN`), or None."""
        digest = hash_key(key)
        if self._admin_hash is not None and hmac.compare_digest(digest, self._admin_hash):
            return ADMIN
        with self._lock:
            row = self._db.execute(
                "SELECT key_hash, user_id FROM keys WHERE key_hash = ?", (digest,)
            ).fetchone()
        if row is None or not hmac.compare_digest(row[0], digest):
            return None
        return str(row[1])


def _now() -> str:
    return datetime.now(UTC).isoformat()
