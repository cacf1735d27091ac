"""The LoCoMo benchmark on a small conversation of our own making, in LoCoMo's format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mnemic.bench.locomo import BM25, BUDGETS, Scores, holdout_figures, load_conversations, run
from mnemic.interface.cli import app


def write_conversation(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    conv = {
        "speaker_a": "Ana",
        "speaker_b": "Ben",
        "session_1_date_time": "1:56 pm on 8 May, 2023",
        "session_1": [
            {"speaker": "Ana", "dia_id": "D1:1", "text": "I adopted a dog named Rex yesterday."},
            {"speaker": "Ben", "dia_id": "D1:2", "text": "Congrats! I started a pottery class."},
            {
                "speaker": "Ana",
                "dia_id": "D1:3",
                "text": "Nice, what do you make?",
                "blip_caption": "a photo of a clay bowl",
            },
        ],
        "session_2_date_time": "10:00 am on 20 June, 2023",
        "session_2": [
            {"speaker": "Ben", "dia_id": "D2:1", "text": "I sold my first bowl at the market."},
            {"speaker": "Ana", "dia_id": "D2:2", "text": "Rex learned to fetch this week."},
        ],
        "qa": [
            {
                "question": "What is the name of Ana's dog?",
                "answer": "Rex",
                "evidence": ["D1:1"],
                "category": 4,
            },
            {
                "question": "What did Ben sell at the market?",
                "answer": "a bowl",
                "evidence": ["D2:1"],
                "category": 4,
            },
            {
                "question": "What does Ana's dog do?",
                "answer": "fetch",
                "evidence": ["D1:1; D2:2"],
                "category": 1,
            },
            {"question": "Adversarial, left out", "evidence": ["D1:1"], "category": 5},
        ],
    }
    path = folder / "conv.json"
    path.write_text(json.dumps(conv))
    return folder


def test_loader_parses_dates_captions_and_evidence(tmp_path: Path) -> None:
    (conv,) = load_conversations(write_conversation(tmp_path / "c"))
    assert [s for s, _, _ in conv.sessions] == ["session_1", "session_2"]
    assert conv.sessions[0][1].isoformat() == "2023-05-08T13:56:00"
    assert "[shares a photo of a clay bowl]" in conv.sessions[0][2][2]["text"]
    assert [q.category for q in conv.questions] == [4, 4, 1]
    assert conv.questions[2].evidence == {"D1:1", "D2:2"}


def test_bm25_baseline_ranks_matching_documents_first() -> None:
    index = BM25(["the cat sat", "dogs bark loudly", "a cat and a dog"])
    assert index.rank("cat", 5) == [0, 2]
    assert index.rank("unrelated words", 5) == []


def test_run_reports_every_figure_for_both_runs(tmp_path: Path, embedder) -> None:
    report = run(write_conversation(tmp_path / "c"), embedder=embedder)
    for part in (report, report["baseline_bm25"]):
        for key in (
            "recall_all@10",
            "recall_any@10",
            "recall_all@1000tok",
            "context_tokens@10",
            "search_p50_ms",
            "search_p95_ms",
        ):
            assert key in part["overall"], key
        assert set(part["categories"]) == {"multi-hop", "single-hop"}
        # two questions with one evidence turn, one with two
        strata = part["evidence_turns"]
        assert {k: v["questions"] for k, v in strata.items()} == {"1": 2, "2": 1}
    assert report["overall"]["ingest_items_per_s"] > 0
    # five turns fit in ten items: everything is recalled at k = 10
    assert report["overall"]["recall_all@10"] == 1.0
    assert report["overall"]["questions"] == 3


def test_cli_prints_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    folder = write_conversation(tmp_path / "c")
    (folder / "other.json").write_text((folder / "conv.json").read_text())
    result = CliRunner().invoke(
        app, ["bench", "locomo", str(folder), "--json", str(out), "--holdout", "other"]
    )
    assert result.exit_code == 0, result.output
    assert "bm25" in result.output and "all@1kt" in result.output
    assert "by evidence turns" in result.output
    assert "dev against held-out conversations (other)" in result.output
    assert "held-out at dev's rates" in result.output
    assert json.loads(out.read_text())["config"]["tokenizer"] == "cl100k_base"


def test_ablation_rows_share_one_store(tmp_path: Path, embedder) -> None:
    report = run(write_conversation(tmp_path / "c"), embedder=embedder, ablate=True)
    rows = report["ablation"]
    assert rows["all stages"]["stages"] == report["config"]["retrieval"]["stages"]
    assert "without speaker" in rows and "bm25 alone" in rows and "dense alone" in rows
    assert rows["bm25 alone"]["stages"] == ["bm25", "fusion"]
    assert set(report["conversations"]) == {"conv"}


def test_holdout_splits_the_figures_and_tells_the_gap_the_mix_makes() -> None:
    def found(yes: bool) -> dict[str, float]:
        return {f"recall_all@{b}tok": float(yes) for b in BUDGETS}

    dev, held = Scores(), Scores()
    for _ in range(6):  # dev: one-turn questions all found, two-turn ones half
        dev.add(4, found(True), evidence=1)
    for yes in (True, False):
        dev.add(1, found(yes), evidence=2)
    for yes in (True, False):  # held out: only two-turn questions, found as often as dev's
        held.add(1, found(yes), evidence=2)
    figures = holdout_figures([dev], [held])
    assert figures["dev"] == {**{f"recall_all@{b}tok": 0.875 for b in BUDGETS}, "questions": 8}
    assert figures["held_out"]["recall_all@1000tok"] == 0.5
    assert figures["gap_points"]["recall_all@1000tok"] == 37.5
    # s.e. of the difference of two means: sqrt(0.875 * 0.125 / 8 + 0.5 * 0.5 / 2) = 0.372
    assert figures["gap_se_points"]["recall_all@1000tok"] == 37.2
    # held out at dev's rate for two-turn questions: all of the gap is the mix of questions
    assert figures["held_out_at_dev_rates"]["recall_all@1000tok"] == 0.5
    assert figures["gap_points_from_mix"]["recall_all@1000tok"] == 37.5
    # one conversation a side: no spread to measure between conversations
    assert figures["gap_se_conversations_points"]["recall_all@1000tok"] is None


def test_holdout_gap_error_between_conversations() -> None:
    def conversation(found: int, of: int) -> Scores:
        part = Scores()
        for n in range(of):
            part.add(4, {f"recall_all@{b}tok": float(n < found) for b in BUDGETS})
        return part

    # dev conversations at 0.8, 0.9, 1.0; held out at 0.5 and 0.7 (ten questions each)
    dev = [conversation(8, 10), conversation(9, 10), conversation(10, 10)]
    held = [conversation(5, 10), conversation(7, 10)]
    figures = holdout_figures(dev, held)
    assert figures["gap_points"]["recall_all@1000tok"] == 30.0
    # pooled variance (0.01 + 0 + 0.01 + 0.01 + 0.01) / 3, times 1/3 + 1/2: s.e. 0.105
    assert figures["gap_se_conversations_points"]["recall_all@1000tok"] == 10.5


def test_run_reports_held_out_conversations_apart(tmp_path: Path, embedder) -> None:
    folder = write_conversation(tmp_path / "c")
    (folder / "other.json").write_text((folder / "conv.json").read_text())
    report = run(folder, embedder=embedder, holdout=["other"])
    for part in (report, report["baseline_bm25"]):
        split = part["holdout"]
        assert split["held_out_conversations"] == ["other"]
        assert split["dev"]["questions"] == split["held_out"]["questions"] == 3
        # the same conversation under another user: the same figures, no gap
        assert set(split["gap_points"].values()) == {0.0}
        assert split["held_out_at_dev_rates"] == {
            k: v for k, v in split["held_out"].items() if k != "questions"
        }
    # a hold-out that names none of the conversations reports no split
    assert "holdout" not in run(
        write_conversation(tmp_path / "d"), embedder=embedder, holdout=["x"]
    )


def test_ingest_refuses_a_store_that_holds_the_conversation_already(tmp_path: Path, memory) -> None:
    from mnemic.bench.locomo import ingest
    from mnemic.errors import Conflict
    from mnemic.infra.store.base import ItemFilter

    conversations = load_conversations(write_conversation(tmp_path / "c"))
    ingest(memory, conversations)
    user = "locomo-conv"
    held = memory.store.count_items(user, f"{user}/default", ItemFilter.any_status())
    assert held >= 5  # the five turns, and what was extracted from them
    # a second run on a store that outlived the first would count every turn twice
    with pytest.raises(Conflict, match="scratch database"):
        ingest(memory, conversations)
    assert memory.store.count_items(user, f"{user}/default", ItemFilter.any_status()) == held
