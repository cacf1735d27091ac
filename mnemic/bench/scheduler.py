"""The scheduler benchmark: is what a question needs already in working memory?

Each LoCoMo conversation is replayed session by session into a fresh store. Question order
(documented, the same for every policy): right after session *s* is stored, the questions
whose latest evidence turn is in session *s* are asked, in the data set's order. For every
question we measure, before its search, the share of its evidence turns already held in
working memory (the hit rate), for each policy and working-memory size W:

- ``none``: working memory holds the last W turns heard, nothing loaded from the store;
- ``recency``: it holds the items of past search results (top 10 each), LRU;
- ``predict``: next-scene prediction preloads W items after each session is stored.

The question is then searched once (the same results for all policies) and its results are
offered to each scheduler (only ``recency`` keeps them: ``keep_results`` is off here so each
row measures one policy). Also reported: how long a working-memory lookup takes, the
preload cost, and "all evidence held" (every evidence turn in working memory).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mnemic.config import SchedulerConfig, Settings
from mnemic.infra.embed.base import Embedder
from mnemic.models import MemoryItem
from mnemic.operation.reader.deterministic import embed_text
from mnemic.operation.scheduler import Scheduler

from .locomo import CATEGORIES, Conversation, Question, user_of

POLICIES = ("none", "recency", "predict")
SIZES = (10, 20, 50)
CATEGORIES_ORDER = tuple(CATEGORIES.values())


def session_of(turn_id: str) -> int | None:
    """``D3:12`` → 3."""
    try:
        return int(turn_id.split(":")[0].lstrip("D"))
    except (ValueError, IndexError):
        return None


def schedule(conv: Conversation) -> dict[str, list[Question]]:
    """Questions by the id of the session after which they are asked (the session of their
    latest evidence turn)."""
    order = {sid: i for i, (sid, _, _) in enumerate(conv.sessions)}
    number = {int(sid.rsplit("_", 1)[-1]): sid for sid in order if sid.rsplit("_", 1)[-1].isdigit()}
    out: dict[str, list[Question]] = {}
    for q in conv.questions:
        sessions = [session_of(e) for e in q.evidence]
        if not sessions or any(s is None or s not in number for s in sessions):
            continue  # evidence we cannot place in time
        last = max(sessions, key=lambda s: order[number[s]])  # type: ignore[index]
        out.setdefault(number[last], []).append(q)  # type: ignore[index]
    return out


@dataclass
class Row:
    policy: str
    capacity: int
    hit: list[float] = field(default_factory=list)  # share of evidence held, per question
    all_held: list[bool] = field(default_factory=list)
    by_category: dict[str, list[float]] = field(default_factory=dict)

    def add(self, category: int, share: float) -> None:
        self.hit.append(share)
        self.all_held.append(share >= 1.0)
        self.by_category.setdefault(CATEGORIES[category], []).append(share)

    def summary(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "capacity": self.capacity,
            "hit_rate": round(statistics.fmean(self.hit), 4) if self.hit else 0.0,
            "all_evidence_held": round(statistics.fmean(self.all_held), 4) if self.hit else 0.0,
            "by_category": {
                c: round(statistics.fmean(v), 4) for c, v in sorted(self.by_category.items())
            },
            "questions": len(self.hit),
        }


def held_turns(sched: Scheduler, user: str, cube: str, session: str) -> set[str]:
    items = sched.working(user, cube, session).items()
    return {m for item in items for m in item.source.message_ids}


def run(
    conversations: Sequence[Conversation],
    embedder: Embedder,
    *,
    sizes: Sequence[int] = SIZES,
    policies: Sequence[str] = POLICIES,
    config: SchedulerConfig | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> dict[str, Any]:
    from mnemic.sdk import Memory, default_cube

    base = (config or SchedulerConfig()).model_copy(update={"keep_results": False})
    rows = {(p, w): Row(p, w) for p in policies for w in sizes}
    lookup_us: list[float] = []
    preload_ms: list[float] = []
    search_ms: list[float] = []
    for conv in conversations:
        with tempfile.TemporaryDirectory(prefix="mnemic-bench-") as tmp:
            settings = Settings(home=Path(tmp)).model_copy(
                update={"scheduler": base.model_copy(update={"enabled": False})}
            )
            with Memory(settings, embedder=embedder) as mem:
                user = user_of(conv)
                cube = default_cube(user)
                scheds = {
                    key: Scheduler(
                        mem.store, base.model_copy(update={"policy": key[0], "capacity": key[1]})
                    )
                    for key in rows
                }
                # one working memory per conversation: the agent's ongoing dialogue
                thread = f"{conv.name}-dialogue"

                def observe(items: list[MemoryItem]) -> None:
                    # embedded once here for all schedulers (add embeds in the background)
                    vectors = embedder.embed([embed_text(i) for i in items])
                    moved = [i.model_copy(update={"session_id": thread}) for i in items]  # noqa: B023
                    for sched in scheds.values():  # noqa: B023
                        sched.observe(moved, vectors)

                mem.listeners.append(observe)
                asked = schedule(conv)
                for session_id, when, turns in conv.sessions:
                    mem.add(turns, user_id=user, session_id=session_id, timestamp=when, wait=True)
                    for q in asked.get(session_id, []):
                        for key, sched in scheds.items():
                            held = held_turns(sched, user, cube, thread)
                            rows[key].add(q.category, len(q.evidence & held) / len(q.evidence))
                            t = time.perf_counter()
                            sched.lookup(q.text, user_id=user, cube_id=cube, session_id=thread)
                            lookup_us.append((time.perf_counter() - t) * 1e6)
                        t = time.perf_counter()
                        hits = mem.search(q.text, user_id=user, top_k=10, now=when)
                        search_ms.append((time.perf_counter() - t) * 1000)
                        for sched in scheds.values():
                            sched.record_results(
                                [h.item for h in hits],
                                user_id=user,
                                cube_id=cube,
                                session_id=thread,
                            )
                        if progress:
                            progress("questions", 1)
                for sched in scheds.values():
                    preload_ms += sched.stats.preload_ms
    table = [rows[key].summary() for key in rows]
    return {
        "rows": table,
        "lookup_us_p50": round(float(np.percentile(lookup_us, 50)), 1) if lookup_us else 0.0,
        "lookup_us_p95": round(float(np.percentile(lookup_us, 95)), 1) if lookup_us else 0.0,
        "preload_ms_p50": round(float(np.percentile(preload_ms, 50)), 2) if preload_ms else 0.0,
        "search_ms_p50": round(float(np.percentile(search_ms, 50)), 2) if search_ms else 0.0,
        "config": base.model_dump(),
        "order": "after each session, the questions whose latest evidence is in it",
    }


def ratio(result: dict[str, Any], capacity: int = 20) -> float | None:
    """Prediction's hit rate over recency's at ``capacity``."""
    by = {(r["policy"], r["capacity"]): r["hit_rate"] for r in result["rows"]}
    pred, rec = by.get(("predict", capacity)), by.get(("recency", capacity))
    if pred is None or not rec:
        return None
    return round(pred / rec, 2)
