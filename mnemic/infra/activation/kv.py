"""Activation memory: the keys and values of a memory prefix, computed once and reused.

:func:`compile_cache` runs the model over the memory turn and keeps every layer's keys and
values; :func:`save` / :func:`load` put them in one safetensors file whose header says which
model (id, weight fingerprint, layer count, dtype) and which items at which versions they
hold; :func:`generate` answers a question with the cache injected, so only the question is
prefilled. A cache is only valid for the exact model and item versions it was made from.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnemic.errors import InvalidInput
from mnemic.infra.activation.prompt import prefix_ids, prompt_ids, render_memory
from mnemic.infra.model_key import ModelKey, model_key
from mnemic.models import MemoryItem, utcnow

FORMAT = "mnemic-kv-cache"
FORMAT_VERSION = 1
_HEADER_KEY = "mnemic"  # one metadata entry holding sorted JSON: the file is byte-reproducible


@dataclass
class KVCache:
    """The keys and values of one memory prefix for one model, with what they were made from."""

    model: ModelKey
    items: list[tuple[str, int]]  # (item id, version) in prefix order
    memory: str  # the rendered memory text the prefix was made from
    prefix_ids: list[int]
    layers: list[tuple[Any, Any]]  # per layer (keys, values): [1, kv_heads, tokens, head_dim]
    created_at: str = field(default_factory=lambda: utcnow().isoformat())

    @property
    def key(self) -> str:
        return cache_key(self.model, self.items)

    @property
    def tokens(self) -> int:
        return len(self.prefix_ids)

    def nbytes(self) -> int:
        return sum(
            k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in self.layers
        )

    def is_current(self, versions: Mapping[str, int | None]) -> bool:
        """False when any held item is missing from ``versions`` or has another version."""
        return all(versions.get(item_id) == version for item_id, version in self.items)

    def to_dynamic_cache(self, config: Any) -> Any:
        """A fresh transformers ``DynamicCache`` holding the prefix.

        Fresh every time: generation appends to the cache it is given, and a DynamicLayer
        concatenates onto new tensors, so the stored keys and values are never changed."""
        from transformers import DynamicCache

        return DynamicCache(ddp_cache_data=self.layers, config=config)


def cache_arg(model: Any) -> str:
    """The keyword a model takes its cache by: ``cache`` since transformers 5.x renamed it."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def cache_key(model: ModelKey, items: Sequence[tuple[str, int]]) -> str:
    blob = json.dumps(
        [FORMAT_VERSION, model.model_id, model.fingerprint, model.layers, model.dtype, list(items)],
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def compile_cache(
    model: Any,
    tokenizer: Any,
    items: Sequence[MemoryItem],
    *,
    model_id: str | None = None,
) -> KVCache:
    """Run ``model`` over the memory turn of ``items`` (in that order) and keep its cache."""
    import torch
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    memory = render_memory(items)
    ids = prefix_ids(tokenizer, memory)
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        kwargs: dict[str, Any] = {cache_arg(model): cache}
        if "logits_to_keep" in inspect.signature(model.forward).parameters:
            kwargs["logits_to_keep"] = 1  # logits for every prefix token would be vocab x n
        model(input_ids=torch.tensor([ids]), use_cache=True, **kwargs)
    if any(type(layer) is not DynamicLayer for layer in cache.layers):
        raise InvalidInput(
            f"{type(model).__name__} has sliding-window or linear-attention layers; "
            "activation memory supports full-attention models only"
        )
    layers = [
        (layer.keys.contiguous(), layer.values.contiguous())  # type: ignore[union-attr]
        for layer in cache.layers
    ]
    return KVCache(
        model=model_key(model, model_id),
        items=[(item.id, item.version) for item in items],
        memory=memory,
        prefix_ids=ids,
        layers=layers,
    )


def save(cache: KVCache, path: Path) -> int:
    """Write ``cache`` to ``path`` atomically; returns the file's size in bytes."""
    import torch
    from safetensors.torch import save as to_bytes

    tensors = {"prefix_ids": torch.tensor(cache.prefix_ids, dtype=torch.int64)}
    for i, (k, v) in enumerate(cache.layers):
        tensors[f"layer.{i}.keys"] = k
        tensors[f"layer.{i}.values"] = v
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "key": cache.key,
        "model_id": cache.model.model_id,
        "fingerprint": cache.model.fingerprint,
        "layers": cache.model.layers,
        "dtype": cache.model.dtype,
        "items": [list(pair) for pair in cache.items],
        "tokens": cache.tokens,
        "memory": cache.memory,
        "created_at": cache.created_at,
    }
    data = to_bytes(tensors, metadata={_HEADER_KEY: json.dumps(header, sort_keys=True)})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return len(data)


def read_header(path: Path) -> dict[str, Any]:
    """The header of a cache file, without reading its tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(_HEADER_KEY)
    except Exception as exc:  # safetensors raises its own error types for any bad file
        raise InvalidInput(f"{path} is not a readable safetensors file: {exc}") from exc
    header = json.loads(raw) if raw else {}
    if header.get("format") != FORMAT:
        raise InvalidInput(f"{path} is not a mnemic KV cache")
    if header.get("format_version", 0) > FORMAT_VERSION:
        raise InvalidInput(f"{path} was written by a newer mnemic; upgrade mnemic to read it")
    return header


def load(path: Path) -> KVCache:
    """Read a cache written by :func:`save`."""
    from safetensors.torch import load_file

    header = read_header(path)
    tensors = load_file(str(path))
    layers = [
        (tensors[f"layer.{i}.keys"], tensors[f"layer.{i}.values"]) for i in range(header["layers"])
    ]
    cache = KVCache(
        model=ModelKey(
            header["model_id"], header["fingerprint"], header["layers"], header["dtype"]
        ),
        items=[(str(i), int(v)) for i, v in header["items"]],
        memory=header["memory"],
        prefix_ids=tensors["prefix_ids"].tolist(),
        layers=layers,
        created_at=header["created_at"],
    )
    if cache.key != header["key"]:
        raise InvalidInput(f"{path}'s header does not match its key; the file was altered")
    return cache


def check_model(cache: KVCache, model: Any, model_id: str | None = None) -> None:
    """Refuse a cache made for another model (id, weights, layers or dtype)."""
    expected = model_key(model, model_id)
    if cache.model != expected:
        raise InvalidInput(
            f"this KV cache was made for {cache.model}, not for {expected}; compile it again"
        )


def generate(
    model: Any,
    tokenizer: Any,
    cache: KVCache,
    query: str,
    *,
    max_new_tokens: int = 32,
    model_id: str | None = None,
    **generate_kwargs: Any,
) -> list[int]:
    """Answer ``query`` with the memory injected as ``cache``: only the question is prefilled.

    Refused when the cache was made for another model (``model_id`` as given to compile).

    Greedy unless ``generate_kwargs`` say otherwise. Returns the new token ids. The cache's
    prefix must be the one the tokenizer renders today for its items (else it is refused)."""
    check_model(cache, model, model_id)
    prompt = prompt_ids(tokenizer, cache.memory, query)
    if prompt.prefix != cache.prefix_ids:
        raise InvalidInput(
            "the KV cache's prefix is not what this tokenizer renders for it; compile it again"
        )
    return _generate(
        model,
        prompt.full,
        cache.to_dynamic_cache(model.config),
        max_new_tokens=max_new_tokens,
        **generate_kwargs,
    )


def generate_in_prompt(
    model: Any,
    tokenizer: Any,
    items: Sequence[MemoryItem],
    query: str,
    *,
    max_new_tokens: int = 32,
    **generate_kwargs: Any,
) -> list[int]:
    """The baseline: the same memory as text in the prompt, prefilled at every call."""
    prompt = prompt_ids(tokenizer, render_memory(items), query)
    return _generate(model, prompt.full, None, max_new_tokens=max_new_tokens, **generate_kwargs)


def _generate(
    model: Any, ids: list[int], cache: Any, *, max_new_tokens: int, **kwargs: Any
) -> list[int]:
    import torch

    input_ids = torch.tensor([ids])
    kwargs.setdefault("do_sample", False)
    if cache is not None:
        kwargs[cache_arg(model)] = cache
    with torch.no_grad():
        out = model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=max_new_tokens,
            **kwargs,
        )
    return [int(t) for t in out[0, input_ids.shape[1] :]]
