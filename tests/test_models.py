"""Models rebuilt from stored rows are the models that were stored."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mnemic.models import MemoryItem, MemoryStatus, Source, rebuild


def test_rebuild_gives_the_validated_model_back() -> None:
    item = MemoryItem(
        user_id="ana",
        cube_id="ana/default",
        text="I adopted a dog named Rex.",
        speaker="Ana",
        source=Source(message_ids=["m1"]),
        tags=["pets"],
    )
    # a store rebuilds each field's value (the source too) and then the item
    values = {name: getattr(item, name) for name in MemoryItem.model_fields}
    values["source"] = rebuild(Source, item.source.model_dump())
    again = rebuild(MemoryItem, values)
    assert again == item and again.model_fields_set == set(MemoryItem.model_fields)
    assert again.model_dump() == item.model_dump()
    # still a pydantic model: assignment is validated, copies work
    again.status = MemoryStatus.ARCHIVED
    with pytest.raises(ValidationError):
        again.version = "not a number"  # type: ignore[assignment]
    assert again.model_copy(update={"text": "x"}).text == "x"


def test_rebuild_of_partial_values_fills_defaults() -> None:
    # a row from before a field existed: model_construct's defaults apply
    source = rebuild(Source, {"message_ids": ["m1"]})
    assert source == Source(message_ids=["m1"])
