"""Compose: merge cube B into cube A of the same store, keeping where everything came from.

B's items (every status but deleted) come to A with new ids. An active item of B that A
already holds — the same normalised text, speaker and valid time, or a vector at least
``threshold`` similar (cosine) from the same speaker — is not copied: A's item survives,
and a new version of it records B's item in ``metadata["composed_from"]`` (history action
``compose``). A copied item records its origin the same way, and its links (``supersedes``,
``source.item_ids``, ``metadata["superseded_by"]``) follow the new ids. The copies are
written in one transaction (history action ``compose``); each survivor's new version in its
own. Running the same compose again changes nothing: A's items name the B items they stand
for, and those are left alone.

A's KV caches holding a survivor are invalidated (its version moved on); B's adapters are
copied into A's ``parametric/`` with ``made_by["composed_from"]`` naming B and the ids its
items have in A. B's KV caches are not carried: they hold B's ids and are recompiled on use.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from mnemic.infra.embed import Embedder
from mnemic.infra.store.base import ItemFilter, Store
from mnemic.models import HistoryEntry, MemoryItem, MemoryStatus, new_id, utcnow
from mnemic.operation.cube_io import files_under
from mnemic.operation.reader.deterministic import embed_text

_PAGE = 1000
_WORD = re.compile(r"\w+", re.UNICODE)
KEY = "composed_from"


def normalized(text: str) -> str:
    """Lower-case words joined by one space: punctuation and spacing do not count."""
    return " ".join(_WORD.findall(text.lower()))


def _all_items(store: Store, owner: str, cube_id: str, flt: ItemFilter) -> list[MemoryItem]:
    out: list[MemoryItem] = []
    while True:
        page = store.list_items(owner, cube_id, flt, limit=_PAGE, offset=len(out))
        out.extend(page)
        if len(page) < _PAGE:
            return out


def _vectors(
    store: Store, owner: str, cube_id: str, items: list[MemoryItem], embedder: Embedder, own: bool
) -> np.ndarray:
    """Unit vectors of ``items``: the stored ones when the cube is ``embedder``'s (``own``),
    else (and for items without one) freshly embedded."""
    stored = store.get_vectors(owner, cube_id, [i.id for i in items]) if own else {}
    missing = [n for n, i in enumerate(items) if i.id not in stored]
    out = np.zeros((len(items), embedder.dim), dtype=np.float32)
    for n, item in enumerate(items):
        if item.id in stored:
            out[n] = stored[item.id]
    if missing:
        out[missing] = embedder.embed([embed_text(items[n]) for n in missing])
    # unit length whatever was stored (a loaded cube's vectors are not ours to trust)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def compose(
    store: Store,
    *,
    into: tuple[str, str, Path],
    source: tuple[str, str, Path],
    embedder: Embedder,
    source_embedder: str | None,
    actor: str,
    threshold: float,
) -> dict[str, Any]:
    """Merge the cube ``source`` (owner, cube id, folder) into ``into``; A's embedder must be
    ``embedder``, B's vectors are used when ``source_embedder`` is the same."""
    from mnemic.infra.activation import ActivationStore

    a_owner, a_cube, a_folder = into
    b_owner, b_cube, b_folder = source
    a_all = _all_items(store, a_owner, a_cube, ItemFilter.any_status())
    a_items = [a for a in a_all if a.status == MemoryStatus.ACTIVE]
    a_vecs = _vectors(store, a_owner, a_cube, a_items, embedder, True)
    b_items = [
        i
        for i in _all_items(store, b_owner, b_cube, ItemFilter.any_status())
        if i.status != MemoryStatus.DELETED
    ]
    b_vecs = _vectors(store, b_owner, b_cube, b_items, embedder, source_embedder == embedder.id)

    by_key = {(normalized(a.text), a.speaker, a.valid_from): n for n, a in enumerate(a_items)}
    origin = {"cube_id": b_cube, "owner_id": b_owner}
    # B's items that an earlier compose copied (or collapsed): they stay where they went
    idmap: dict[str, str] = {
        entry["item_id"]: a.id
        for a in a_all
        for entry in a.metadata.get(KEY, [])
        if isinstance(entry, dict) and {**entry, "item_id": None} == {**origin, "item_id": None}
    }
    survivors: dict[int, list[str]] = {}  # index in a_items -> B ids it stands for
    carried: list[int] = []
    for n, b in enumerate(b_items):
        if b.id in idmap:
            continue
        match = None
        if b.status == MemoryStatus.ACTIVE:
            match = by_key.get((normalized(b.text), b.speaker, b.valid_from))
            if match is None and len(a_items):
                sims = a_vecs @ b_vecs[n]
                for best in np.argsort(-sims)[:5]:
                    if sims[best] < threshold:
                        break
                    if a_items[best].speaker == b.speaker:
                        match = int(best)
                        break
        if match is not None:
            idmap[b.id] = a_items[match].id
            survivors.setdefault(match, []).append(b.id)
        else:
            idmap[b.id] = new_id()
            carried.append(n)

    now = utcnow()
    copies = [_carry(b_items[n], a_owner, a_cube, idmap, origin) for n in carried]
    history = [
        HistoryEntry(
            id=0,
            item_id=c.id,
            user_id=a_owner,
            cube_id=a_cube,
            action="compose",
            actor=actor,
            at=now,
            reason=f"composed from cube {b_cube} (item {b_items[n].id})",
            before=None,
            after=c.model_dump(mode="json"),
        )
        for c, n in zip(copies, carried, strict=True)
    ]
    store.import_items(copies, [b_vecs[n] for n in carried], history)

    collapsed = 0
    for index, b_ids in sorted(survivors.items()):
        a = a_items[index]
        known = list(a.metadata.get(KEY, []))
        new = [{**origin, "item_id": i} for i in b_ids]
        collapsed += len(b_ids)
        store.update_item(
            a.model_copy(
                update={"version": a.version + 1, "metadata": {**a.metadata, KEY: known + new}}
            ),
            None,
            actor=actor,
            action="compose",
            reason=f"the same as item(s) {', '.join(b_ids)} of cube {b_cube}",
            expected_version=a.version,
        )
    invalidated = ActivationStore(a_folder / "activation").invalidate_from(store, a_owner, a_cube)
    adapters = _carry_adapters(b_folder / "parametric", a_folder / "parametric", origin, idmap)
    return {
        "cube_id": a_cube,
        "from_cube": b_cube,
        "carried": len(copies),
        "collapsed": collapsed,
        "changed": [a_items[index].id for index in sorted(survivors)],
        "invalidated_caches": len(invalidated),
        "adapters": adapters,
    }


def _carry(
    item: MemoryItem, owner: str, cube_id: str, idmap: dict[str, str], origin: dict[str, str]
) -> MemoryItem:
    metadata = dict(item.metadata)
    metadata[KEY] = [*metadata.get(KEY, []), {**origin, "item_id": item.id}]
    for key in ("superseded_by", "merged_into"):  # pointers to other items of the cube
        if isinstance(metadata.get(key), str):
            metadata[key] = idmap.get(metadata[key], metadata[key])
    if isinstance(metadata.get("absorbed"), list):
        metadata["absorbed"] = [idmap.get(i, i) for i in metadata["absorbed"]]
    source = item.source.model_copy(
        update={"item_ids": [idmap.get(i, i) for i in item.source.item_ids]}
    )
    return item.model_copy(
        update={
            "id": idmap[item.id],
            "user_id": owner,
            "cube_id": cube_id,
            "supersedes": idmap.get(item.supersedes, item.supersedes) if item.supersedes else None,
            "source": source,
            "metadata": metadata,
        }
    )


def _carry_adapters(
    src: Path, dest: Path, origin: dict[str, str], idmap: dict[str, str]
) -> list[dict[str, str]]:
    """Copy each adapter folder of ``src`` into ``dest`` (a new name if taken), with its
    provenance extended by where it came from and the ids its items have now."""
    from mnemic.infra.parametric.provenance import PROVENANCE

    out: list[dict[str, str]] = []
    if not src.is_dir():
        return out
    dest.mkdir(parents=True, exist_ok=True)
    carried_before = set()
    for held in dest.glob(f"*/{PROVENANCE}"):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            mark = json.loads(held.read_text()).get("made_by", {}).get(KEY, {})
            carried_before.add((mark.get("cube_id"), mark.get("adapter")))
    for folder in sorted(p for p in src.iterdir() if p.is_dir()):
        if (origin["cube_id"], folder.name) in carried_before:
            continue  # composed before
        name, n = folder.name, 1
        while (dest / name).exists():
            n += 1
            name = f"{folder.name}-{n}"
        with tempfile.TemporaryDirectory(dir=dest, prefix=".adapter-") as tmp:
            staged = Path(tmp) / name
            for path in files_under(folder):  # regular files only: a link is refused
                (staged / path.relative_to(folder)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, staged / path.relative_to(folder))
            meta_path = staged / PROVENANCE
            if meta_path.is_file():
                meta = json.loads(meta_path.read_text())
                distilled = [str(pair[0]) for pair in meta.get("items", [])]
                meta.setdefault("made_by", {})[KEY] = {
                    **origin,
                    "adapter": folder.name,
                    "item_ids": {i: idmap[i] for i in distilled if i in idmap},
                }
                meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True))
            staged.rename(dest / name)
        out.append({"adapter": folder.name, "as": name})
    return out
