"""Compare embedders on LoCoMo: load time, ingest throughput, query latency, dense recall.

    python -m mnemic.bench.embedders [--fp32-dir DIR] [--threads N] [--json OUT]

For each embedder: the time to build it; texts/s embedding every turn of every conversation
(``"speaker: text"``, one ``embed`` call per conversation); the latency of embedding each
question alone (p50/p95); and dense-only retrieval quality: exact cosine top-10 over the
question's conversation, ``recall_all@10`` = share of questions (categories 1-4, with
evidence) whose evidence turns are all in the top 10.
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mnemic.infra.embed.base import Embedder

DEFAULT_LOCOMO = Path("/work/shared/bench/locomo")
CATEGORIES = (1, 2, 3, 4)  # 5 (adversarial) has no answer in the conversation
TOP_K = 10


@dataclass
class Question:
    text: str
    evidence: set[str]
    category: int


@dataclass
class Conversation:
    name: str
    turn_ids: list[str] = field(default_factory=list)
    turn_texts: list[str] = field(default_factory=list)
    questions: list[Question] = field(default_factory=list)


@dataclass
class Result:
    name: str
    embedder_id: str
    load_s: float
    ingest_per_s: float
    query_p50_ms: float
    query_p95_ms: float
    recall_all: float
    by_category: dict[int, float]
    questions: int


def load_locomo(folder: Path, limit: int | None = None) -> list[Conversation]:
    files = sorted(folder.glob("*.json"))[:limit]
    if not files:
        raise SystemExit(f"no LoCoMo conversations (*.json) in {folder}")
    conversations = []
    for path in files:
        data = json.loads(path.read_text(encoding="utf-8"))
        conv = Conversation(name=path.stem)
        sessions = sorted(
            (int(m.group(1)), value)
            for key, value in data.items()
            if (m := re.fullmatch(r"session_(\d+)", key)) and isinstance(value, list)
        )
        for _, turns in sessions:
            for turn in turns:
                conv.turn_ids.append(turn["dia_id"])
                conv.turn_texts.append(f"{turn['speaker']}: {turn['text']}")
        for qa in data.get("qa", []):
            # a few evidence entries hold two ids joined by ";"
            evidence = {
                part.strip() for e in qa.get("evidence", []) for part in str(e).split(";")
            } - {""}
            if qa.get("category") in CATEGORIES and evidence:
                conv.questions.append(Question(qa["question"], evidence, qa["category"]))
        conversations.append(conv)
    return conversations


def measure(name: str, build: Callable[[], Embedder], convs: list[Conversation]) -> Result:
    gc.collect()
    start = time.perf_counter()
    embedder = build()
    load_s = time.perf_counter() - start

    n_turns, ingest_s = 0, 0.0
    turn_vectors = []
    for conv in convs:
        start = time.perf_counter()
        turn_vectors.append(embedder.embed(conv.turn_texts))
        ingest_s += time.perf_counter() - start
        n_turns += len(conv.turn_texts)

    latencies: list[float] = []
    hits: dict[int, list[bool]] = {c: [] for c in CATEGORIES}
    for conv, vectors in zip(convs, turn_vectors, strict=True):
        for q in conv.questions:
            start = time.perf_counter()
            qv = embedder.embed([q.text])[0]
            latencies.append(time.perf_counter() - start)
            scores = vectors @ qv
            top = np.argpartition(-scores, min(TOP_K, len(scores) - 1))[:TOP_K]
            found = {conv.turn_ids[i] for i in top}
            hits[q.category].append(q.evidence <= found)

    every = [h for c in CATEGORIES for h in hits[c]]
    lat_ms = np.array(latencies) * 1000
    return Result(
        name=name,
        embedder_id=embedder.id,
        load_s=load_s,
        ingest_per_s=n_turns / ingest_s,
        query_p50_ms=float(np.percentile(lat_ms, 50)),
        query_p95_ms=float(np.percentile(lat_ms, 95)),
        recall_all=float(np.mean(every)),
        by_category={c: float(np.mean(h)) if h else float("nan") for c, h in hits.items()},
        questions=len(every),
    )


def format_table(results: list[Result]) -> str:
    head = (
        f"{'embedder':<16} {'load s':>7} {'ingest/s':>9} {'q p50 ms':>9} {'q p95 ms':>9} "
        f"{'R_all@10':>9} " + " ".join(f"{'cat' + str(c):>6}" for c in CATEGORIES)
    )
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(
            f"{r.name:<16} {r.load_s:>7.2f} {r.ingest_per_s:>9.0f} {r.query_p50_ms:>9.2f} "
            f"{r.query_p95_ms:>9.2f} {r.recall_all:>9.3f} "
            + " ".join(f"{r.by_category[c]:>6.3f}" for c in CATEGORIES)
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--locomo",
        type=Path,
        default=DEFAULT_LOCOMO,
        help="folder of LoCoMo conversation JSON files",
    )
    parser.add_argument("--limit", type=int, default=None, help="only the first N conversations")
    parser.add_argument(
        "--fp32-dir",
        type=Path,
        default=Path("/tmp/minilm-fp32"),
        help="folder with the fp32 model.onnx (skipped if absent)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="intra-op threads for every embedder (0: the runtime's default)",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--only",
        default="torch,onnx-fp32,onnx-int8",
        help="comma-separated subset of torch, onnx-fp32, onnx-int8",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    from mnemic.config import EmbedderConfig
    from mnemic.infra.embed import get_embedder

    convs = load_locomo(args.locomo, args.limit)
    n_turns = sum(len(c.turn_texts) for c in convs)
    n_questions = sum(len(c.questions) for c in convs)
    print(
        f"LoCoMo: {len(convs)} conversations, {n_turns} turns, {n_questions} questions "
        f"(categories 1-4); threads={args.threads or 'default'}",
        flush=True,
    )

    def config(**kw: object) -> EmbedderConfig:
        return EmbedderConfig.model_validate(
            {"batch_size": args.batch_size, "threads": args.threads, **kw}
        )

    wanted = {w.strip() for w in args.only.split(",") if w.strip()}
    plan: list[tuple[str, Callable[[], Embedder]]] = []
    if "torch" in wanted:
        try:
            import sentence_transformers  # noqa: F401
        except ImportError:
            print("torch: skipped (sentence-transformers is not installed)")
        else:
            plan.append(
                ("torch-fp32", lambda: get_embedder(config(backend="sentence-transformers")))
            )
    if "onnx-fp32" in wanted:
        if (args.fp32_dir / "model.onnx").is_file():
            plan.append(
                (
                    "onnx-fp32",
                    lambda: get_embedder(
                        config(backend="onnx", model=str(args.fp32_dir), quantized=False)
                    ),
                )
            )
        else:
            print(
                f"onnx-fp32: skipped (no {args.fp32_dir / 'model.onnx'}; make it with "
                f"scripts/export_minilm_onnx.py --fp32-dir {args.fp32_dir})"
            )
    if "onnx-int8" in wanted:
        plan.append(("onnx-int8", lambda: get_embedder(config(backend="onnx"))))

    results = []
    for name, build in plan:
        print(f"running {name} ...", flush=True)
        results.append(measure(name, build, convs))
    print()
    print(format_table(results))
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
