"""Parametric memory on a tiny random-weight model: distil, save, attach, detach, fuse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mnemic.errors import InvalidInput
from mnemic.infra import parametric
from mnemic.infra.hf_models import byte_tokenizer, random_model
from mnemic.infra.parametric.distill import memory_texts
from mnemic.infra.parametric.examples import training_texts
from mnemic.models import MemoryItem

FAST = parametric.DistillConfig(steps=40, rank=8, alpha=16, batch_size=8, seed=0)


def _items(speaker: str, *texts: str) -> list[MemoryItem]:
    return [MemoryItem(user_id="u", cube_id="u/default", text=t, speaker=speaker) for t in texts]


A = _items(
    "Caroline",
    "I went hiking by the lake with my dog last weekend.",
    "My sister visits in July; we plan a trip to Lisbon.",
)
B = _items(
    "Melanie",
    "I adopted a grey cat called Pixel from the shelter.",
    "Pottery class on Thursdays keeps me calm after work.",
)


@pytest.fixture(scope="module")
def tok() -> object:
    return byte_tokenizer()


def _logits(model, tok) -> torch.Tensor:
    ids = tok("What did Caroline say?", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits


def test_examples_are_made_by_rules_and_reproducible() -> None:
    texts = training_texts(A)
    assert texts == training_texts(A)
    assert texts[0] == "Caroline: I went hiking by the lake with my dog last weekend."
    assert "Question: What did Caroline say?\nAnswer: I went hiking" in texts[1]
    assert any(t.startswith('Question: How does this go on: "I went hiking by') for t in texts)


def test_distilled_adapter_learns_the_memories_and_detach_restores_the_base(tok) -> None:
    model = random_model("tiny", seed=0)
    before = _logits(model, tok)
    result = parametric.distill(model, tok, A, name="caroline", config=FAST)
    assert result.loss_after <= 0.5 * result.loss_before, (result.loss_before, result.loss_after)
    assert result.items == [(i.id, 1) for i in A]
    assert not torch.equal(_logits(result.model, tok), before)
    base = parametric.detach(result.model)
    assert torch.equal(_logits(base, tok), before)
    assert parametric.lm_loss(base, tok, memory_texts(A)) == pytest.approx(result.loss_before)


def test_saved_adapter_attaches_with_provenance_and_only_to_its_base(tok, tmp_path: Path) -> None:
    result = parametric.distill(random_model("tiny", seed=0), tok, A, name="caroline", config=FAST)
    folder = parametric.save(result.model, "caroline", tmp_path / "adapters" / "caroline")
    assert {p.name for p in folder.iterdir()} >= {
        "adapter_config.json",
        "adapter_model.safetensors",
        "mnemic-adapter.json",
    }
    info = parametric.read_info(folder)
    assert info.items == [(i.id, 1) for i in A] and info.made_by["how"] == "distill"
    assert info.made_by["loss_after"] == pytest.approx(result.loss_after, abs=1e-5)
    with pytest.raises(InvalidInput, match="not empty"):
        parametric.save(result.model, "caroline", folder)

    fresh = random_model("tiny", seed=0)
    before = _logits(fresh, tok)
    attached = parametric.attach(fresh, folder)
    loss = parametric.lm_loss(attached, tok, memory_texts(A))
    assert loss == pytest.approx(result.loss_after, rel=1e-4)
    assert torch.equal(_logits(parametric.detach(attached), tok), before)

    with pytest.raises(InvalidInput, match="made for"):
        parametric.attach(random_model("tiny", seed=1), folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match="not a mnemic adapter"):
        parametric.attach(random_model("tiny", seed=0), tmp_path / "empty")


def test_fused_adapter_beats_the_base_on_both_memory_sets(tok, tmp_path: Path) -> None:
    model = random_model("tiny", seed=0)
    base_a = parametric.lm_loss(model, tok, memory_texts(A))
    base_b = parametric.lm_loss(model, tok, memory_texts(B))
    first = parametric.distill(model, tok, A, name="carol", config=FAST)
    second = parametric.distill(first.model, tok, B, name="mel", config=FAST)
    peft_model = second.model
    assert second.loss_before == pytest.approx(base_b)  # measured without adapter "carol"
    fused = parametric.fuse(peft_model, ["carol", "mel"], [1.0, 1.0], into="both")
    loss_a = parametric.lm_loss(peft_model, tok, memory_texts(A))
    loss_b = parametric.lm_loss(peft_model, tok, memory_texts(B))
    assert loss_a < base_a and loss_b < base_b, (base_a, loss_a, base_b, loss_b)
    assert sorted(fused.items) == sorted((i.id, 1) for i in A + B)
    assert [f["name"] for f in fused.made_by["from"]] == ["carol", "mel"]
    folder = parametric.save(peft_model, "both", tmp_path / "both")
    assert json.loads((folder / "mnemic-adapter.json").read_text())["made_by"]["how"] == "fuse"
    # dropping one adapter keeps the others
    parametric.detach(peft_model, "carol")
    assert set(peft_model.peft_config) == {"mel", "both"}
    with pytest.raises(InvalidInput, match="two or more"):
        parametric.fuse(peft_model, ["mel"], [1.0], into="x")
