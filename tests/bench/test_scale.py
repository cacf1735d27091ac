"""The scale benchmark runs end to end on both backends and measures what it says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mnemic.bench import scale


@pytest.mark.parametrize("defer", [False, True])
def test_scale_rows_on_both_backends(pg_server, tmp_path: Path, defer: bool) -> None:
    rows = scale.run(
        ["sqlite", "postgres"],
        [1500],
        dim=16,
        queries=10,
        dsn=pg_server.get_uri(),
        workdir=tmp_path,
        defer_index=defer,
    )
    assert [(r["store"], r["n"]) for r in rows] == [("sqlite", 1500), ("postgres", 1500)]
    for row in rows:
        # below the exact threshold both stores search exactly: recall is 1 by construction
        assert row["recall_at_10"] == 1.0
        assert row["queries"] == 10 and row["add_items_per_s"] > 0 and row["disk_mb"] > 0
    assert rows[1]["add_mode"] == ("deferred" if defer else "indexed")


def test_scale_with_the_real_embedder(tmp_path: Path, embedder) -> None:
    (row,) = scale.run(["sqlite"], [300], queries=10, workdir=tmp_path, embedder=embedder)
    assert row["vectors"] == embedder.id and row["embed_texts_per_s"] > 0
    assert row["recall_at_10"] == 1.0  # exact below the threshold, on the embedder's vectors
    texts = scale._sentences(300, np.random.default_rng(0))
    assert len(set(texts)) > 290  # sentences, nearly all distinct
