"""Shared fixtures: a fresh store per backend, one real embedder per test session."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

STORE_BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the real user data directory or config."""
    monkeypatch.setenv("MNEMIC_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MNEMIC_CONFIG", raising=False)


@pytest.fixture(params=STORE_BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    if request.param == "sqlite":
        from mnemic.infra.store.sqlite import SQLiteStore

        s = SQLiteStore(tmp_path / "store.db", dim=8)
    elif request.param == "postgres":
        from mnemic.infra.store.postgres import PostgresStore

        s = PostgresStore(request.getfixturevalue("pg_dsn"), dim=8)
    else:  # pragma: no cover - added with each backend
        raise NotImplementedError(request.param)
    yield s
    s.close()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[object]:
    """One real PostgreSQL 16 + pgvector (pgserver from PyPI) for the whole session.

    Its data lives outside pytest's basetemp, which a concurrent pytest run may rotate away."""
    import shutil
    import tempfile

    import pgserver

    folder = tempfile.mkdtemp(prefix="mnemic-pg-")
    server = pgserver.get_server(folder, cleanup_mode="stop")
    yield server
    server.cleanup()
    shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _database(pg_server: object) -> Iterator[str]:
    """A fresh, empty database on the session's server, dropped on exit."""
    import uuid

    import psycopg
    from psycopg.conninfo import make_conninfo

    admin = pg_server.get_uri()  # type: ignore[attr-defined]
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield make_conninfo(admin, dbname=name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def pg_dsn(pg_server: object) -> Iterator[str]:
    """A fresh, empty database on the session's server, dropped after the test."""
    with _database(pg_server) as dsn:
        yield dsn


@pytest.fixture
def fresh_store(store: object, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    """A second empty store of the backend ``store`` is (to compare the two)."""
    from mnemic.infra.store.sqlite import SQLiteStore

    if isinstance(store, SQLiteStore):
        s = SQLiteStore(tmp_path / "fresh.db", dim=8)
        yield s
        s.close()
        return
    from mnemic.infra.store.postgres import PostgresStore

    with _database(request.getfixturevalue("pg_server")) as dsn:
        s = PostgresStore(dsn, dim=8)
        yield s
        s.close()


@pytest.fixture(scope="session")
def embedder() -> object:
    from mnemic.config import EmbedderConfig
    from mnemic.infra.embed import get_embedder

    return get_embedder(EmbedderConfig())


@pytest.fixture(params=STORE_BACKENDS)
def memory(request: pytest.FixtureRequest, tmp_path: Path, embedder: object) -> Iterator[object]:
    from mnemic import Memory, load_settings

    overrides: dict[str, object] = {}
    if request.param == "postgres":
        overrides["store"] = {"backend": "postgres", "dsn": request.getfixturevalue("pg_dsn")}
    settings = load_settings(home=tmp_path / "mem", **overrides)
    with Memory(settings, embedder=embedder) as mem:  # type: ignore[arg-type]
        yield mem
