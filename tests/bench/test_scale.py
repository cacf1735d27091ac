"""The scale benchmark runs end to end on both backends and measures what it says."""

from __future__ import annotations

from pathlib import Path

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
