"""The memory tree of a scope, planned in memory: topics over clusters of items.

:class:`TreePlan` starts from the stored tree (topics, which item sits where, the items'
vectors) and changes it: insert an item under the topic whose centroid is closest or open a
topic for it, take items out, split a topic past the size bound (2-means on its items'
vectors), merge topics whose centroids converge. It remembers which topics it touched, so
only their centroids and summaries are rewritten, and :meth:`TreePlan.diff` turns the plan
into the placements, topics and drops of one :class:`~mnemic.infra.store.base.TreeChange`.

Summaries are extractive without an LLM: the items nearest the centroid, quoted, under a
title made of the words the topic's items share most.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from mnemic.config import OrganizerConfig
from mnemic.infra.text import STOPWORDS
from mnemic.models import MemoryItem, TopicNode, new_id, utcnow

_WORD = re.compile(r"[^\W\d_][\w'-]*", re.UNICODE)

Summarizer = Callable[[list[MemoryItem]], str]


def unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


# words of talk, not of a subject: a title made of them says nothing about the topic
FILLERS = frozenset(
    [
        "also",
        "really",
        "just",
        "yeah",
        "yes",
        "yep",
        "lol",
        "haha",
        "thanks",
        "thank",
        "wow",
        "cool",
        "sure",
        "well",
        "okay",
        "glad",
        "totally",
        "definitely",
        "absolutely",
        "awesome",
        "amazing",
        "great",
        "good",
        "nice",
        "sounds",
        "super",
        "pretty",
        "much",
        "lot",
        "lots",
        "something",
        "anything",
        "everything",
        "thing",
        "things",
        "way",
        "kind",
        "sort",
        "bit",
        "get",
        "got",
        "know",
        "think",
        "thought",
        "feel",
        "felt",
        "make",
        "made",
        "going",
        "gonna",
        "wanna",
        "let",
        "see",
        "say",
        "said",
        "tell",
    ]
)


def words_of(item: MemoryItem, names: frozenset[str] = frozenset()) -> set[str]:
    """An item's content words: lowercased, no stopwords, fillers or contractions, not its
    speaker's name nor one of ``names`` (the scope's speakers, who are in every topic)."""
    speaker = (item.speaker or "").lower()
    return {
        w
        for w in (m.lower() for m in _WORD.findall(item.text))
        if len(w) > 2
        and w not in STOPWORDS
        and w not in FILLERS
        and "'" not in w
        and w != speaker
        and w not in names
    }


def title_of(
    items: Sequence[MemoryItem],
    scope_df: Counter[str] | None = None,
    scope_n: int = 0,
    names: frozenset[str] = frozenset(),
) -> str:
    """The three words that best tell the topic's items from the rest of the scope: found
    in many of its items and few others (tf-idf over items; ties: alphabetical)."""
    df: Counter[str] = Counter()
    for item in items:
        df.update(words_of(item, names))

    def weight(w: str) -> float:
        if not scope_df or scope_n <= 0:
            return float(df[w])
        return df[w] * math.log(1 + scope_n / max(scope_df.get(w, 0), df[w]))

    best = sorted(df, key=lambda w: (-weight(w), w))[:3]
    return " / ".join(best) if best else "(untitled)"


def extractive_summary(items: Sequence[MemoryItem], limit: int = 160) -> str:
    """The given items (nearest the centroid first), each cut to ``limit`` characters."""
    parts = []
    for item in items:
        text = " ".join(item.said().split())
        parts.append(text if len(text) <= limit else text[: limit - 1].rstrip() + "…")
    return " | ".join(parts)


def two_means(vectors: np.ndarray, rounds: int = 10) -> np.ndarray:
    """Split rows into two groups (labels 0/1) by spherical 2-means, seeded by the row
    farthest from the mean and the row farthest from that one: deterministic."""
    mean = unit(vectors.mean(axis=0))
    a = int(np.argmin(vectors @ mean))
    b = int(np.argmin(vectors @ vectors[a]))
    centers = np.stack([vectors[a], vectors[b]])
    labels = np.zeros(len(vectors), dtype=int)
    for _ in range(rounds):
        new = np.argmax(vectors @ centers.T, axis=1)
        if new.min() == new.max():  # all on one side: cut by the first center's order
            order = np.argsort(-(vectors @ centers[0]), kind="stable")
            new = np.ones(len(vectors), dtype=int)
            new[order[: len(vectors) // 2]] = 0
        if np.array_equal(new, labels) and _ > 0:
            break
        labels = new
        centers = np.stack([unit(vectors[labels == k].mean(axis=0)) for k in (0, 1)])
    return labels


@dataclass
class TreePlan:
    """A scope's tree being reorganized in memory (see the module doc)."""

    user_id: str
    cube_id: str
    config: OrganizerConfig
    topics: dict[str, TopicNode]  # as stored
    members: dict[str, str]  # item id -> topic id, as stored
    vectors: dict[str, np.ndarray]
    items: dict[str, MemoryItem]  # the items the plan may need to read (active ones)
    place: dict[str, str] = field(default_factory=dict)  # the planned tree: item -> topic
    touched: set[str] = field(default_factory=set)
    notes: list[tuple[str, str, str, dict[str, object]]] = field(default_factory=list)
    created: dict[str, TopicNode] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.place = dict(self.members)
        self._by_topic: dict[str, set[str]] = {}
        for item_id, topic_id in self.place.items():
            self._by_topic.setdefault(topic_id, set()).add(item_id)
        self._centroids = {
            t.id: unit(np.asarray(t.centroid, dtype=np.float32))
            for t in self.topics.values()
            if t.centroid is not None
        }
        # a topic whose summary was wiped (an item of it was purged) is written again
        self.stale = {t.id for t in self.topics.values() if not t.summary}
        self.touched |= self.stale

    # ------------------------------------------------------------------ state

    def live_topics(self) -> list[str]:
        """Topics holding items in the plan, oldest first (ids break ties)."""
        held = {t for t, ids in self._by_topic.items() if ids}
        known = [t for t in self.topics.values() if t.id in held]
        known.sort(key=lambda t: (t.created_at, t.id))
        return [t.id for t in known] + [t for t in self.created if t in held]

    def of(self, topic_id: str) -> list[str]:
        """The topic's items in the plan, in a stable order."""
        return sorted(self._by_topic.get(topic_id, ()))

    def centroid(self, topic_id: str) -> np.ndarray | None:
        if topic_id not in self._centroids:  # _touch drops a changed topic's centroid
            vs = [self.vectors[i] for i in self.of(topic_id) if i in self.vectors]
            if not vs:
                return None
            self._centroids[topic_id] = unit(np.mean(vs, axis=0))
        return self._centroids[topic_id]

    def _open(self) -> str:
        topic_id = new_id()
        self.created[topic_id] = TopicNode(user_id=self.user_id, cube_id=self.cube_id, id=topic_id)
        return topic_id

    def _move(self, item_id: str, topic_id: str | None) -> None:
        """Put an item under a topic (None: out of the tree), keeping the index current."""
        old = self.place.pop(item_id, None)
        if old is not None:
            self._by_topic[old].discard(item_id)
            self._touch(old)
        if topic_id is not None:
            self.place[item_id] = topic_id
            self._by_topic.setdefault(topic_id, set()).add(item_id)
            self._touch(topic_id)

    def _touch(self, *topic_ids: str) -> None:
        for t in topic_ids:
            self.touched.add(t)
            self._centroids.pop(t, None)

    # ------------------------------------------------------------------ changes

    def remove(self, item_id: str) -> None:
        self._move(item_id, None)

    def insert(self, item_id: str) -> str:
        """Put an item under the topic whose centroid is nearest (at least
        ``topic_similarity``), else under a new topic; returns the topic."""
        vector = self.vectors[item_id]
        best, best_sim = None, self.config.topic_similarity
        for topic_id in self.live_topics():
            c = self.centroid(topic_id)
            if c is None:
                continue
            sim = float(c @ vector)
            if sim >= best_sim:
                best, best_sim = topic_id, sim
        topic_id = best if best is not None else self._open()
        self._move(item_id, topic_id)
        return topic_id

    def split_large(self) -> None:
        """Split every topic past ``max_topic_size`` in two until all fit; the larger part
        keeps the topic, the other part opens a new one."""
        queue = [t for t in self.live_topics() if len(self.of(t)) > self.config.max_topic_size]
        while queue:
            topic_id = queue.pop()
            ids = [i for i in self.of(topic_id) if i in self.vectors]
            if len(ids) <= self.config.max_topic_size or len(ids) < 2:
                continue
            labels = two_means(np.stack([self.vectors[i] for i in ids]))
            # the side holding more of the items stored under the topic keeps it (fewest
            # moves), then the larger side
            stored = np.array([self.members.get(i) == topic_id for i in ids])
            weight = [
                (int(np.sum(stored & (labels == k))), int(np.sum(labels == k))) for k in (0, 1)
            ]
            keep = int(weight[1] > weight[0])
            new_topic = self._open()
            moved = [i for i, label in zip(ids, labels, strict=True) if label != keep]
            for i in moved:
                self._move(i, new_topic)
            self._touch(topic_id, new_topic)
            self.notes.append(
                (
                    topic_id,
                    "split",
                    f"held {len(ids)} items, more than {self.config.max_topic_size}",
                    {"into": new_topic, "moved": len(moved), "kept": len(ids) - len(moved)},
                )
            )
            queue.extend(t for t in (topic_id, new_topic) if len(self.of(t)) > 0)

    def merge_converging(self) -> None:
        """Merge the closest pair of topics while their centroids reach
        ``topic_merge_similarity`` and their items fit one topic; the smaller joins the
        larger (older on a tie)."""
        bound = self.config.max_topic_size
        while True:
            live = self.live_topics()
            sizes = {t: len(self.of(t)) for t in live}
            best: tuple[float, str, str] | None = None
            cents = {t: self.centroid(t) for t in live}
            for n, a in enumerate(live):
                ca = cents[a]
                if ca is None:
                    continue
                for b in live[n + 1 :]:
                    cb = cents[b]
                    if cb is None or sizes[a] + sizes[b] > bound:
                        continue
                    sim = float(ca @ cb)
                    if sim >= self.config.topic_merge_similarity and (
                        best is None or sim > best[0]
                    ):
                        best = (sim, a, b)
            if best is None:
                return
            sim, a, b = best
            keep, gone = (a, b) if sizes[a] >= sizes[b] else (b, a)
            for i in self.of(gone):
                self._move(i, keep)
            self._touch(keep, gone)
            self.notes.append(
                (keep, "merge_topics", f"centroids at cosine {sim:.3f}", {"absorbed": gone})
            )

    # ------------------------------------------------------------------ result

    def diff(
        self, summarize: Summarizer | None = None
    ) -> tuple[dict[str, str], list[str], list[TopicNode], list[str]]:
        """(placements that changed, items taken out, topics written, topics dropped)."""
        place = {i: t for i, t in self.place.items() if self.members.get(i) != t}
        unplace = sorted(i for i in self.members if i not in self.place)
        live = set(self.live_topics())
        dropped = sorted(t for t in self.topics if t not in live)
        now = utcnow()
        names = frozenset(
            part.lower() for i in self.items.values() if i.speaker for part in i.speaker.split()
        )
        scope_df: Counter[str] = Counter()
        for item in self.items.values():
            scope_df.update(words_of(item, names))
        written: list[TopicNode] = []
        for topic_id in self.live_topics():
            if topic_id not in self.touched and topic_id not in self.created:
                continue
            ids = self.of(topic_id)
            old = self.topics.get(topic_id)
            if (
                old is not None
                and topic_id not in self.stale
                and set(ids) == {i for i, t in self.members.items() if t == topic_id}
            ):
                continue  # touched and back as it was: nothing to rewrite
            centroid = self.centroid(topic_id)
            members = [self.items[i] for i in ids if i in self.items]
            if centroid is not None:
                members.sort(
                    key=lambda m: (
                        -float(self.vectors[m.id] @ centroid) if m.id in self.vectors else 1.0
                    )
                )
            near = members[: self.config.summary_items]
            summary = summarize(near) if summarize is not None else extractive_summary(near)
            base = old or self.created[topic_id]
            written.append(
                base.model_copy(
                    update={
                        "title": title_of(members, scope_df, len(self.items), names),
                        "summary": summary,
                        "size": len(ids),
                        "centroid": None if centroid is None else centroid.tolist(),
                        "version": base.version + (old is not None),
                        "updated_at": now,
                    }
                )
            )
        return place, unplace, written, dropped
