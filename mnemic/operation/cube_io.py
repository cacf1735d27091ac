"""A MemCube as files: dump its three kinds of memory to a folder or one tar archive, load it back.

The folder holds ``cube.json`` (the cube's manifest, the format and schema versions, and the
sha256 of every other file), ``plaintext/items.jsonl`` and ``plaintext/history.jsonl`` (every
item in any status and every history row, from the Store protocol), ``activation/`` (KV
cache files) and ``parametric/`` (adapter folders). Files are written in a fixed order with
sorted JSON, and the archive with fixed owners, modes and times, so dumping what was loaded
gives the same bytes.

Loading verifies before it writes: an archive member that is not a regular file, or whose
path is absolute or climbs out (``..``), a file missing or changed against its hash, a file
the manifest does not list, a newer schema or another embedder than the target's is refused
with :class:`InvalidInput`, and the destination is left untouched.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from mnemic.errors import InvalidInput
from mnemic.infra.hashing import sha256_file
from mnemic.infra.store.base import ItemFilter, Store
from mnemic.models import SCHEMA_VERSION, CubeManifest

FORMAT = "mnemic-cube"
FORMAT_VERSION = 1
MANIFEST = "cube.json"
KINDS = ("activation", "parametric")  # folders copied as they are, beside plaintext/
_PAGE = 500


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r, sort_keys=True).encode() + b"\n" for r in rows)


def export_plaintext(store: Store, user_id: str, cube_id: str) -> dict[str, bytes]:
    """Every item (any status, by id) and every history row (by id) of one cube, as JSONL."""
    items, offset = [], 0
    while True:
        page = store.list_items(
            user_id, cube_id, ItemFilter.any_status(), limit=_PAGE, offset=offset
        )
        items.extend(page)
        offset += len(page)
        if len(page) < _PAGE:
            break
    items.sort(key=lambda i: i.id)
    history = [h for item in items for h in store.history(user_id, cube_id, item.id)]
    history.sort(key=lambda h: h.id)
    return {
        "plaintext/items.jsonl": _jsonl([i.model_dump(mode="json") for i in items]),
        "plaintext/history.jsonl": _jsonl([h.model_dump(mode="json") for h in history]),
    }


def _files_under(root: Path) -> list[Path]:
    out = []
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            raise InvalidInput(f"{path} is a symbolic link; a cube holds regular files only")
        if path.is_file():
            out.append(path)
    return out


def dump(
    dest: Path,
    manifest: CubeManifest,
    plaintext: Mapping[str, bytes],
    kinds: Mapping[str, Path | None] | None = None,
) -> dict[str, Any]:
    """Write a cube into the new folder ``dest``: ``plaintext`` (from :func:`export_plaintext`)
    and the folders of ``kinds`` ("activation", "parametric"). Returns the written manifest."""
    if dest.exists() and any(dest.iterdir()):
        raise InvalidInput(f"{dest} exists and is not empty; give a new folder for the cube")
    unknown = set(kinds or {}) - set(KINDS)
    if unknown:
        raise InvalidInput(f"unknown memory kinds {sorted(unknown)}; a cube holds {KINDS}")
    dest.mkdir(parents=True, exist_ok=True)
    for rel, data in plaintext.items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_bytes(data)
    for kind, src in sorted((kinds or {}).items()):
        if src is not None and src.is_dir():
            for path in _files_under(src):
                target = dest / kind / path.relative_to(src)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
    files = {
        p.relative_to(dest).as_posix(): sha256_file(p)
        for p in _files_under(dest)
        if p.name != MANIFEST or p.parent != dest
    }
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "cube": manifest.model_dump(mode="json"),
        "files": dict(sorted(files.items())),
    }
    (dest / MANIFEST).write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    return document


def pack(folder: Path, archive: Path) -> Path:
    """One tar file of a dumped cube folder, byte-reproducible (sorted, fixed metadata)."""
    verify(folder)
    if archive.exists():
        raise InvalidInput(f"{archive} exists; give a new file name for the archive")
    tmp = archive.with_name(archive.name + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in _files_under(folder):
            data = path.read_bytes()
            info = tarfile.TarInfo(path.relative_to(folder).as_posix())
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    tmp.replace(archive)
    return archive


def _safe_member(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts or "\\" in name:
        raise InvalidInput(f"the archive holds {name!r}, a path outside its folder; refused")
    return path


def unpack(archive: Path, dest: Path, **expect: Any) -> dict[str, Any]:
    """Verify and extract ``archive`` into the new folder ``dest``; nothing is written to
    ``dest`` unless every check passes. ``expect`` is passed to :func:`verify`."""
    if dest.exists() and any(dest.iterdir()):
        raise InvalidInput(f"{dest} exists and is not empty; give a new folder to load into")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".cube-") as tmp:
        staging = Path(tmp) / "cube"
        staging.mkdir()
        try:
            with tarfile.open(archive, "r:*") as tar:
                _extract(tar, staging)
        except (OSError, tarfile.TarError) as exc:
            raise InvalidInput(f"{archive} is not a readable tar archive: {exc}") from exc
        document = verify(staging, **expect)
        if dest.exists():
            dest.rmdir()
        staging.replace(dest)
    return document


def _extract(tar: tarfile.TarFile, staging: Path) -> None:
    for member in tar:
        rel = _safe_member(member.name)
        if not member.isfile():
            raise InvalidInput(
                f"the archive holds {member.name!r}, which is not a regular file; refused"
            )
        target = staging.joinpath(*rel.parts)
        if target.exists():
            raise InvalidInput(f"the archive holds {member.name!r} twice; refused")
        target.parent.mkdir(parents=True, exist_ok=True)
        source = tar.extractfile(member)
        assert source is not None  # a regular file always has content
        with source, target.open("wb") as out:
            shutil.copyfileobj(source, out)


def verify(
    folder: Path, *, embedder: str | None = None, embedding_dim: int | None = None
) -> dict[str, Any]:
    """Check a cube folder against its manifest; with ``embedder``/``embedding_dim``, also that
    the cube's vectors were made by that embedder. Returns the manifest document."""
    try:
        document = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{folder} is not a mnemic cube (no readable {MANIFEST})") from exc
    if document.get("format") != FORMAT:
        raise InvalidInput(f"{folder}/{MANIFEST} is not a {FORMAT} manifest")
    cube = document.get("cube", {})
    if document.get("format_version", 0) > FORMAT_VERSION or (
        cube.get("schema_version", 0) > SCHEMA_VERSION
    ):
        raise InvalidInput(f"{folder} was written by a newer mnemic; upgrade mnemic to load it")
    if embedder is not None and (cube.get("embedder"), cube.get("embedding_dim")) != (
        embedder,
        embedding_dim,
    ):
        raise InvalidInput(
            f"the cube's vectors come from {cube.get('embedder')} ({cube.get('embedding_dim')}-d), "
            f"the target uses {embedder} ({embedding_dim}-d); migrate it (re-embed) instead"
        )
    listed: dict[str, str] = document.get("files", {})
    present = {p.relative_to(folder).as_posix(): p for p in _files_under(folder)}
    present.pop(MANIFEST, None)
    extra = sorted(set(present) - set(listed))
    if extra:
        raise InvalidInput(f"{folder} holds files its manifest does not list: {extra[:5]}")
    for rel, digest in listed.items():
        _safe_member(rel)
        if rel not in present:
            raise InvalidInput(f"{folder} lacks {rel}, which its manifest lists")
        if sha256_file(present[rel]) != digest:
            raise InvalidInput(f"{folder}/{rel} does not match the hash in its manifest")
    CubeManifest.model_validate(cube)
    return document
