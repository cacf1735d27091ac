"""Next-scene prediction: from the turns just heard, what the next turns will need.

A conversation moves in scenes: a few turns on one topic, then a drift to the next. The
predictor ranks three lists and fuses them by weighted reciprocal rank:

- **what was told**: the last ``window`` turns heard, ranked by salience (distinct content
  words, names and numbers: facts, not small talk) times recency (a turn ``heard_half_life``
  turns older weighs half), at ``heard_weight``;
- **scene vector**: the recency-weighted mean of the last ``scene_turns`` turns' embeddings
  (``half_life`` turns older weighs half), pushed along the drift (the recent half's mean
  minus the older half's) by ``drift``: where the talk is heading; searched in the store;
- **scene words**: names just mentioned (capitalised words inside a sentence) and the most
  repeated content words of the scene, weighted by recency, as a full-text query.

Measured on LoCoMo (``mnemic bench scheduler``), what the next questions need is mostly what
was just told: the salience ranking carries most of the hit rate, the two store searches add
older related items at the margin. No LLM; two store searches per call.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

from mnemic.config import SchedulerConfig
from mnemic.infra.store.base import ItemFilter, Scored, Store
from mnemic.infra.text import STOPWORDS
from mnemic.models import MemoryItem, MemoryStatus

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)?", re.UNICODE)
_ACTIVE = ItemFilter(statuses=(MemoryStatus.ACTIVE,))


def scene_vector(vectors: np.ndarray, half_life: float, drift: float) -> np.ndarray | None:
    """Recency-weighted mean of ``vectors`` (oldest first), moved along their drift."""
    n = len(vectors)
    if n == 0:
        return None
    ages = np.arange(n - 1, -1, -1, dtype=np.float32)
    weights = 0.5 ** (ages / max(half_life, 1e-6))
    scene = (weights[:, None] * vectors).sum(axis=0)
    if drift > 0 and n >= 4:
        half = n // 2
        scene = scene / weights.sum() + drift * (vectors[half:].mean(0) - vectors[:half].mean(0))
    norm = float(np.linalg.norm(scene))
    return scene / norm if norm > 0 else None


def scene_words(texts: Sequence[str], limit: int, half_life: float) -> list[str]:
    """Names and repeated content words of ``texts`` (oldest first), most telling first."""
    names: set[str] = set()  # capitalised inside a sentence somewhere: a name
    words: Counter[str] = Counter()
    n = len(texts)
    for i, text in enumerate(texts):
        weight = 0.5 ** ((n - 1 - i) / max(half_life, 1e-6))
        for sentence in _SENTENCE.split(text):
            for j, token in enumerate(_TOKEN.findall(sentence)):
                low = token.lower()
                if low in STOPWORDS or len(low) < 3 or low.isdigit():
                    continue
                if j > 0 and token[0].isupper():
                    names.add(low)
                words[low] += weight
    ranked = [w for w, _ in words.most_common() if w in names]
    ranked += [w for w, _ in words.most_common() if w not in names]
    return ranked[:limit]


def salience(text: str) -> float:
    """How much a turn tells: its distinct content words, names and numbers count; small
    talk ("Thanks, that's great!") counts little. Questions ask about what was told."""
    score = 0.0
    seen: set[str] = set()
    for sentence in _SENTENCE.split(text):
        for j, token in enumerate(_TOKEN.findall(sentence)):
            low = token.lower()
            if low in seen or low in STOPWORDS or (len(low) < 3 and not low.isdigit()):
                continue
            seen.add(low)
            score += 2.0 if low.isdigit() or (j > 0 and token[0].isupper()) else 1.0
    return score


def rrf(lists: Sequence[tuple[Sequence[str], float]], k: int) -> list[Scored]:
    """Weighted reciprocal-rank fusion of (ranked ids, weight) lists."""
    scores: dict[str, float] = {}
    for ranked, weight in lists:
        for rank, item_id in enumerate(ranked, start=1):
            scores[item_id] = scores.get(item_id, 0.0) + weight / (k + rank)
    return [Scored(i, s) for i, s in sorted(scores.items(), key=lambda kv: kv[1], reverse=True)]


class NextScenePredictor:
    def __init__(self, store: Store, config: SchedulerConfig) -> None:
        self.store = store
        self.config = config

    def predict(
        self,
        user_id: str,
        cube_id: str,
        recent: Sequence[MemoryItem],
        vectors: np.ndarray | None,
        k: int,
    ) -> list[Scored]:
        """The ``k`` items the next turns most likely need, best first. ``recent`` are the
        session's last turns (oldest first) and ``vectors`` the embeddings of the last of
        them (at least ``scene_turns``, aligned to the end of ``recent``), or None."""
        cfg = self.config
        recent = list(recent)[-max(cfg.window, k) :]  # at least as many as fit
        if not recent or k <= 0:
            return []
        depth = max(k, cfg.depth)
        n = len(recent)
        told = sorted(
            range(n),
            key=lambda i: salience(recent[i].text) * 0.5 ** ((n - 1 - i) / cfg.heard_half_life),
            reverse=True,
        )
        lists: list[tuple[list[str], float]] = [([recent[i].id for i in told], cfg.heard_weight)]
        scene_turns = recent[-cfg.scene_turns :]
        if vectors is not None and len(vectors):
            scene = scene_vector(
                np.asarray(vectors)[-cfg.scene_turns :], cfg.half_life, cfg.drift
            )  # the last turns' vectors (``vectors`` may hold only those)
            if scene is not None:
                hits = self.store.vector_search(user_id, cube_id, scene, depth, _ACTIVE)
                lists.append(([h.item_id for h in hits], 1.0))
        terms = scene_words([item.text for item in scene_turns], cfg.scene_words, cfg.half_life)
        if terms:
            hits = self.store.fulltext_search(user_id, cube_id, " ".join(terms), depth, _ACTIVE)
            lists.append(([h.item_id for h in hits], 1.0))
        return rrf(lists, cfg.rrf_k)[:k]
