"""The reranker interface: a query and texts in, one relevance score per text out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Reranker(Protocol):
    """Scores (query, text) pairs read together. Higher is more relevant; scores compare
    only within one call. Implementations are thread-safe."""

    @property
    def id(self) -> str:
        """Backend and model, e.g. ``cross-encoder:/models/ms-marco-MiniLM-L6-v2``."""
        ...

    def score(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """An array of ``len(texts)`` float32 scores, in the order of ``texts``."""
        ...
