"""The scheduler benchmark on a small LoCoMo-format conversation of our own making."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from mnemic.bench import scheduler as bench
from mnemic.bench.locomo import load_conversations
from mnemic.interface.cli import app

from .test_locomo import write_conversation


def test_questions_are_asked_after_their_latest_evidence(tmp_path: Path) -> None:
    (conv,) = load_conversations(write_conversation(tmp_path / "c"))
    asked = bench.schedule(conv)
    assert [q.text for q in asked["session_1"]] == ["What is the name of Ana's dog?"]
    assert [q.text for q in asked["session_2"]] == [
        "What did Ben sell at the market?",
        "What does Ana's dog do?",
    ]


def test_hit_rates_follow_each_policy(tmp_path: Path, embedder) -> None:
    convs = load_conversations(write_conversation(tmp_path / "c"))
    report = bench.run(convs, embedder, sizes=(2, 50))
    rows = {(r["policy"], r["capacity"]): r for r in report["rows"]}
    assert set(rows) == {(p, w) for p in bench.POLICIES for w in (2, 50)}
    # "none" with W=2 holds the last two turns heard: after session 1 (D1:2, D1:3) the
    # dog question finds nothing; after session 2 (D2:1, D2:2) the market question finds
    # its evidence and the multi-hop one half of it
    assert rows[("none", 2)]["hit_rate"] == 0.5
    assert rows[("none", 2)]["all_evidence_held"] == round(1 / 3, 4)
    # with room for everything, the turns heard and the prediction hold every evidence turn
    assert rows[("none", 50)]["hit_rate"] == 1.0
    assert rows[("predict", 50)]["hit_rate"] == 1.0
    # recency only holds past results: the first question can never be a hit
    assert rows[("recency", 50)]["hit_rate"] < 1.0
    assert report["lookup_us_p50"] > 0 and report["preload_ms_p50"] > 0
    assert bench.ratio(report, 50) is not None


def test_cli_prints_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "sched.json"
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "scheduler",
            str(write_conversation(tmp_path / "c")),
            "--sizes",
            "2,5",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "prediction / recency" in result.output
    assert {r["capacity"] for r in json.loads(out.read_text())["rows"]} == {2, 5}
    bad = CliRunner().invoke(app, ["bench", "scheduler", str(tmp_path / "c"), "--sizes", "x"])
    assert bad.exit_code != 0 and "integers" in str(bad.exception)
