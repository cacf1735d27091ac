"""``mnemic bench serve`` end to end on a small load: a real server subprocess, concurrent
clients, and the count check that catches lost writes."""

from __future__ import annotations

from mnemic.bench import serve


def test_small_load_has_no_error_and_no_lost_write() -> None:
    report = serve.run(requests=60, clients=4, add_share=0.5, seed=1)
    assert report["errors"] == 0, report["error_samples"]
    assert report["lost_writes"] == 0
    ops = report["ops"]
    assert ops["add"]["n"] + ops["search"]["n"] == 60
    assert report["acknowledged_items"] == ops["add"]["n"] >= 4  # one item per add
    assert ops["all"]["p50_ms"] <= ops["all"]["p95_ms"] <= ops["all"]["max_ms"]
