"""A MemCube as files: dump its three kinds of memory to a folder or one tar archive, load it back.

The folder holds ``cube.json`` (the cube's manifest, the format and schema versions, and the
sha256 of every other file), ``plaintext/items.jsonl`` (every item in any status, in the
store's order), ``plaintext/history.jsonl`` (every history row, numbered 1, 2, ... in the
store's order), ``plaintext/vectors.jsonl`` (each item's stored vector by item id, base64
float32; format 1 had no vectors and sorted items by id), ``activation/`` (KV cache files)
and ``parametric/`` (adapter folders). Files are written in a fixed order with sorted JSON,
and the archive with fixed owners, modes and times, so dumping what was loaded gives the
same bytes.

Writing is atomic: a folder is filled under a temporary name beside ``dest`` and renamed
into place, an archive is written to a temporary file, synced, and linked to its name (which
fails rather than replace a file that appeared meanwhile). A process killed part-way leaves
at most a hidden ``.<name>.tmp-*`` beside the destination, never a partial cube at it.

Loading verifies before it writes: an archive member that is not a regular file, or whose
path is absolute or climbs out (``..``), a file missing or changed against its hash, a file
the manifest does not list, a newer schema or another embedder than the target's is refused
with :class:`InvalidInput`, and the destination is left untouched.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from mnemic.errors import InvalidInput, StoreError
from mnemic.infra.hashing import sha256_file
from mnemic.infra.store.base import ItemFilter, Store
from mnemic.models import SCHEMA_VERSION, CubeManifest, HistoryEntry, MemoryItem

FORMAT = "mnemic-cube"
FORMAT_VERSION = 2  # 2: plaintext/vectors.jsonl, history rows numbered from 1
MANIFEST = "cube.json"
ITEMS, HISTORY, VECTORS = (
    "plaintext/items.jsonl",
    "plaintext/history.jsonl",
    "plaintext/vectors.jsonl",
)
KINDS = ("activation", "parametric")  # folders copied as they are, beside plaintext/
_PAGE = 500


def _read_cube(
    store: Store, user_id: str, cube_id: str
) -> tuple[list[MemoryItem], list[HistoryEntry], dict[str, Any]] | None:
    """The cube's items, history and vectors, or None if a write tore the reads apart."""
    everything = ItemFilter.any_status()
    items: list[MemoryItem] = []
    offset = 0
    while True:
        page = store.list_items(user_id, cube_id, everything, limit=_PAGE, offset=offset)
        items.extend(page)
        offset += len(page)
        if len(page) < _PAGE:
            break
    if len({i.id for i in items}) != len(items):
        return None  # an item moved between pages
    history = [h for item in items for h in store.history(user_id, cube_id, item.id)]
    history.sort(key=lambda h: h.id)
    last: dict[str, int] = {}
    for h in history:
        if h.after is not None and "version" in h.after:
            last[h.item_id] = max(last.get(h.item_id, 0), int(h.after["version"]))
    if any(last.get(i.id, i.version) != i.version for i in items):
        return None  # an item changed after it was read
    vectors: dict[str, Any] = {}
    for start in range(0, len(items), _PAGE):
        ids = [i.id for i in items[start : start + _PAGE]]
        vectors.update(store.get_vectors(user_id, cube_id, ids))
    if store.count_items(user_id, cube_id, everything) != len(items):
        return None  # an item was added or purged meanwhile
    return items, history, vectors


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r, sort_keys=True).encode() + b"\n" for r in rows)


_SNAPSHOT_TRIES = 5


def export_plaintext(store: Store, user_id: str, cube_id: str) -> dict[str, bytes]:
    """Every item (any status, in the store's order: valid time, then insertion, which a
    load keeps), every history row (in the store's order, numbered
    from 1 so that another store's numbering does not show) and every stored vector (by
    item id) of one cube, as JSONL.

    The reads are several calls, so a write in between could tear them (an item paged twice
    or missed, history newer than its item): what was read is checked against itself and
    against the cube's count, and read again if it does not hold together."""
    for _ in range(_SNAPSHOT_TRIES):
        snapshot = _read_cube(store, user_id, cube_id)
        if snapshot is not None:
            items, history, vectors = snapshot
            break
    else:
        raise StoreError(
            f"cube {cube_id} kept changing while it was dumped ({_SNAPSHOT_TRIES} tries); "
            "pause its writers and dump again"
        )
    return {
        ITEMS: _jsonl([i.model_dump(mode="json") for i in items]),
        HISTORY: _jsonl(
            [
                h.model_copy(update={"id": n}).model_dump(mode="json")
                for n, h in enumerate(history, 1)
            ]
        ),
        VECTORS: _jsonl(
            [
                {"id": i, "vector": base64.b64encode(v.astype("<f4").tobytes()).decode()}
                for i, v in sorted(vectors.items())
            ]
        ),
    }


def read_plaintext(
    folder: Path, manifest: CubeManifest
) -> tuple[list[MemoryItem], dict[str, Any], list[HistoryEntry]]:
    """The items, vectors (item id -> float32 array) and history rows of a verified cube
    folder; each line is validated, and every row must belong to the manifest's cube."""
    scope = (manifest.owner_id, manifest.cube_id)

    def lines(rel: str) -> list[dict[str, Any]]:
        path = folder / rel
        if not path.is_file():
            return []
        try:
            return [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
        except ValueError as exc:
            raise InvalidInput(f"{path} is not valid JSON lines: {exc}") from exc

    try:
        items = [MemoryItem.model_validate(row) for row in lines(ITEMS)]
        history = [HistoryEntry.model_validate(row) for row in lines(HISTORY)]
    except ValueError as exc:
        raise InvalidInput(f"{folder} holds an invalid item or history row: {exc}") from exc
    for owner, cube in [(i.user_id, i.cube_id) for i in items] + [
        (h.user_id, h.cube_id) for h in history
    ]:
        if (owner, cube) != scope:
            raise InvalidInput(
                f"{folder} holds a row of cube {cube!r} of user {owner!r}, not of "
                f"the cube its manifest names ({manifest.cube_id!r} of {manifest.owner_id!r})"
            )
    ids = {i.id for i in items}
    if len(ids) != len(items):
        raise InvalidInput(f"{folder} holds the same item id twice")
    vectors: dict[str, Any] = {}
    for line in lines(VECTORS):
        try:
            vector = np.frombuffer(base64.b64decode(line["vector"], validate=True), dtype="<f4")
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"{folder}/{VECTORS} holds an unreadable vector") from exc
        if line.get("id") not in ids or len(vector) != manifest.embedding_dim:
            raise InvalidInput(
                f"{folder}/{VECTORS} holds a vector of an unknown item or of another "
                f"dimension than the manifest's {manifest.embedding_dim}"
            )
        if not np.isfinite(vector).all() or not vector.any():
            raise InvalidInput(f"{folder}/{VECTORS} holds a vector that is not finite or zero")
        vectors[line["id"]] = vector.astype(np.float32)
    return items, vectors, history


def files_under(root: Path) -> list[Path]:
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
    """Write a cube into the new folder ``dest``, atomically: ``plaintext`` (from
    :func:`export_plaintext`) and the folders of ``kinds`` ("activation", "parametric").
    Returns the written manifest."""
    if dest.exists() and any(dest.iterdir()):
        raise InvalidInput(f"{dest} exists and is not empty; give a new folder for the cube")
    unknown = set(kinds or {}) - set(KINDS)
    if unknown:
        raise InvalidInput(f"unknown memory kinds {sorted(unknown)}; a cube holds {KINDS}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmp-"))
    try:
        document = _write_folder(staging, manifest, plaintext, kinds or {})
        _sync_tree(staging)
        try:
            os.rename(staging, dest)  # replaces an empty folder, never a filled one
        except OSError as exc:
            raise InvalidInput(f"{dest} appeared meanwhile; give a new folder: {exc}") from exc
        _sync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return document


def _write_folder(
    dest: Path,
    manifest: CubeManifest,
    plaintext: Mapping[str, bytes],
    kinds: Mapping[str, Path | None],
) -> dict[str, Any]:
    for rel, data in plaintext.items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_bytes(data)
    for kind, src in sorted(kinds.items()):
        if src is not None and src.is_dir():
            for path in files_under(src):
                target = dest / kind / path.relative_to(src)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
    files = {
        p.relative_to(dest).as_posix(): sha256_file(p)
        for p in files_under(dest)
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


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_tree(root: Path) -> None:
    """fsync every file and folder below ``root``: renamed into place, it survives power loss."""
    for path in files_under(root):
        with path.open("rb") as f:
            os.fsync(f.fileno())
    for folder in sorted({p.parent for p in files_under(root)} | {root}, reverse=True):
        _sync_dir(folder)


def pack(folder: Path, archive: Path) -> Path:
    """One tar file of a dumped cube folder, byte-reproducible (sorted, fixed metadata),
    written to a temporary file and linked to ``archive`` once complete and synced."""
    verify(folder)
    if archive.exists():
        raise InvalidInput(f"{archive} exists; give a new file name for the archive")
    archive.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=archive.parent, prefix=f".{archive.name}.tmp-")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for path in files_under(folder):
                    data = path.read_bytes()
                    info = tarfile.TarInfo(path.relative_to(folder).as_posix())
                    info.size, info.mode, info.mtime = len(data), 0o644, 0
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    tar.addfile(info, io.BytesIO(data))
            raw.flush()
            os.fsync(raw.fileno())
        try:
            os.link(tmp, archive)  # unlike a rename, never replaces a file that appeared
        except FileExistsError:
            raise InvalidInput(f"{archive} exists; give a new file name for the archive") from None
        _sync_dir(archive.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return archive


def save(
    dest: Path,
    manifest: CubeManifest,
    plaintext: Mapping[str, bytes],
    kinds: Mapping[str, Path | None] | None = None,
) -> dict[str, Any]:
    """:func:`dump` to a folder, or with a ``.tar`` name, to one archive (via a temporary
    folder beside it). Returns the manifest document."""
    if dest.suffix != ".tar":
        return dump(dest, manifest, plaintext, kinds)
    if dest.exists():
        raise InvalidInput(f"{dest} exists; give a new file name for the archive")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.tmp-") as tmp:
        document = dump(Path(tmp) / "cube", manifest, plaintext, kinds)
        pack(Path(tmp) / "cube", dest)
    return document


def open_cube(src: Path, staging: Path, **expect: Any) -> dict[str, Any]:
    """Bring the cube at ``src`` (an archive or a dumped folder) into the new folder
    ``staging``, verified (:func:`verify` with ``expect``); returns its manifest document.
    A folder is copied first, so what is verified is what is used."""
    if src.is_dir():
        if staging.exists() and any(staging.iterdir()):
            raise InvalidInput(f"{staging} exists and is not empty")
        for path in files_under(src):
            rel = path.relative_to(src)
            _safe_member(rel.as_posix())
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, staging / rel)
        return verify(staging, **expect)
    if not src.is_file():
        raise InvalidInput(f"{src} is neither a cube archive nor a dumped cube folder")
    return unpack(src, staging, **expect)


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
            # a plain tar only (mnemic writes them): a compressed one could unpack to far more
            # than the bytes that were bounded on the way in
            with tarfile.open(archive, "r:") as tar:
                _extract(tar, staging, limit=archive.stat().st_size)
        except (OSError, tarfile.TarError) as exc:
            raise InvalidInput(
                f"{archive} is not a readable plain tar archive ({exc}); a compressed "
                "archive must be decompressed first"
            ) from exc
        document = verify(staging, **expect)
        if dest.exists():
            dest.rmdir()
        staging.replace(dest)
    return document


def _extract(tar: tarfile.TarFile, staging: Path, *, limit: int) -> None:
    """Write the archive's regular files under ``staging``; their sizes together may not
    pass ``limit`` (the archive's own size: a plain tar holds no more than it weighs)."""
    total = 0
    for member in tar:
        rel = _safe_member(member.name)
        if not member.isfile() or member.issparse():
            raise InvalidInput(
                f"the archive holds {member.name!r}, which is not a regular file; refused"
            )
        total += member.size
        if total > limit:
            raise InvalidInput("the archive's files are larger than the archive; refused")
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
    present = {p.relative_to(folder).as_posix(): p for p in files_under(folder)}
    present.pop(MANIFEST, None)
    extra = sorted(set(present) - set(listed))
    if extra:
        raise InvalidInput(f"{folder} holds files its manifest does not list: {extra[:5]}")
    for rel, digest in listed.items():
        _safe_member(rel)
        if rel.split("/")[0] not in ("plaintext", *KINDS) or rel.count("/") == 0:
            raise InvalidInput(
                f"{folder} lists {rel!r}; a cube holds files under plaintext/ and {KINDS} only"
            )
        if rel not in present:
            raise InvalidInput(f"{folder} lacks {rel}, which its manifest lists")
        if sha256_file(present[rel]) != digest:
            raise InvalidInput(f"{folder}/{rel} does not match the hash in its manifest")
    CubeManifest.model_validate(cube)
    return document
