"""Where activation caches live: one safetensors file a cache, under a folder per model.

``<root>/<model slug>/<key>.safetensors``, the key hashing the model (id, fingerprint, layers,
dtype) and the ids and versions of the items held, in order. A lookup for items at other
versions finds nothing; :meth:`ActivationStore.invalidate` deletes caches whose items moved on.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnemic.infra.activation import kv
from mnemic.models import MemoryItem, MemoryStatus

SUFFIX = ".safetensors"


def _slug(model_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "--", model_id).strip(".-") or "model"


@dataclass(frozen=True)
class CacheInfo:
    path: Path
    key: str
    model_id: str
    tokens: int
    items: list[tuple[str, int]]
    size: int  # bytes on disk


class ActivationStore:
    """The KV caches of one cube (its folder), for any number of models."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path_for(self, model: kv.ModelKey, items: Sequence[tuple[str, int]]) -> Path:
        return self.root / _slug(model.model_id) / f"{kv.cache_key(model, items)}{SUFFIX}"

    def put(self, cache: kv.KVCache) -> Path:
        path = self.path_for(cache.model, cache.items)
        kv.save(cache, path)
        return path

    def get(
        self, model: Any, items: Sequence[MemoryItem], *, model_id: str | None = None
    ) -> kv.KVCache | None:
        """The cache of exactly ``items`` (ids and versions, in order) for ``model``, if any."""
        key = kv.model_key(model, model_id)
        path = self.path_for(key, [(i.id, i.version) for i in items])
        return kv.load(path) if path.is_file() else None

    def get_or_compile(
        self,
        model: Any,
        tokenizer: Any,
        items: Sequence[MemoryItem],
        *,
        model_id: str | None = None,
    ) -> kv.KVCache:
        cache = self.get(model, items, model_id=model_id)
        if cache is None or cache.prefix_ids != kv.prefix_ids(tokenizer, cache.memory):
            cache = kv.compile_cache(model, tokenizer, items, model_id=model_id)
            self.put(cache)
        return cache

    def __iter__(self) -> Iterator[CacheInfo]:
        if not self.root.is_dir():
            return
        for path in sorted(self.root.glob(f"*/*{SUFFIX}")):
            header = kv.read_header(path)
            yield CacheInfo(
                path=path,
                key=header["key"],
                model_id=header["model_id"],
                tokens=header["tokens"],
                items=[(str(i), int(v)) for i, v in header["items"]],
                size=path.stat().st_size,
            )

    def invalidate(self, versions: Mapping[str, int | None]) -> list[Path]:
        """Delete every cache holding an item whose current version (``versions``; None or
        absent = gone) is not the one it was made from. Returns the deleted files."""
        removed = []
        for info in list(self):
            if not all(versions.get(item_id) == version for item_id, version in info.items):
                info.path.unlink(missing_ok=True)
                removed.append(info.path)
        return removed

    def invalidate_from(self, store: Any, user_id: str, cube_id: str) -> list[Path]:
        """:meth:`invalidate` against the items' current state in a :class:`Store` scope:
        an item updated, deleted or superseded since its cache was made drops the cache."""
        held = sorted({item_id for info in self for item_id, _ in info.items})
        current = {
            item.id: item.version
            for item in store.get_items(user_id, cube_id, held)
            if item.status == MemoryStatus.ACTIVE
        }
        return self.invalidate(current)
