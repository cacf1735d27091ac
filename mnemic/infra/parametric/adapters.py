"""LoRA adapters as parametric memory: saved with provenance, attached, detached, fused.

An adapter folder holds peft's own files (``adapter_config.json``,
``adapter_model.safetensors``) and ``mnemic-adapter.json``: the base model it was made for
(id, fingerprint, layers, dtype), the items (ids and versions) it was distilled from, and how
(training config and losses, or the adapters a fusion combined, with their weights).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mnemic.errors import InvalidInput
from mnemic.infra.model_key import model_key
from mnemic.infra.parametric.provenance import PROVENANCE, AdapterInfo, infos


def info(peft_model: Any, name: str) -> AdapterInfo:
    try:
        return infos(peft_model)[name]
    except KeyError:
        raise InvalidInput(f"the model holds no mnemic adapter named {name!r}") from None


def save(peft_model: Any, name: str, dest: Path) -> Path:
    """Write adapter ``name`` and its provenance into the new folder ``dest``."""
    meta = info(peft_model, name)
    if dest.exists() and any(dest.iterdir()):
        raise InvalidInput(f"{dest} exists and is not empty; give a new folder for the adapter")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".adapter-") as tmp:
        peft_model.save_pretrained(tmp, selected_adapters=[name], save_embedding_layers=False)
        # peft puts adapters other than "default" in a subfolder of their name
        written = Path(tmp) / name if (Path(tmp) / name).is_dir() else Path(tmp)
        (written / PROVENANCE).write_text(json.dumps(meta.to_dict(), indent=2, sort_keys=True))
        if dest.exists():
            dest.rmdir()
        shutil.move(str(written), dest)
    return dest


def read_info(path: Path) -> AdapterInfo:
    try:
        data = json.loads((path / PROVENANCE).read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{path} is not a mnemic adapter (no readable {PROVENANCE})") from exc
    return AdapterInfo.from_dict(data, path / PROVENANCE)


def attach(model: Any, path: Path, *, name: str | None = None, model_id: str | None = None) -> Any:
    """Load the adapter in ``path`` onto ``model`` (a base or peft model) and make it active.

    Refused when it was made for another base model. Returns the peft model."""
    from peft import PeftModel

    meta = read_info(path)
    name = name or meta.name
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    expected = model_key(base, model_id)
    if meta.base != expected:
        raise InvalidInput(
            f"the adapter in {path} was made for {meta.base}, not for {expected}; distil it again"
        )
    if isinstance(model, PeftModel):
        if name in model.peft_config:
            raise InvalidInput(f"the model already holds an adapter named {name!r}")
        model.load_adapter(str(path), adapter_name=name)
        model.set_adapter(name)
        peft_model = model
    else:
        peft_model = PeftModel.from_pretrained(model, str(path), adapter_name=name)
    peft_model.eval()
    infos(peft_model)[name] = AdapterInfo(
        name=name,
        base=meta.base,
        items=meta.items,
        made_by=meta.made_by,
        created_at=meta.created_at,
    )
    return peft_model


def detach(peft_model: Any, name: str | None = None) -> Any:
    """Remove adapter ``name`` (or every adapter) without merging it into the weights.

    With every adapter gone the base model is returned, computing exactly what it did before
    any adapter was attached."""
    if name is None or set(peft_model.peft_config) == {name}:
        return peft_model.unload()
    if name not in peft_model.peft_config:
        raise InvalidInput(f"the model holds no adapter named {name!r}")
    if peft_model.active_adapter == name:
        peft_model.set_adapter(next(n for n in peft_model.peft_config if n != name))
    peft_model.delete_adapter(name)
    infos(peft_model).pop(name, None)
    return peft_model


def fuse(
    peft_model: Any, names: Sequence[str], weights: Sequence[float], *, into: str
) -> AdapterInfo:
    """Combine adapters ``names`` into a new adapter ``into`` whose weight change is the
    weighted sum of theirs (peft's exact ``cat`` combination: ranks add up); make it active.

    The fused adapter holds the union of their items; all must share one base model."""
    if len(names) < 2 or len(names) != len(weights):
        raise InvalidInput("fuse takes two or more adapter names and one weight for each")
    if into in peft_model.peft_config:
        raise InvalidInput(f"the model already holds an adapter named {into!r}")
    metas = [info(peft_model, n) for n in names]
    if len({m.base for m in metas}) != 1:
        raise InvalidInput("these adapters were made for different base models; cannot fuse")
    peft_model.add_weighted_adapter(
        adapters=list(names), weights=list(weights), adapter_name=into, combination_type="cat"
    )
    peft_model.set_adapter(into)
    items: dict[str, int] = {}
    for m in metas:
        for item_id, version in m.items:
            items[item_id] = max(version, items.get(item_id, version))
    fused = AdapterInfo(
        name=into,
        base=metas[0].base,
        items=sorted(items.items()),
        made_by={
            "how": "fuse",
            "combination": "cat",
            "from": [
                {"name": m.name, "weight": w, "items": [list(p) for p in m.items]}
                for m, w in zip(metas, weights, strict=True)
            ],
        },
    )
    infos(peft_model)[into] = fused
    return fused
