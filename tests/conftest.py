"""Shared fixtures: a fresh store per backend, one real embedder per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

STORE_BACKENDS = ["sqlite"]


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the real user data directory or config."""
    monkeypatch.setenv("MNEMIC_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MNEMIC_CONFIG", raising=False)


@pytest.fixture(params=STORE_BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    if request.param == "sqlite":
        from mnemic.infra.store.sqlite import SQLiteStore

        s = SQLiteStore(tmp_path / "store.db", dim=8)
    else:  # pragma: no cover - added with each backend
        raise NotImplementedError(request.param)
    yield s
    s.close()


@pytest.fixture(scope="session")
def embedder() -> object:
    from mnemic.config import EmbedderConfig
    from mnemic.infra.embed import get_embedder

    return get_embedder(EmbedderConfig())


@pytest.fixture
def memory(tmp_path: Path, embedder: object) -> Iterator[object]:
    from mnemic import Memory, load_settings

    with Memory(load_settings(home=tmp_path / "mem"), embedder=embedder) as mem:  # type: ignore[arg-type]
        yield mem
