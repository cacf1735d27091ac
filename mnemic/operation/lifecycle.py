"""The memory lifecycle: what to do with each newly extracted item, given what is stored.

For every new derived item (fact, preference, event, procedure) a decision against its
nearest neighbours in the same scope:

- **add**: nothing like it is stored;
- **skip**: a duplicate; the stored item gains the new provenance (history: ``skip``);
- **update**: the same memory said with more detail; the stored item becomes a new version
  with the new text (history keeps the old version);
- **supersede**: a conflict ("I moved to Paris" after "I live in Boston"); the old item gets
  ``valid_to`` (the new one's ``valid_from``) and status ``superseded``, the new one is added
  with ``supersedes`` pointing at it. Both are kept, so "as of" queries see the past.

Without an LLM the decision comes from rule slots (:mod:`mnemic.operation.reader.rules`: the
same subject and slot with another value is a conflict, the same value a duplicate) and
from vector similarity thresholds with explicit change cues ("no longer", "anymore"). With
an LLM, it is asked, with the neighbours, and its answer validated; if it fails the rules
decide and the failure is noted in the reason. Every decision is written to history with
its reason.
"""

from __future__ import annotations

import enum
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, Field, field_validator

from mnemic.errors import MnemicError
from mnemic.infra.store.base import ItemFilter, Store
from mnemic.models import MemoryItem, MemoryKind, MemoryStatus, utcnow
from mnemic.operation.reader.rules import DERIVED_TAG, normalize_value

if TYPE_CHECKING:
    from mnemic.config import LifecycleConfig
    from mnemic.infra.llm.base import LLM

log = logging.getLogger(__name__)

DERIVED_KINDS = (
    MemoryKind.FACT,
    MemoryKind.PREFERENCE,
    MemoryKind.EVENT,
    MemoryKind.PROCEDURE,
)
_NEGATION = re.compile(
    r"\b(?:no longer|not any ?more|anymore|any more|stopped|quit|gave up|don't|doesn't|"
    r"do not|does not|never|isn't|aren't|wasn't|not)\b",
    re.I,
)


class Action(enum.StrEnum):
    ADD = "add"
    SKIP = "skip"
    UPDATE = "update"
    SUPERSEDE = "supersede"


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    targets: tuple[MemoryItem, ...] = ()  # the stored items it applies to


class LLMDecision(BaseModel):
    """What the LLM is asked to answer (prompt: prompts/lifecycle.md)."""

    action: Literal["add", "skip", "update", "supersede"]
    target: int | None = Field(default=None, description="number of the stored memory, if any")
    reason: str = Field(min_length=1)  # no maxLength: grammar-compiling servers choke on it

    @field_validator("reason")
    @classmethod
    def _short(cls, value: str) -> str:
        return value[:500]


class Lifecycle:
    def __init__(self, store: Store, config: LifecycleConfig, llm: LLM | None = None) -> None:
        self.store, self.config, self.llm = store, config, llm

    # ------------------------------------------------------------------ deciding

    def decide(self, item: MemoryItem, vector: np.ndarray | None) -> Decision:
        slot = item.metadata.get("slot")
        if isinstance(slot, str):
            by_slot = self._by_slot(item, slot)
            if by_slot is not None:
                return by_slot
        neighbours = self._neighbours(item, vector)
        if self.llm is not None and neighbours:
            try:
                return self._ask_llm(item, neighbours)
            except MnemicError as exc:
                log.warning("lifecycle LLM failed, deciding by rules: %s", exc)
                fallback = self._by_similarity(item, neighbours)
                return Decision(
                    fallback.action,
                    f"{fallback.reason} (LLM decision failed: {exc})",
                    fallback.targets,
                )
        return self._by_similarity(item, neighbours)

    def _by_slot(self, item: MemoryItem, slot: str) -> Decision | None:
        subject = item.metadata.get("subject")
        value = normalize_value(str(item.metadata.get("value", "")))
        stored = [
            old
            for old in self.store.list_items(
                item.user_id,
                item.cube_id,
                ItemFilter(kinds=DERIVED_KINDS, tags=(f"slot:{slot}",)),
                limit=100,
            )
            if old.metadata.get("subject") == subject and old.id != item.id
        ]
        if not stored:
            return None
        same = [o for o in stored if normalize_value(str(o.metadata.get("value", ""))) == value]
        if same:
            return Decision(
                Action.SKIP,
                f"duplicate: {subject}'s {slot} is already {item.metadata.get('value')!r}",
                (same[0],),
            )
        cue = item.metadata.get("cue")
        olds = ", ".join(repr(o.metadata.get("value")) for o in stored)
        why = f"{subject}'s {slot} changed from {olds} to {item.metadata.get('value')!r}"
        why += f" (explicit cue {cue!r})" if cue else " (a conflicting value of the same slot)"
        return Decision(Action.SUPERSEDE, why, tuple(stored))

    def _neighbours(
        self, item: MemoryItem, vector: np.ndarray | None
    ) -> list[tuple[MemoryItem, float]]:
        if vector is None:
            return []
        found = self.store.vector_search(
            item.user_id,
            item.cube_id,
            vector,
            self.config.neighbours,
            ItemFilter(kinds=DERIVED_KINDS, speaker=item.speaker, tags=(DERIVED_TAG,)),
        )
        if not found:
            return []
        by_id = {
            i.id: i
            for i in self.store.get_items(item.user_id, item.cube_id, [s.item_id for s in found])
        }
        return [(by_id[s.item_id], s.score) for s in found if s.item_id in by_id]

    def _by_similarity(
        self, item: MemoryItem, neighbours: list[tuple[MemoryItem, float]]
    ) -> Decision:
        if not neighbours:
            return Decision(Action.ADD, "new: no similar memory stored")
        best, sim = max(neighbours, key=lambda pair: pair[1])
        if sim >= self.config.skip_similarity:
            return Decision(Action.SKIP, f"duplicate: similarity {sim:.2f} to {best.id}", (best,))
        new_negated = bool(_NEGATION.search(item.text))
        if sim >= self.config.conflict_similarity and new_negated != bool(
            _NEGATION.search(best.text)
        ):
            return Decision(
                Action.SUPERSEDE,
                f"conflict: similarity {sim:.2f} to {best.id} with opposite polarity "
                f"(explicit cue in {item.text!r})",
                (best,),
            )
        if sim >= self.config.update_similarity and _extends(item.text, best.text):
            return Decision(
                Action.UPDATE,
                f"update: similarity {sim:.2f} to {best.id}, adds detail to it",
                (best,),
            )
        return Decision(Action.ADD, f"new: nearest stored memory has similarity {sim:.2f}")

    def _ask_llm(self, item: MemoryItem, neighbours: list[tuple[MemoryItem, float]]) -> Decision:
        from mnemic.operation.reader.prompts import load_prompt

        assert self.llm is not None
        prompt = load_prompt("lifecycle")
        stored = "\n".join(
            f"{n}. [{o.kind}] {o.text} (valid from {o.valid_from:%Y-%m-%d})"
            if o.valid_from
            else f"{n}. [{o.kind}] {o.text}"
            for n, (o, _) in enumerate(neighbours, 1)
        )
        when = f" (valid from {item.valid_from:%Y-%m-%d})" if item.valid_from else ""
        answer = self.llm.complete_json(
            [
                {"role": "system", "content": prompt.text},
                {
                    "role": "user",
                    "content": f"Stored memories:\n{stored}\n\nNew memory: {item.text}{when}",
                },
            ],
            LLMDecision,
        )
        action = Action(answer.action)
        reason = f"LLM ({prompt.name} v{prompt.version}): {answer.reason}"
        if action == Action.ADD:
            return Decision(action, reason)
        if answer.target is None or not 1 <= answer.target <= len(neighbours):
            return Decision(Action.ADD, f"{reason} (no valid target {answer.target}: added)")
        return Decision(action, reason, (neighbours[answer.target - 1][0],))

    # ------------------------------------------------------------------ applying

    def apply(
        self,
        item: MemoryItem,
        vector: np.ndarray | None,
        decision: Decision,
        *,
        actor: str,
    ) -> MemoryItem | None:
        """Carry out the decision; returns the item now holding the memory (None: skipped)."""
        vectors = None if vector is None else vector[None, :]
        if decision.action == Action.ADD or not decision.targets:
            self.store.add_items([item], vectors, actor=actor, reason=f"add: {decision.reason}")
            return item
        target = decision.targets[0]
        if decision.action == Action.SKIP:
            merged = _merge_source(target, item)
            self.store.update_item(
                merged,
                None,
                actor=actor,
                action="skip",
                reason=f"skip: {decision.reason}; said again in {item.source.message_ids}",
                expected_version=target.version,
            )
            return None
        if decision.action == Action.UPDATE:
            updated = _merge_source(target, item).model_copy(
                update={
                    "text": item.text,
                    "entities": list(dict.fromkeys([*target.entities, *item.entities])),
                    "metadata": {**target.metadata, **item.metadata},
                }
            )
            return self.store.update_item(
                updated,
                vector,
                actor=actor,
                action="update",
                reason=f"update: {decision.reason}",
                expected_version=target.version,
            )
        # supersede: the new item is stored first, so a crash never leaves neither current
        start = item.valid_from or utcnow()
        current = [o for o in decision.targets if o.valid_from is None or o.valid_from <= start]
        if not current:
            # the new item describes an earlier time than what is stored: it is the past
            end = min(o.valid_from for o in decision.targets if o.valid_from is not None)
            past = item.model_copy(update={"valid_to": end, "status": MemoryStatus.SUPERSEDED})
            self.store.add_items(
                [past],
                vectors,
                actor=actor,
                reason=f"add as past: {decision.reason}; the stored value is more recent",
            )
            return past
        new = item.model_copy(update={"supersedes": current[0].id})
        self.store.add_items(
            [new],
            vectors,
            actor=actor,
            reason=f"supersede {', '.join(o.id for o in current)}: {decision.reason}",
        )
        for old in current:
            ended = old.model_copy(
                update={
                    "status": MemoryStatus.SUPERSEDED,
                    "valid_to": start,
                    "version": old.version + 1,
                    "metadata": {**old.metadata, "superseded_by": new.id},
                }
            )
            self.store.update_item(
                ended,
                None,
                actor=actor,
                action="supersede",
                reason=f"superseded by {new.id}: {decision.reason}",
                expected_version=old.version,
            )
        return new


def _merge_source(target: MemoryItem, item: MemoryItem) -> MemoryItem:
    source = target.source.model_copy(
        update={
            "message_ids": list(
                dict.fromkeys([*target.source.message_ids, *item.source.message_ids])
            ),
            "item_ids": list(dict.fromkeys([*target.source.item_ids, *item.source.item_ids])),
        }
    )
    return target.model_copy(
        update={
            "source": source,
            "version": target.version + 1,
            "confidence": min(1.0, max(target.confidence, item.confidence) + 0.1),
        }
    )


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def _extends(new: str, old: str) -> bool:
    """The new text says what the old one did and more."""
    old_words, new_words = _words(old), _words(new)
    return (
        bool(old_words)
        and len(old_words & new_words) / len(old_words) >= 0.8
        and len(new_words) > len(old_words)
    )
