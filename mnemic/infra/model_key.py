"""Which model a derived artefact (KV cache, LoRA adapter) was made for, to refuse it on another."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelKey:
    """A model's id, its weights' fingerprint, layer count and dtype."""

    model_id: str
    fingerprint: str
    layers: int
    dtype: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "fingerprint": self.fingerprint,
            "layers": self.layers,
            "dtype": self.dtype,
        }


def model_key(model: Any, model_id: str | None = None) -> ModelKey:
    """Identify ``model``: its id (``model_id`` or the config's name), layers, dtype, and a
    fingerprint of its config and of a sample of its weights (two models of one shape with
    other weights give other keys; the sample keeps this cheap at any size)."""
    import torch

    name = model_id or getattr(model.config, "name_or_path", "") or model.config.model_type
    digest = hashlib.sha256(model.config.to_json_string(use_diff=False).encode())
    params = [p for n, p in model.named_parameters() if "lora_" not in n]  # the base weights
    for tensor in (params[0], params[len(params) // 2], params[-1]):
        sample = tensor.detach().reshape(-1)[:4096].to("cpu", torch.float32).contiguous()
        digest.update(sample.numpy().tobytes())
    return ModelKey(
        model_id=str(name),
        fingerprint=digest.hexdigest()[:16],
        layers=int(model.config.get_text_config(decoder=True).num_hidden_layers),
        dtype=str(model.dtype).removeprefix("torch."),
    )
