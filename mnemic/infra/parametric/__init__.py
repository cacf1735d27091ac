"""Parametric memory: plaintext items distilled into LoRA adapters (extra ``hf``, with peft).

Nothing here imports torch, transformers or peft until it is used."""

from __future__ import annotations

from mnemic.infra.parametric.adapters import (
    AdapterInfo,
    attach,
    detach,
    fuse,
    read_info,
    save,
)
from mnemic.infra.parametric.distill import DistillConfig, DistillResult, distill, lm_loss

__all__ = [
    "AdapterInfo",
    "DistillConfig",
    "DistillResult",
    "attach",
    "detach",
    "distill",
    "fuse",
    "lm_loss",
    "read_info",
    "save",
]
