"""The reorganizer: one pass over a scope that leaves its tree and graph in order.

A pass reads the scope's active items, their vectors, the stored tree and edges, then plans
in memory:

1. near-duplicate items (same kind and speaker, cosine >= ``duplicate_similarity``, kinds
   in ``merge_kinds``) merge into the earliest of their group: the others get status
   ``merged`` and ``metadata["merged_into"]``, the survivor gains their provenance and
   entities; both sides get a ``merge`` history row and a ``merged_into`` edge is written;
2. the tree: items no longer active leave it, new items go under the nearest topic or open
   one, topics past ``max_topic_size`` split, topics whose centroids converge merge, and the
   topics whose items changed get a new centroid, title and summary (``tree.TreePlan``);
3. the graph: the managed edges are derived again and the difference stored (``graph``).

Everything planned is applied by one :meth:`Store.organize` call, one transaction: a crash
leaves the scope as it was before the pass or as it is after. A pass over an organized scope
plans nothing (idempotent). If an item or the tree changed meanwhile (a stale version, or
another pass applied since this one read the tree), the pass is
planned again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from mnemic.config import OrganizerConfig
from mnemic.errors import Conflict
from mnemic.infra.store.base import ItemChange, ItemFilter, Store, TreeChange
from mnemic.models import MemoryItem, MemoryStatus
from mnemic.operation.organizer.graph import MANAGED_KINDS, edge, plan_edges
from mnemic.operation.organizer.tree import TreePlan

if TYPE_CHECKING:
    from mnemic.infra.llm.base import LLM

log = logging.getLogger(__name__)

ACTOR = "organizer"
_PAGE = 1000
_ATTEMPTS = 3
_BLOCK = 512  # rows of the similarity matrix computed at once when looking for duplicates


@dataclass
class OrganizeReport:
    """What one pass changed."""

    items: int = 0  # active items seen
    placed: int = 0  # items put under a topic for the first time
    moved: int = 0  # items that changed topic
    unplaced: int = 0  # items taken out of the tree (no longer active)
    merged_items: int = 0
    splits: int = 0
    topic_merges: int = 0
    topics_written: int = 0
    topics_dropped: int = 0
    edges_added: int = 0
    edges_dropped: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @property
    def changed(self) -> bool:
        return any(v for k, v in self.as_dict().items() if k != "items")


def active_items(store: Store, user_id: str, cube_id: str) -> list[MemoryItem]:
    """The scope's active items in store order (time, then insertion)."""
    out: list[MemoryItem] = []
    offset = 0
    while True:
        page = store.list_items(user_id, cube_id, ItemFilter(), limit=_PAGE, offset=offset)
        out.extend(page)
        if len(page) < _PAGE:
            return out
        offset += _PAGE


def duplicate_groups(
    items: list[MemoryItem], vectors: dict[str, np.ndarray], config: OrganizerConfig
) -> list[tuple[MemoryItem, list[tuple[MemoryItem, float]]]]:
    """Groups of near-duplicates as (survivor, [(merged item, cosine to its match)]); the
    survivor is the group's earliest item (recorded first, then store order)."""
    kinds = set(config.merge_kinds)
    buckets: dict[tuple[str, str | None], list[MemoryItem]] = {}
    for item in items:
        if str(item.kind) in kinds and item.id in vectors:
            buckets.setdefault((str(item.kind), item.speaker), []).append(item)
    order = {item.id: n for n, item in enumerate(items)}
    groups = []
    for bucket in buckets.values():
        if len(bucket) < 2:
            continue
        matrix = np.stack([vectors[i.id] for i in bucket])
        # cosine whatever the vectors' lengths (a loaded cube's are not ours to trust)
        matrix = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
        parent = list(range(len(bucket)))

        def find(x: int, parent: list[int] = parent) -> int:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        best: dict[int, float] = {}
        for start in range(0, len(bucket), _BLOCK):  # a block of rows at a time: bounded memory
            sims = matrix[start : start + _BLOCK] @ matrix.T
            rows, cols = np.nonzero(sims >= config.duplicate_similarity)
            for r, b in zip(rows.tolist(), cols.tolist(), strict=True):
                a = start + r
                if b <= a:
                    continue
                parent[find(a)] = find(b)
                for x in (a, b):
                    best[x] = max(best.get(x, -1.0), float(sims[r, b]))
        clusters: dict[int, list[int]] = {}
        for n in range(len(bucket)):
            clusters.setdefault(find(n), []).append(n)
        for members in clusters.values():
            if len(members) < 2:
                continue
            ranked = sorted(members, key=lambda n: (bucket[n].recorded_at, order[bucket[n].id]))
            survivor = bucket[ranked[0]]
            groups.append((survivor, [(bucket[n], best[n]) for n in ranked[1:]]))
    groups.sort(key=lambda g: order[g[0].id])
    return groups


class Organizer:
    """Runs reorganization passes over scopes of one store (see the module doc)."""

    def __init__(
        self,
        store: Store,
        config: OrganizerConfig,
        llm: LLM | None = None,
        *,
        llm_factory: Callable[[], LLM | None] | None = None,
    ) -> None:
        """``llm`` (or ``llm_factory``, called at the first pass) writes the summaries;
        without one they are extractive."""
        self.store, self.config = store, config
        self._llm, self._llm_factory = llm, llm_factory

    @property
    def llm(self) -> LLM | None:
        if self._llm is None and self._llm_factory is not None:
            self._llm, self._llm_factory = self._llm_factory(), None
        return self._llm

    def run(self, user_id: str, cube_id: str, *, actor: str = ACTOR) -> OrganizeReport:
        for attempt in range(_ATTEMPTS):
            change, report = self.plan(user_id, cube_id)
            try:
                self.store.organize(change, actor=actor)
            except Conflict:
                if attempt == _ATTEMPTS - 1:
                    raise
                continue  # an item changed while we planned: plan again from the store
            if report.changed:
                log.info("organized %s/%s: %s", user_id, cube_id, report.as_dict())
            return report
        raise AssertionError("unreachable")

    def plan(self, user_id: str, cube_id: str) -> tuple[TreeChange, OrganizeReport]:
        """The change one pass would make, and its report (nothing is written)."""
        cfg = self.config
        items = active_items(self.store, user_id, cube_id)
        vectors = self.store.get_vectors(user_id, cube_id, [i.id for i in items])
        change = TreeChange(user_id, cube_id, move_reason="reorganized")
        report = OrganizeReport(items=len(items))

        # 1. near-duplicates
        merged: set[str] = set()
        for survivor, losers in duplicate_groups(items, vectors, cfg):
            message_ids = list(survivor.source.message_ids)
            item_ids = list(survivor.source.item_ids)
            entities = list(survivor.entities)
            for loser, sim in losers:
                merged.add(loser.id)
                message_ids += loser.source.message_ids
                item_ids += loser.source.item_ids
                entities += loser.entities
                change.items.append(
                    ItemChange(
                        loser.model_copy(
                            update={
                                "status": MemoryStatus.MERGED,
                                "version": loser.version + 1,
                                "metadata": {**loser.metadata, "merged_into": survivor.id},
                            }
                        ),
                        loser.version,
                        "merge",
                        f"near-duplicate of {survivor.id} (cosine {sim:.3f}); merged into it",
                    )
                )
                change.add_edges.append(
                    edge(user_id, cube_id, (loser.id, "merged_into", survivor.id))
                )
            source = survivor.source.model_copy(
                update={
                    "message_ids": list(dict.fromkeys(message_ids)),
                    "item_ids": list(dict.fromkeys(item_ids)),
                }
            )
            absorbed = [*survivor.metadata.get("absorbed", []), *(x.id for x, _ in losers)]
            change.items.append(
                ItemChange(
                    survivor.model_copy(
                        update={
                            "version": survivor.version + 1,
                            "source": source,
                            "entities": list(dict.fromkeys(entities)),
                            "metadata": {**survivor.metadata, "absorbed": absorbed},
                        }
                    ),
                    survivor.version,
                    "merge",
                    f"absorbed near-duplicates {', '.join(x.id for x, _ in losers)}",
                )
            )
        report.merged_items = len(merged)
        live = [i for i in items if i.id not in merged]
        live_ids = {i.id for i in live}

        # 2. the tree
        members = self.store.topic_members(user_id, cube_id)
        topics_now = {t.id: t for t in self.store.topics(user_id, cube_id)}
        change.expected_topics = {t.id: t.version for t in topics_now.values()}
        change.expected_members = dict(members)
        tree = TreePlan(
            user_id,
            cube_id,
            cfg,
            topics=topics_now,
            members=members,
            vectors=vectors,
            items={i.id: i for i in live},
        )
        for item_id in list(members):
            if item_id not in live_ids:
                tree.remove(item_id)
        for item in live:
            if item.id not in tree.place and item.id in vectors:
                tree.insert(item.id)
        tree.split_large()
        tree.merge_converging()
        place, unplace, written, dropped = tree.diff(self._summarize if self.llm else None)
        change.place, change.unplace = place, unplace
        change.topics, change.drop_topics = written, dropped
        change.notes = tree.notes
        report.placed = sum(1 for i in place if i not in members)
        report.moved = len(place) - report.placed
        report.unplaced = len(unplace)
        report.splits = sum(1 for n in tree.notes if n[1] == "split")
        report.topic_merges = sum(1 for n in tree.notes if n[1] == "merge_topics")
        report.topics_written, report.topics_dropped = len(written), len(dropped)

        # 3. the graph
        targets = {i.supersedes for i in live if i.supersedes} - live_ids
        known = {i.id for i in self.store.get_items(user_id, cube_id, sorted(targets))}
        wanted = plan_edges(live, cfg, known)
        stored = {
            (e.src, e.kind, e.dst)
            for e in self.store.links(user_id, cube_id, kinds=list(MANAGED_KINDS))
        }
        change.add_edges += [edge(user_id, cube_id, k) for k in sorted(wanted - stored)]
        change.drop_edges = sorted(stored - wanted)
        report.edges_added = len(wanted - stored) + len(merged)
        report.edges_dropped = len(change.drop_edges)
        return change, report

    def _summarize(self, items: list[MemoryItem]) -> str:
        """A topic's summary written by the LLM; the extractive one if the call fails."""
        from mnemic.operation.organizer.tree import extractive_summary
        from mnemic.operation.reader.prompts import load_prompt

        assert self.llm is not None
        prompt = load_prompt("summarize")
        try:
            reply = self.llm.complete(
                [
                    {"role": "system", "content": prompt.text},
                    {"role": "user", "content": "\n".join(f"- {i.said()}" for i in items)},
                ],
                max_tokens=200,
            )
        except Exception as exc:  # a summary is a convenience: never fail the pass for it
            log.warning("topic summary by %s failed (%s); kept an extractive one", self.llm.id, exc)
            return extractive_summary(items)
        text = " ".join(reply.split())
        return text[:600] if text else extractive_summary(items)
