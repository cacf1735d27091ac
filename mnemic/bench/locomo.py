"""The LoCoMo retrieval benchmark: does search return the turns that answer each question?

Every conversation is ingested session by session (with its date) into a fresh store, one
user per conversation. For each question of categories 1-4 we search and score:

- ``recall_all@k`` / ``recall_any@k``: all / any evidence turn ids are among the turns behind
  the first k items (an item stands behind the turns whose content it carries: its
  ``source.message_ids``);
- the same within packed contexts of 500, 1,000 and 2,000 cl100k tokens (``@1000tok``);
- mean context tokens at k = 10, search latency p50/p95, ingest throughput;
- the same figures by how many evidence turns a question has (1, 2, 3, 4+): recall_all of a
  question with four evidence turns is far harder than of one with one, so two sets of
  conversations compare only stratum by stratum (``evidence_turns`` in the JSON).

With ``holdout`` (conversation names), the figures are split into the conversations tuned on
("dev") and the held-out ones, with their gap per budget and the held-out figure that dev's
recall per evidence stratum predicts for the held-out questions' mix (``holdout`` in the
JSON): a gap that this prediction accounts for comes from which questions were asked, not
from a pipeline that fails on unseen conversations.

A BM25-over-raw-turns baseline runs in the same command so every figure reads as a ratio:
Okapi BM25 (k1 = 1.2, b = 0.75) over ``speaker: text`` of each turn, lowercased word tokens
without stopwords — the strongest of the plain variants we tried (0.524 recall_all@10 on the
six shared conversations; text alone 0.498, with stopwords 0.487).
"""

from __future__ import annotations

import json
import math
import re
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from mnemic.config import Settings
from mnemic.errors import Conflict
from mnemic.infra.embed.base import Embedder
from mnemic.infra.store.base import ItemFilter
from mnemic.infra.text import STOPWORDS
from mnemic.infra.tokens import count_tokens
from mnemic.models import MemoryItem, SearchHit
from mnemic.operation.retrieval.packing import context_text, pack

CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
KS = (5, 10, 20)
BUDGETS = (500, 1000, 2000)
POOL = 60  # items fetched per question, enough to fill the largest budget
# the two of the six shared conversations that retrieval was never tuned on
HOLDOUT = ("43", "44")
DEFAULT_PATH = Path(__file__).resolve().parents[2].parent / "shared" / "bench" / "locomo"


@dataclass
class Question:
    conv: str
    text: str
    category: int
    evidence: frozenset[str]


@dataclass
class Conversation:
    name: str
    sessions: list[tuple[str, datetime, list[dict[str, str]]]]  # (session id, date, turns)
    questions: list[Question]

    @property
    def turns(self) -> Iterable[dict[str, str]]:
        for _, _, turns in self.sessions:
            yield from turns


def parse_date(text: str) -> datetime:
    """LoCoMo's session times look like ``1:56 pm on 8 May, 2023``."""
    return datetime.strptime(text.strip(), "%I:%M %p on %d %B, %Y")


def turn_text(turn: dict[str, Any]) -> str:
    text = str(turn.get("text", "")).strip()
    caption = turn.get("blip_caption")
    if caption:
        text = f"{text} [shares {caption}]".strip()
    return text


def load_conversation(path: Path) -> Conversation:
    data = json.loads(path.read_text(encoding="utf-8"))
    if "conversation" in data:  # the original release nests the sessions
        data = {**data["conversation"], "qa": data.get("qa", [])}
    sessions = []
    numbers = sorted(int(m.group(1)) for k in data if (m := re.fullmatch(r"session_(\d+)", k)))
    for n in numbers:
        turns = [
            {"speaker": str(t["speaker"]), "text": turn_text(t), "id": str(t["dia_id"])}
            for t in data[f"session_{n}"]
            if turn_text(t)
        ]
        if turns:
            sessions.append((f"session_{n}", parse_date(data[f"session_{n}_date_time"]), turns))
    questions = []
    for qa in data.get("qa", []):
        if qa.get("category") not in CATEGORIES:
            continue
        evidence = frozenset(
            e for raw in qa.get("evidence", []) for e in re.split(r"[;,\s]+", str(raw)) if e
        )
        if evidence:
            questions.append(Question(path.stem, qa["question"], qa["category"], evidence))
    return Conversation(path.stem, sessions, questions)


def load_conversations(path: Path) -> list[Conversation]:
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"no LoCoMo .json files in {path}")
    return [load_conversation(f) for f in files]


# ---------------------------------------------------------------------- scoring


@dataclass
class Scores:
    """Per-question outcomes, aggregated into the table's figures."""

    hits: dict[str, list[float]] = field(default_factory=dict)
    by_cat: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    by_evidence: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def add(self, category: int, values: dict[str, float], evidence: int = 1) -> None:
        cat = self.by_cat.setdefault(CATEGORIES[category], {})
        stratum = self.by_evidence.setdefault(evidence_stratum(evidence), {})
        for key, value in values.items():
            self.hits.setdefault(key, []).append(value)
            cat.setdefault(key, []).append(value)
            stratum.setdefault(key, []).append(value)

    @classmethod
    def merged(cls, parts: Iterable[Scores]) -> Scores:
        out = cls()
        for part in parts:
            for key, values in part.hits.items():
                out.hits.setdefault(key, []).extend(values)
            for mine, theirs in ((out.by_cat, part.by_cat), (out.by_evidence, part.by_evidence)):
                for name, table in theirs.items():
                    for key, values in table.items():
                        mine.setdefault(name, {}).setdefault(key, []).extend(values)
        return out

    @staticmethod
    def _summary(values: dict[str, list[float]]) -> dict[str, float]:
        return {k: round(statistics.fmean(v), 4) for k, v in values.items() if v}

    def overall(self) -> dict[str, float]:
        return self._summary(self.hits)

    def categories(self) -> dict[str, dict[str, float]]:
        return {
            name: self._summary(self.by_cat[name])
            for name in CATEGORIES.values()
            if name in self.by_cat
        }

    def evidence(self) -> dict[str, dict[str, float]]:
        """Figures by evidence turns per question, with each stratum's question count."""
        return {
            name: {**self._summary(values), "questions": len(next(iter(values.values())))}
            for name, values in sorted(self.by_evidence.items())
        }


def evidence_stratum(turns: int) -> str:
    return str(turns) if turns < 4 else "4+"


def holdout_figures(dev_parts: Sequence[Scores], held_parts: Sequence[Scores]) -> dict[str, Any]:
    """recall_all at each budget for dev and held-out questions (each part one
    conversation's), the gap (dev minus held-out, in points) with two standard errors, and
    ``held_out_at_dev_rates``: the held-out figure had each of its questions been found as
    often as dev's questions with as many evidence turns.

    ``gap_se_points`` takes the questions as the units sampled (two independent samples of a
    few hundred questions make a gap of a few points noisy). ``gap_se_conversations_points``
    takes the conversations as the units: what the gap would vary by with other
    conversations held out, from the spread of the conversations' own figures around their
    side's mean (pooled; None with fewer than three conversations). Questions of one
    conversation are not independent samples, so with two conversations held out this is
    the wider and the truer of the two.
    """
    dev, held = Scores.merged(dev_parts), Scores.merged(held_parts)
    keys = [f"recall_all@{b}tok" for b in BUDGETS]
    dev_strata, held_strata = dev.evidence(), held.evidence()
    total = sum(int(v["questions"]) for v in held_strata.values())
    expected: dict[str, float] = {}
    for key in keys:
        expected[key] = round(
            sum(
                v["questions"] * dev_strata.get(name, v)[key]  # no dev stratum: its own rate
                for name, v in held_strata.items()
            )
            / max(total, 1),
            4,
        )
    dev_all, held_all = dev.overall(), held.overall()
    return {
        "dev": {k: dev_all.get(k, 0.0) for k in keys} | {"questions": len(dev.hits[keys[0]])},
        "held_out": {k: held_all.get(k, 0.0) for k in keys}
        | {"questions": len(held.hits[keys[0]])},
        "gap_points": {k: round(100 * (dev_all[k] - held_all[k]), 1) for k in keys},
        "gap_se_points": {
            k: round(
                100
                * math.sqrt(
                    statistics.pvariance(dev.hits[k]) / len(dev.hits[k])
                    + statistics.pvariance(held.hits[k]) / len(held.hits[k])
                ),
                1,
            )
            for k in keys
        },
        "gap_se_conversations_points": {
            k: _conversation_se(dev_parts, held_parts, k) for k in keys
        },
        "held_out_at_dev_rates": expected,
        "gap_points_from_mix": {k: round(100 * (dev_all[k] - expected[k]), 1) for k in keys},
    }


def _conversation_se(
    dev_parts: Sequence[Scores], held_parts: Sequence[Scores], key: str
) -> float | None:
    """Standard error, in points, of the difference between the mean figure of the dev and
    the held-out conversations, each conversation one sample (pooled variance)."""
    sides = [
        [statistics.fmean(p.hits[key]) for p in parts if p.hits.get(key)]
        for parts in (dev_parts, held_parts)
    ]
    freedom = sum(len(side) for side in sides) - 2
    if freedom < 1 or not all(sides):
        return None
    spread = sum((x - statistics.fmean(side)) ** 2 for side in sides for x in side) / freedom
    return round(100 * math.sqrt(spread * sum(1 / len(side) for side in sides)), 1)


def score_ranking(
    question: Question,
    ranked: Sequence[MemoryItem],
    packed: Mapping[int, Sequence[MemoryItem]],
) -> dict[str, float]:
    """recall_all/any at each k and each token budget for one question."""

    def covered(items: Iterable[MemoryItem]) -> set[str]:
        return {m for item in items for m in item.source.message_ids}

    out: dict[str, float] = {}
    for k in KS:
        seen = covered(ranked[:k])
        out[f"recall_all@{k}"] = float(question.evidence <= seen)
        out[f"recall_any@{k}"] = float(bool(question.evidence & seen))
    for budget, items in packed.items():
        seen = covered(items)
        out[f"recall_all@{budget}tok"] = float(question.evidence <= seen)
        out[f"recall_any@{budget}tok"] = float(bool(question.evidence & seen))
    top = [SearchHit(item=i, score=0.0) for i in ranked[:10]]
    out["context_tokens@10"] = float(count_tokens(context_text(top)))
    return out


# ---------------------------------------------------------------------- BM25 baseline


_TOKEN = re.compile(r"\w+")


def _terms(text: str) -> list[str]:
    return [w for w in _TOKEN.findall(text.lower()) if w not in STOPWORDS]


class BM25:
    """Okapi BM25 over a fixed list of documents (the baseline, kept independent of the store)."""

    def __init__(self, docs: Sequence[str], k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.docs = [Counter(_terms(d)) for d in docs]
        self.lengths = np.array([sum(c.values()) for c in self.docs], dtype=float)
        self.avg = float(self.lengths.mean()) if len(self.docs) else 0.0
        df: Counter[str] = Counter()
        for c in self.docs:
            df.update(c.keys())
        n = len(self.docs)
        self.idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}

    def rank(self, query: str, k: int) -> list[int]:
        scores = np.zeros(len(self.docs))
        for term in set(_terms(query)):
            idf = self.idf.get(term)
            if idf is None:
                continue
            for i, doc in enumerate(self.docs):
                tf = doc.get(term)
                if tf:
                    norm = self.k1 * (1 - self.b + self.b * self.lengths[i] / self.avg)
                    scores[i] += idf * tf * (self.k1 + 1) / (tf + norm)
        order = np.argsort(-scores, kind="stable")
        return [int(i) for i in order[:k] if scores[i] > 0]


# ---------------------------------------------------------------------- runs


class TimedEmbedder:
    """Wraps an embedder to account the time spent in it (ingest vs. everything else)."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.texts = 0

    @property
    def id(self) -> str:
        return self.inner.id

    @property
    def dim(self) -> int:
        return self.inner.dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        t = time.perf_counter()
        try:
            return self.inner.embed(texts)
        finally:
            self.seconds += time.perf_counter() - t
            self.texts += len(texts)


@dataclass
class RunResult:
    overall: dict[str, float]
    categories: dict[str, dict[str, float]]
    extra: dict[str, Any] = field(default_factory=dict)
    conversations: dict[str, dict[str, float]] = field(default_factory=dict)
    evidence_turns: dict[str, dict[str, float]] = field(default_factory=dict)
    holdout: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(
        cls, per_conv: Mapping[str, Scores], extra: dict[str, Any], holdout: Sequence[str] = ()
    ) -> RunResult:
        """Figures of all questions, per conversation, per evidence stratum and, when
        ``holdout`` names some but not all of the conversations, dev against held-out."""
        scores = Scores.merged(per_conv.values())
        result = cls(
            scores.overall(),
            scores.categories(),
            extra,
            conversations={name: c.overall() for name, c in per_conv.items()},
            evidence_turns=scores.evidence(),
        )
        held = [c for name, c in per_conv.items() if name in holdout]
        dev = [c for name, c in per_conv.items() if name not in holdout]
        if held and dev:
            result.holdout = {
                "held_out_conversations": [n for n in per_conv if n in holdout],
                **holdout_figures(dev, held),
            }
        return result

    def as_dict(self) -> dict[str, Any]:
        out = {"overall": {**self.overall, **self.extra}, "categories": self.categories}
        if self.evidence_turns:
            out["evidence_turns"] = self.evidence_turns
        if self.conversations:
            out["conversations"] = self.conversations
        if self.holdout:
            out["holdout"] = self.holdout
        return out


def ingest(
    mem: Any,
    conversations: Sequence[Conversation],
    progress: Callable[[str, int], None] | None = None,
) -> dict[str, float]:
    """Add every session of every conversation; one user per conversation.

    Refused if a conversation's user already holds items (a PostgreSQL store named by
    ``store.dsn`` outlives the run): adding it again would count every turn twice."""
    from mnemic.sdk import default_cube

    for conv in conversations:
        user = user_of(conv)
        if mem.store.count_items(user, default_cube(user), ItemFilter.any_status()):
            raise Conflict(
                f"the store already holds items of user {user} (LoCoMo conversation "
                f"{conv.name}); run the bench on an empty store: for PostgreSQL, point "
                "store.dsn at a scratch database"
            )
    timed = mem.embedder
    timed.seconds = 0.0
    items_added = 0
    t = time.perf_counter()
    organize_s = 0.0
    for conv in conversations:
        for session_id, when, turns in conv.sessions:
            added = mem.add(
                turns, user_id=user_of(conv), session_id=session_id, timestamp=when, wait=True
            )
            items_added += len(added)
            if progress:
                progress("ingest", len(added))
        # the organizer's background passes ran on its policy during the adds; one more
        # places the last items, so the tree and graph are whole when questions come
        t_org = time.perf_counter()
        mem.reorganize(user_id=user_of(conv))
        organize_s += time.perf_counter() - t_org
    ingest_s = time.perf_counter() - t
    return {
        "final_organize_s": round(organize_s, 2),
        "ingest_items_per_s": round(items_added / ingest_s, 1) if ingest_s else 0.0,
        "ingest_share_outside_embedder": round(1 - timed.seconds / ingest_s, 3)
        if ingest_s
        else 0.0,
        "items": items_added,
    }


def user_of(conv: Conversation) -> str:
    return f"locomo-{conv.name}"


def evaluate(
    mem: Any,
    conversations: Sequence[Conversation],
    progress: Callable[[str, int], None] | None = None,
    holdout: Sequence[str] = (),
) -> RunResult:
    """Search every question with the memory's current retrieval recipe and score it."""
    per_conv: dict[str, Scores] = {}
    latencies: list[float] = []
    for conv in conversations:
        conv_scores = per_conv[conv.name] = Scores()
        for q in conv.questions:
            t = time.perf_counter()
            hits: list[SearchHit] = mem.search(q.text, user_id=user_of(conv), top_k=POOL)
            latencies.append((time.perf_counter() - t) * 1000)
            ranked = [h.item for h in hits]
            packed = {b: [h.item for h in pack(hits, b)] for b in BUDGETS}
            conv_scores.add(q.category, score_ranking(q, ranked, packed), len(q.evidence))
            if progress:
                progress("search", 1)
    extra: dict[str, Any] = {
        "search_p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "search_p95_ms": round(float(np.percentile(latencies, 95)), 2),
        "questions": len(latencies),
    }
    return RunResult.of(per_conv, extra, holdout)


def run_bm25_baseline(
    conversations: Sequence[Conversation], holdout: Sequence[str] = ()
) -> RunResult:
    from mnemic.models import Source

    per_conv: dict[str, Scores] = {}
    latencies: list[float] = []
    for conv in conversations:
        conv_scores = per_conv[conv.name] = Scores()
        items = [
            MemoryItem(
                user_id="baseline",
                cube_id="baseline",
                text=t["text"],
                speaker=t["speaker"],
                valid_from=when,
                source=Source(message_ids=[t["id"]]),
            )
            for _, when, turns in conv.sessions
            for t in turns
        ]
        index = BM25([f"{i.speaker}: {i.text}" for i in items])
        for q in conv.questions:
            t0 = time.perf_counter()
            ranked = [items[i] for i in index.rank(q.text, POOL)]
            latencies.append((time.perf_counter() - t0) * 1000)
            hits = [SearchHit(item=i, score=0.0) for i in ranked]
            packed = {b: [h.item for h in pack(hits, b)] for b in BUDGETS}
            conv_scores.add(q.category, score_ranking(q, ranked, packed), len(q.evidence))
    extra = {
        "search_p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "search_p95_ms": round(float(np.percentile(latencies, 95)), 2),
    }
    return RunResult.of(per_conv, extra, holdout)


def ablations(stages: Sequence[str]) -> dict[str, list[str]]:
    """The default recipe, each stage left out in turn, and each recall stage alone."""
    variants = {"all stages": list(stages)}
    for stage in stages:
        if stage == "fusion":
            continue  # without fusion there are no candidates: the recall-only rows show it
        rest = [s for s in stages if s != stage]
        if any(s in rest for s in ("bm25", "dense")):
            variants[f"without {stage}"] = rest
    if "tree" in stages and "graph" in stages:
        variants["without tree and graph"] = [s for s in stages if s not in ("tree", "graph")]
    for recall in ("bm25", "dense"):
        if recall in stages:
            variants[f"{recall} alone"] = [recall, "fusion"]
    return variants


ABLATION_KEYS = (
    "recall_all@10",
    "recall_all@500tok",
    "recall_all@1000tok",
    "recall_all@2000tok",
    "search_p50_ms",
)


def run(
    path: Path,
    settings: Settings | None = None,
    embedder: Embedder | None = None,
    progress: Callable[[str, int], None] | None = None,
    *,
    ablate: bool = False,
    stages: Sequence[str] | None = None,
    holdout: Sequence[str] = HOLDOUT,
) -> dict[str, Any]:
    """Run mnemic and the baseline on every conversation in ``path``; return the JSON report.

    ``stages`` replaces the configured retrieval recipe; ``ablate`` adds one row per variant
    of it (``report["ablation"]``), all searched over the same ingested store. ``holdout``
    names the conversations reported apart from the rest (``report["holdout"]``), when some
    but not all of them are in ``path``.
    """
    from mnemic.config import load_settings
    from mnemic.infra.embed import get_embedder
    from mnemic.sdk import Memory

    conversations = load_conversations(path)
    base = settings or load_settings()
    retrieval = base.retrieval
    if stages is not None:
        retrieval = retrieval.model_copy(update={"stages": list(stages)})
    with tempfile.TemporaryDirectory(prefix="mnemic-locomo-") as home:
        settings = base.model_copy(
            update={
                "home": Path(home),
                "store": base.store.model_copy(update={"path": None}),
                "retrieval": retrieval,
            }
        )
        timed = TimedEmbedder(embedder or get_embedder(settings.embedder))
        with Memory(settings, embedder=timed) as mem:
            ingest_stats = ingest(mem, conversations, progress)
            ours = evaluate(mem, conversations, progress, holdout)
            ours.extra.update(ingest_stats)
            ablation: dict[str, dict[str, Any]] = {}
            if ablate:
                for name, recipe in ablations(retrieval.stages).items():
                    mem.set_retrieval(retrieval.model_copy(update={"stages": recipe}))
                    result = evaluate(mem, conversations)
                    ablation[name] = {
                        "stages": recipe,
                        **{k: {**result.overall, **result.extra}[k] for k in ABLATION_KEYS},
                        "multi-hop@1000tok": result.categories.get("multi-hop", {}).get(
                            "recall_all@1000tok"
                        ),
                        "multi-hop@10": result.categories.get("multi-hop", {}).get("recall_all@10"),
                    }
    baseline = run_bm25_baseline(conversations, holdout)
    report = ours.as_dict()
    report["baseline_bm25"] = baseline.as_dict()
    if ablation:
        report["ablation"] = ablation
    report["config"] = {
        "path": str(path),
        "conversations": [c.name for c in conversations],
        "embedder": timed.id,
        "retrieval": retrieval.model_dump(),
        "reader": settings.reader.model_dump(),
        "tokenizer": "cl100k_base",
    }
    return report


def total_work(path: Path) -> tuple[int, int]:
    conversations = load_conversations(path)
    turns = sum(len(t) for c in conversations for _, _, t in c.sessions)
    return turns, sum(len(c.questions) for c in conversations)
