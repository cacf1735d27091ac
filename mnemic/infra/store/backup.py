"""Backups of the embedded store: an online, consistent copy with a manifest of hashes.

``backup`` uses SQLite's online backup API, so writers may go on meanwhile and the copy is a
consistent snapshot. ``restore`` verifies the manifest's hash and the copy's integrity before
it replaces anything, and drops the vector-index snapshots, which describe the old data (the
store rebuilds them from the restored rows).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from mnemic.errors import InvalidInput, StoreError
from mnemic.infra.hashing import sha256_file
from mnemic.models import utcnow

FORMAT = "mnemic-sqlite-backup"
DB_NAME = "mnemic.db"
MANIFEST = "manifest.json"


def backup(db: sqlite3.Connection, dest: Path) -> dict[str, Any]:
    """Copy the open database ``db`` into the new folder ``dest``; returns the manifest."""
    if dest.exists() and any(dest.iterdir()):
        raise InvalidInput(f"{dest} exists and is not empty; give a new folder for the backup")
    dest.mkdir(parents=True, exist_ok=True)
    target_path = dest / DB_NAME
    target = sqlite3.connect(target_path)
    try:
        db.backup(target)
        target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        items = target.execute("SELECT count(*) FROM items").fetchone()[0]
        history = target.execute("SELECT count(*) FROM history").fetchone()[0]
        schema = target.execute("PRAGMA user_version").fetchone()[0]
    finally:
        target.close()
    manifest = {
        "format": FORMAT,
        "created_at": utcnow().isoformat(),
        "schema_version": schema,
        "items": items,
        "history": history,
        "files": {DB_NAME: sha256_file(target_path)},
    }
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def verify(src: Path) -> dict[str, Any]:
    """Check a backup folder: manifest, hash and SQLite integrity. Returns the manifest."""
    try:
        manifest = json.loads((src / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{src} is not a mnemic backup (no readable {MANIFEST}: {exc})") from exc
    if manifest.get("format") != FORMAT:
        raise InvalidInput(f"{src}/{MANIFEST} is not a {FORMAT} manifest")
    db_path = src / DB_NAME
    if not db_path.is_file():
        raise InvalidInput(f"{src} has no {DB_NAME}")
    expected = manifest.get("files", {}).get(DB_NAME)
    if sha256_file(db_path) != expected:
        raise InvalidInput(f"{db_path} does not match the hash in its manifest: it was changed")
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        if conn.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            raise InvalidInput(f"{db_path} fails SQLite's integrity check")
    finally:
        conn.close()
    return manifest


def restore(src: Path, target: Path, *, force: bool = False) -> dict[str, Any]:
    """Replace the database at ``target`` with the verified backup in ``src``.

    Stop every process using ``target`` first. Without ``force`` an existing database is
    never replaced."""
    manifest = verify(src)
    if target.exists() and not force:
        raise InvalidInput(f"{target} exists; pass force to replace it with the backup")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".restoring")
    shutil.copyfile(src / DB_NAME, tmp)
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    for suffix in ("-wal", "-shm"):  # the old database's journal must not replay onto this
        target.with_name(target.name + suffix).unlink(missing_ok=True)
    snapshots = target.with_name(target.name + ".vectors")
    if snapshots.exists():
        shutil.rmtree(snapshots)
    try:
        os.replace(tmp, target)
    except OSError as exc:
        raise StoreError(f"cannot put the backup in place at {target}: {exc}") from exc
    return manifest
