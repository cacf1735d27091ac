"""Training text for parametric memory: each item as it reads, and question/answer pairs.

Made by rules from the item's own fields, no LLM, so a distillation run is reproducible:
the same items always give the same examples, in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence

from mnemic.models import MemoryItem


def memory_line(item: MemoryItem) -> str:
    """The item as one line of memory: date, speaker, text."""
    when = f"[{item.valid_from:%Y-%m-%d}] " if item.valid_from else ""
    who = f"{item.speaker}: " if item.speaker else ""
    return f"{when}{who}{' '.join(item.text.split())}"


def qa_pairs(item: MemoryItem) -> list[tuple[str, str]]:
    """Questions the item answers, with its answers."""
    text = " ".join(item.text.split())
    words = text.split()
    who = item.speaker or "someone"
    pairs = [(f"What did {who} say?", text)]
    if item.valid_from:
        pairs.append((f"What did {who} say on {item.valid_from:%d %B %Y}?", text))
        if len(words) >= 4:
            pairs.append(
                (f'When did {who} say "{" ".join(words[:4])}..."?', f"{item.valid_from:%d %B %Y}.")
            )
    if len(words) >= 6:
        half = len(words) // 2
        pairs.append((f'How does this go on: "{" ".join(words[:half])}"?', " ".join(words[half:])))
    pairs.extend((f"What do you remember about {entity}?", text) for entity in item.entities)
    return pairs


def training_texts(items: Sequence[MemoryItem]) -> list[str]:
    """Every item's memory line, then its question/answer pairs, item by item."""
    texts = []
    for item in items:
        texts.append(memory_line(item))
        texts.extend(f"Question: {q}\nAnswer: {a}" for q, a in qa_pairs(item))
    return texts
