"""Where an adapter came from: the base model, the items it holds, how it was made."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnemic.errors import InvalidInput
from mnemic.infra.model_key import ModelKey
from mnemic.models import utcnow

FORMAT = "mnemic-lora-adapter"
FORMAT_VERSION = 1
PROVENANCE = "mnemic-adapter.json"


@dataclass
class AdapterInfo:
    """What an adapter is: its name, the base model, the items it holds, how it was made."""

    name: str
    base: ModelKey
    items: list[tuple[str, int]]
    made_by: dict[str, Any]
    created_at: str = field(default_factory=lambda: utcnow().isoformat())

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "base": self.base.to_dict(),
            "items": [list(pair) for pair in self.items],
            "made_by": self.made_by,
            "created_at": self.created_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: Path) -> AdapterInfo:
        if data.get("format") != FORMAT:
            raise InvalidInput(f"{where} is not a mnemic adapter provenance file")
        if data.get("format_version", 0) > FORMAT_VERSION:
            raise InvalidInput(f"{where} was written by a newer mnemic; upgrade mnemic to read it")
        return cls(
            name=data["name"],
            base=ModelKey(**data["base"]),
            items=[(str(i), int(v)) for i, v in data["items"]],
            made_by=data["made_by"],
            created_at=data["created_at"],
        )


# the model holding several adapters remembers where each came from
_INFOS = "_mnemic_adapter_infos"


def infos(peft_model: Any) -> dict[str, AdapterInfo]:
    held = getattr(peft_model, _INFOS, None)
    if held is None:
        held = {}
        setattr(peft_model, _INFOS, held)
    return held
