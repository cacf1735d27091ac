"""The memory prefix: items rendered as text, placed where the chat template puts a system turn.

A prompt is split in two token runs: the prefix (the memory, the same for every question, so
its keys and values can be computed once) and the suffix (the question and the template's
turn markers). Both runs come from tokenizing the full prompt text, so a cached prefix plus
the suffix is exactly the token sequence a caller putting the memory in the prompt would send.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mnemic.errors import InvalidInput
from mnemic.models import MemoryItem

HEADER = "Memories of earlier conversations (one a line, oldest first):"


def render_memory(items: Sequence[MemoryItem]) -> str:
    """The memory text for ``items``, in the order given: date, speaker and text, one a line."""
    if not items:
        raise InvalidInput("no memory items to render; pass at least one")
    lines = [HEADER]
    for item in items:
        when = item.valid_from.strftime("%Y-%m-%d") if item.valid_from else ""
        text = " ".join(item.said().split())
        lines.append(f"- {'[' + when + '] ' if when else ''}{text}")
    return "\n".join(lines)


@dataclass(frozen=True)
class PromptIds:
    prefix: list[int]  # the memory turn: what an activation cache holds
    suffix: list[int]  # the question and the generation prompt: prefilled at every call

    @property
    def full(self) -> list[int]:
        return self.prefix + self.suffix


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def prefix_text(tokenizer: Any, memory: str) -> str:
    """The memory turn as the chat template renders it; plain text if there is no template."""
    if getattr(tokenizer, "chat_template", None):
        return str(
            tokenizer.apply_chat_template([{"role": "system", "content": memory}], tokenize=False)
        )
    bos = tokenizer.bos_token or ""
    return f"{bos}{memory}\n\n"


def prompt_text(tokenizer: Any, memory: str, query: str) -> str:
    """The whole prompt: the memory turn, the question, and the cue for the answer."""
    if getattr(tokenizer, "chat_template", None):
        messages = [
            {"role": "system", "content": memory},
            {"role": "user", "content": query},
        ]
        return str(
            tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        )
    return f"{prefix_text(tokenizer, memory)}Question: {query}\nAnswer:"


def prefix_ids(tokenizer: Any, memory: str) -> list[int]:
    return _ids(tokenizer, prefix_text(tokenizer, memory))


def prompt_ids(tokenizer: Any, memory: str, query: str) -> PromptIds:
    """Split the tokenized prompt at the end of the memory turn.

    Refused when the template does not open with the memory turn unchanged (a template that
    puts something before the system turn, or rewrites it, has no reusable prefix)."""
    if not query.strip():
        raise InvalidInput("the question is empty; an activation cache needs a prompt after it")
    head = prefix_text(tokenizer, memory)
    full_text = prompt_text(tokenizer, memory, query)
    if not full_text.startswith(head):
        raise InvalidInput(
            "this tokenizer's chat template does not start the prompt with the memory turn "
            "unchanged, so the memory cannot be cached as a prefix; use plain-text memory"
        )
    head_ids = _ids(tokenizer, head)
    full_ids = _ids(tokenizer, full_text)
    if full_ids[: len(head_ids)] != head_ids:
        # a token spans the boundary: keep the prefix whole and tokenize the rest on its own
        return PromptIds(head_ids, _ids(tokenizer, full_text[len(head) :]))
    return PromptIds(head_ids, full_ids[len(head_ids) :])
