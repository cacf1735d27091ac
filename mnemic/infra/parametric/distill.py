"""Distil plaintext memories into a LoRA adapter: a short supervised run over their text.

The base model is wrapped with peft LoRA on every linear layer and trained on the items'
memory lines and rule-made question/answer pairs (:mod:`.examples`) with AdamW, seeded, so
the same items and config give the same adapter on the same machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mnemic.errors import InvalidInput
from mnemic.infra.model_key import ModelKey, model_key
from mnemic.infra.parametric.examples import memory_line, training_texts
from mnemic.infra.parametric.provenance import AdapterInfo, infos
from mnemic.models import MemoryItem


class DistillConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rank: int = Field(default=16, ge=1, le=512)
    alpha: int = Field(default=32, gt=0)
    # peft's shorthand for every linear layer but the output head
    target_modules: str | list[str] = "all-linear"
    steps: int = Field(default=80, ge=1)
    learning_rate: float = Field(default=3e-3, gt=0)
    batch_size: int = Field(default=16, ge=1)
    max_tokens: int = Field(default=256, ge=8)  # per example; longer ones are cut
    seed: int = 0


@dataclass
class DistillResult:
    model: Any  # the peft model holding the new adapter, active
    name: str
    base: ModelKey
    items: list[tuple[str, int]]
    loss_before: float  # mean token loss on the items' memory lines, base model
    loss_after: float  # the same with the adapter
    config: DistillConfig


def _batch(tokenizer: Any, texts: Sequence[str], max_tokens: int) -> dict[str, Any]:
    import torch

    rows = [list(tokenizer(t, add_special_tokens=False)["input_ids"])[:max_tokens] for t in texts]
    eos = tokenizer.eos_token_id
    rows = [[*r, eos] if eos is not None and len(r) < max_tokens else r for r in rows]
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def lm_loss(model: Any, tokenizer: Any, texts: Sequence[str], *, max_tokens: int = 256) -> float:
    """Mean next-token loss of ``model`` over every token of ``texts``."""
    import torch

    if not texts:
        raise InvalidInput("no texts to score")
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(texts), 16):
            batch = _batch(tokenizer, texts[start : start + 16], max_tokens)
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
            labels = batch["labels"][:, 1:]
            losses = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                labels.reshape(-1),
                ignore_index=-100,
                reduction="sum",
            )
            total += float(losses)
            count += int((labels != -100).sum())
    return total / max(count, 1)


def memory_texts(items: Sequence[MemoryItem]) -> list[str]:
    """What the adapter must know: each item's memory line."""
    return [memory_line(item) for item in items]


def distill(
    model: Any,
    tokenizer: Any,
    items: Sequence[MemoryItem],
    *,
    name: str = "memory",
    config: DistillConfig | None = None,
    model_id: str | None = None,
) -> DistillResult:
    """Train a new LoRA adapter ``name`` on ``items``; ``model`` may already be a peft model
    holding other adapters (they are kept, inactive). Returns it with the adapter active."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

    config = config or DistillConfig()
    if not items:
        raise InvalidInput("no memory items to distil; pass at least one")
    texts = training_texts(items)
    targets = memory_texts(items)
    base = model_key(model, model_id)
    was_peft = isinstance(model, PeftModel)
    if was_peft and name in model.peft_config:
        raise InvalidInput(f"the model already has an adapter named {name!r}; pick another name")
    if was_peft:
        with model.disable_adapter():
            loss_before = lm_loss(model, tokenizer, targets, max_tokens=config.max_tokens)
    else:
        loss_before = lm_loss(model, tokenizer, targets, max_tokens=config.max_tokens)

    torch.manual_seed(config.seed)
    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=0.0,
        target_modules=config.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )
    if was_peft:
        model.add_adapter(name, lora)
        model.set_adapter(name)
        peft_model = model
    else:
        peft_model = get_peft_model(model, lora, adapter_name=name)
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=0.0)
    generator = torch.Generator().manual_seed(config.seed)
    peft_model.train()
    try:
        for _ in range(config.steps):
            order = torch.randperm(len(texts), generator=generator)[: config.batch_size]
            batch = _batch(tokenizer, [texts[i] for i in order], config.max_tokens)
            loss = peft_model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    finally:
        peft_model.eval()
    for p in trainable:
        p.requires_grad_(False)
    loss_after = lm_loss(peft_model, tokenizer, targets, max_tokens=config.max_tokens)
    items_held = [(item.id, item.version) for item in items]
    infos(peft_model)[name] = AdapterInfo(
        name=name,
        base=base,
        items=items_held,
        made_by={
            "how": "distill",
            "config": config.model_dump(),
            "loss_before": round(loss_before, 6),
            "loss_after": round(loss_after, 6),
        },
    )
    return DistillResult(
        model=peft_model,
        name=name,
        base=base,
        items=items_held,
        loss_before=loss_before,
        loss_after=loss_after,
        config=config,
    )
