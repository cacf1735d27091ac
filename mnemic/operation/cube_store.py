"""A MemCube between a store and files: dump it, load it (re-embedding it on migration), and
the folder that holds its KV caches and adapters.

A cube's plaintext lives in the Store; its activation and parametric memory in
``<home>/cubes/<name>-<hash>/`` (``activation/``, ``parametric/``). Loading is all or nothing:

1. the archive or folder is verified into ``<home>/cubes/.loading/<token>/files``;
2. the items, their vectors and their history are checked and prepared, and the cube's
   manifest is written to ``<token>/pending.json`` (synced);
3. **the commit point**: one store transaction creates the cube with every item, vector and
   history row (:meth:`Store.import_items`) — the store holds all of it or none of it;
4. the files are renamed into the cube's folder and the token's folder removed.

A process killed before 3 commits leaves only the token's folder; killed after, the files
wait there. Every later load, dump or folder lookup first recovers, under the same lock:
a token whose cube exists with exactly its pending manifest is rolled forward (files moved
into place), any other is deleted. So a cube is either in the store with its files, or not
there at all.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mnemic.errors import Conflict, InvalidInput
from mnemic.infra.embed import Embedder
from mnemic.infra.store.base import Store
from mnemic.models import CubeManifest, HistoryEntry, MemoryItem
from mnemic.operation import cube_io
from mnemic.operation.reader.deterministic import embed_text

CUBES = "cubes"
_LOADING = ".loading"
_PENDING = "pending.json"


def cube_folder(home: Path, cube_id: str) -> Path:
    """Where a cube's ``activation/`` and ``parametric/`` folders live (any cube id is safe)."""
    digest = hashlib.sha256(cube_id.encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", cube_id).strip(".-")[:48] or "cube"
    return home / CUBES / f"{slug}-{digest}"


@contextlib.contextmanager
def locked(home: Path) -> Iterator[Path]:
    """The cubes folder of ``home``, under an exclusive lock held across processes, after
    recovering what an interrupted load left (see the module's docstring)."""
    root = home / CUBES
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield root
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def recover(store: Store, home: Path) -> list[str]:
    """Finish or undo the loads a killed process left in ``<home>/cubes/.loading``; call
    under :func:`locked`. Returns the cube ids rolled forward."""
    loading = home / CUBES / _LOADING
    done: list[str] = []
    if not loading.is_dir():
        return done
    for work in sorted(loading.iterdir()):
        manifest = None
        with contextlib.suppress(OSError, ValueError):
            manifest = CubeManifest.model_validate_json((work / _PENDING).read_text())
        if manifest is not None and store.get_cube(manifest.cube_id) == manifest:
            _place(work / "files", cube_folder(home, manifest.cube_id))
            done.append(manifest.cube_id)
        shutil.rmtree(work, ignore_errors=True)
    return done


def _place(files: Path, final: Path) -> None:
    if not files.is_dir():  # moved already, by the load itself
        return
    if final.exists():  # a folder of a cube this store does not hold (another store's?)
        os.rename(final, final.with_name(f"{final.name}.orphan-{uuid.uuid4().hex[:8]}"))
    final.parent.mkdir(parents=True, exist_ok=True)
    os.rename(files, final)


def folder_of(store: Store, home: Path, cube_id: str) -> Path:
    """The cube's folder, created if missing, after recovery."""
    with locked(home):
        recover(store, home)
        folder = cube_folder(home, cube_id)
        for kind in cube_io.KINDS:
            (folder / kind).mkdir(parents=True, exist_ok=True)
        return folder


def dump(store: Store, home: Path, owner: str, cube_id: str, dest: Path) -> dict[str, Any]:
    """Write the cube (plaintext with vectors and history, KV caches, adapters) to ``dest``:
    a new folder, or one archive when its name ends in ``.tar``. Returns the manifest."""
    manifest = store.get_cube(cube_id)
    if manifest is None:
        raise InvalidInput(f"no cube {cube_id!r} to dump")
    with locked(home):
        recover(store, home)
        folder = cube_folder(home, cube_id)
        plaintext = cube_io.export_plaintext(store, owner, cube_id)
        return cube_io.save(dest, manifest, plaintext, {k: folder / k for k in cube_io.KINDS})


def load(
    store: Store,
    home: Path,
    src: Path,
    *,
    owner: str,
    cube_id: str | None,
    embedder: Embedder,
    reembed: bool = False,
) -> dict[str, Any]:
    """Load the cube archive or folder ``src`` into ``store`` as ``owner``'s cube ``cube_id``
    (default: its own id), all or nothing. Stored vectors are used when the cube's embedder
    is ``embedder``; otherwise ``reembed`` re-embeds every item with it (a migration), and
    without it the load is refused. Returns what was loaded."""
    with locked(home) as root:
        recover(store, home)
        work = root / _LOADING / uuid.uuid4().hex
        work.mkdir(parents=True)
        try:
            document = cube_io.open_cube(src, work / "files")
            prepared = _prepare(store, work / "files", document, owner, cube_id, embedder, reembed)
            manifest, items, vectors, history, report = prepared
            for rel in (cube_io.MANIFEST, "plaintext"):  # in the store from now on
                path = work / "files" / rel
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
            pending = work / _PENDING
            pending.write_text(manifest.model_dump_json())
            with pending.open("rb") as f:
                os.fsync(f.fileno())
            store.import_items(items, vectors, history, cube=manifest)  # the commit point
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        _place(work / "files", cube_folder(home, manifest.cube_id))
        shutil.rmtree(work, ignore_errors=True)
    return report


def _prepare(
    store: Store,
    folder: Path,
    document: dict[str, Any],
    owner: str,
    cube_id: str | None,
    embedder: Embedder,
    reembed: bool,
) -> tuple[
    CubeManifest, list[MemoryItem], list[np.ndarray | None], list[HistoryEntry], dict[str, Any]
]:
    original = CubeManifest.model_validate(document["cube"])
    target = cube_id or original.cube_id
    if store.get_cube(target) is not None:
        raise Conflict(
            f"cube {target!r} exists already; load under another cube id, or load it "
            "elsewhere and compose it into that cube"
        )
    items, stored, history = cube_io.read_plaintext(folder, original)
    same = (original.embedder, original.embedding_dim) == (embedder.id, embedder.dim)
    if not same and items and not reembed:
        raise InvalidInput(
            f"the cube's vectors come from {original.embedder} ({original.embedding_dim}-d) "
            f"and this store embeds with {embedder.id} ({embedder.dim}-d); load it with "
            f"reembed (--reembed) to re-embed its {len(items)} items with {embedder.id}"
        )
    vectors: list[np.ndarray | None] = [stored.get(i.id) if same else None for i in items]
    missing = [n for n, v in enumerate(vectors) if v is None]
    if missing:
        fresh = embedder.embed([embed_text(items[n]) for n in missing])
        for row, n in enumerate(missing):
            vectors[n] = fresh[row]
    moved = (owner, target) != (original.owner_id, original.cube_id)
    if moved:
        items = [_rebind(i, owner, target) for i in items]
        history = [
            h.model_copy(
                update={
                    "user_id": owner,
                    "cube_id": target,
                    "before": _rebind_dict(h.before, owner, target),
                    "after": _rebind_dict(h.after, owner, target),
                }
            )
            for h in history
        ]
    manifest = original
    if moved or not same:
        provenance = dict(original.provenance)
        if moved:
            provenance["loaded_from"] = {
                "cube_id": original.cube_id,
                "owner_id": original.owner_id,
            }
        if not same:
            provenance["reembedded_from"] = {
                "embedder": original.embedder,
                "embedding_dim": original.embedding_dim,
            }
        manifest = original.model_copy(
            update={
                "cube_id": target,
                "owner_id": owner,
                "embedder": embedder.id,
                "embedding_dim": embedder.dim,
                "provenance": provenance,
            }
        )
    report = {
        "cube_id": target,
        "owner_id": owner,
        "items": len(items),
        "history": len(history),
        "vectors_stored": len(items) - len(missing),
        "vectors_embedded": len(missing),
        "reembedded": not same and bool(items),
        "embedder": embedder.id,
        "from_embedder": original.embedder,
        "files": sorted(f for f in document["files"] if not f.startswith("plaintext/")),
    }
    return manifest, items, vectors, history, report


def _rebind(item: MemoryItem, owner: str, cube_id: str) -> MemoryItem:
    return item.model_copy(update={"user_id": owner, "cube_id": cube_id})


def _rebind_dict(data: dict[str, Any] | None, owner: str, cube_id: str) -> dict[str, Any] | None:
    if data is None:
        return None
    out = json.loads(json.dumps(data))
    if "user_id" in out:
        out["user_id"] = owner
    if "cube_id" in out:
        out["cube_id"] = cube_id
    return out
