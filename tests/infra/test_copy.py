"""Copying a store between backends: everything arrives, checked; a used destination is
refused; the PostgreSQL backup is a verifiable SQLite backup."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from mnemic.errors import InvalidInput
from mnemic.infra.store.base import ItemFilter
from mnemic.infra.store.copy import copy_store, migrate
from mnemic.infra.store.postgres import PostgresStore
from mnemic.infra.store.sqlite import SQLiteStore
from mnemic.models import MemoryItem, MemoryStatus, Source

DIM = 8


def fill(store) -> dict[str, MemoryItem]:
    """Two users, vectors on some items, an update, a purge, a cube and access counts."""
    rng = np.random.default_rng(3)
    store.ensure_cube("ana/default", "ana", embedder="e", dim=DIM)
    items = [
        MemoryItem(
            user_id="ana",
            cube_id="ana/default",
            text=f"ana note {n} about tea",
            speaker="Ana",
            session_id=f"s{n % 2}",
            valid_from=datetime(2023, 1, n + 1, tzinfo=UTC),
            tags=["t"],
            metadata={"n": n, "f": 0.1 * n},
            source=Source(message_ids=[f"D1:{n}"], offsets=(0, 3)),
            index_text=f"Ana: note {n}",
        )
        for n in range(7)
    ]
    store.add_items(items[:5], rng.normal(size=(5, DIM)).astype(np.float32), actor="t")
    store.add_items(items[5:], None, actor="t")  # no vectors
    bob = MemoryItem(user_id="bob", cube_id="bob/default", text="bob likes sailing")
    store.add_items([bob], rng.normal(size=(1, DIM)).astype(np.float32), actor="t")
    store.update_item(
        items[1].model_copy(update={"text": "changed", "version": 2}), None, actor="ana"
    )
    store.update_item(
        items[2].model_copy(update={"status": MemoryStatus.DELETED}), None, actor="ana"
    )
    store.purge_item("ana", "ana/default", items[3].id, actor="ana")
    store.record_access("ana", "ana/default", [items[0].id])
    store.grant("ana/default", "bob", "read")
    return {i.id: i for i in [*items, bob]}


def snapshot(store) -> dict:
    out = {}
    for user, cube in (("ana", "ana/default"), ("bob", "bob/default")):
        items = store.list_items(user, cube, ItemFilter.any_status(), limit=100)
        out[cube] = {
            "items": [i.model_dump() for i in items],
            "history": {
                i: [h.model_dump(exclude={"id"}) for h in store.history(user, cube, i)]
                for i in [x.id for x in items]
            },
            # as a set: SQLite's FTS5 counts document frequencies over all scopes, PostgreSQL
            # per scope, so ties and near-ties may order differently across backends
            "tea": {s.item_id for s in store.fulltext_search(user, cube, "tea note", 10)},
            "near": [s.item_id for s in store.vector_search(user, cube, np.ones(DIM), 10)],
        }
    out["cubes"] = [c.model_dump() for c in store.list_cubes("ana")]
    out["grants"] = [(g.cube_id, g.grantee, g.access) for g in store.grants()]
    return out


@pytest.mark.parametrize("direction", ["sqlite->postgres", "postgres->sqlite"])
def test_copy_between_backends_keeps_everything(direction, pg_dsn: str, tmp_path: Path) -> None:
    sqlite = SQLiteStore(tmp_path / "s.db", dim=DIM)
    pg = PostgresStore(pg_dsn, dim=DIM)
    src, dst = (sqlite, pg) if direction.startswith("sqlite") else (pg, sqlite)
    try:
        items = fill(src)
        report = copy_store(src, dst)
        assert report.items == 7 and report.cubes == 1 and len(report.scopes) == 2
        assert snapshot(dst) == snapshot(src)
        ana = next(s for s in report.scopes if s.user_id == "ana")
        assert ana.history == 7 + 2 + 1  # adds, updates, purge
        # the purged item's content is gone from the copied history too
        (purged,) = [i for i in items.values() if i.text == "ana note 3 about tea"]
        hist = dst.history("ana", "ana/default", purged.id)
        assert [h.action for h in hist] == ["add", "purge"]
        assert all(h.before is None and h.after is None for h in hist)
        # a second copy into the now-used store is refused and writes nothing
        with pytest.raises(InvalidInput, match="already"):
            copy_store(src, dst)
        with pytest.raises(InvalidInput, match="already has cube"):
            copy_store(src, dst, force=True)
        assert dst.count_items("ana", "ana/default", ItemFilter.any_status()) == 6
        # the copy is a working store: writes go on from where the source was
        dst.add_items(
            [MemoryItem(user_id="ana", cube_id="ana/default", text="more tea")],
            np.ones((1, DIM), np.float32),
            actor="t",
        )
        assert dst.fulltext_search("ana", "ana/default", "more", 1)
    finally:
        sqlite.close()
        pg.close()


def test_migrate_by_name_and_the_cli(pg_dsn: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mnemic.interface.cli import app

    with SQLiteStore(tmp_path / "a.db", dim=DIM) as s:
        fill(s)
    report = migrate(str(tmp_path / "a.db"), pg_dsn)
    assert report.items == 7
    result = CliRunner().invoke(app, ["migrate-store", pg_dsn, str(tmp_path / "b.db")])
    assert result.exit_code == 0, result.output
    assert "7 items" in result.output
    with SQLiteStore(tmp_path / "a.db") as a, SQLiteStore(tmp_path / "b.db") as b:
        assert snapshot(a) == snapshot(b)
    with pytest.raises(InvalidInput, match="neither"):
        migrate(str(tmp_path / "missing.db"), pg_dsn)


def test_postgres_backup_is_a_verified_sqlite_backup(pg_dsn: str, tmp_path: Path) -> None:
    from mnemic.infra.store import backup

    with PostgresStore(pg_dsn, dim=DIM) as pg:
        fill(pg)
        manifest = pg.backup(tmp_path / "bk")
        assert manifest["items"] == 7
        assert backup.verify(tmp_path / "bk")["items"] == 7
        backup.restore(tmp_path / "bk", tmp_path / "restored.db")
        with SQLiteStore(tmp_path / "restored.db") as restored:
            assert snapshot(restored) == snapshot(pg)
        with pytest.raises(InvalidInput, match="not empty"):
            pg.backup(tmp_path / "bk")
