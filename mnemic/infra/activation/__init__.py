"""Activation memory: KV caches of memory prefixes for HuggingFace causal LMs (extra ``hf``).

Nothing here imports torch or transformers until it is used."""

from __future__ import annotations

from mnemic.infra.activation.kv import (
    KVCache,
    ModelKey,
    compile_cache,
    generate,
    generate_in_prompt,
    load,
    save,
)
from mnemic.infra.activation.store import ActivationStore

__all__ = [
    "ActivationStore",
    "KVCache",
    "ModelKey",
    "compile_cache",
    "generate",
    "generate_in_prompt",
    "load",
    "save",
]
