"""The activation benchmark runs end to end on the tiny model and checks its own outputs."""

from __future__ import annotations

from mnemic.bench import activation
from mnemic.infra.activation.prompt import prefix_ids, render_memory
from mnemic.infra.hf_models import byte_tokenizer


def test_items_for_tokens_reaches_the_target_with_the_fewest_items() -> None:
    tok = byte_tokenizer()
    items = activation.items_for_tokens(tok, 300)
    assert len(prefix_ids(tok, render_memory(items))) >= 300
    assert len(prefix_ids(tok, render_memory(items[:-1]))) < 300


def test_report_rows_on_the_tiny_model() -> None:
    report = activation.run(shape="tiny", sizes=(128, 256), repeats=1)
    rows = report["rows"]
    assert [r["memory_tokens"] >= t for r, t in zip(rows, (128, 256), strict=True)] == [True, True]
    for r in rows:
        assert r["same_tokens"] is True
        assert r["cache_mb"] > 0 and r["ttft_text_ms"] > 0 and r["ttft_cache_ms"] > 0
    assert rows[1]["cache_mb"] > rows[0]["cache_mb"]
