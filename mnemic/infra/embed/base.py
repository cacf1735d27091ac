"""The embedder interface: texts in, L2-normalised float32 vectors out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from mnemic.errors import InvalidInput


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit vectors. Implementations batch internally and are thread-safe."""

    @property
    def id(self) -> str:
        """Stable identifier of model and variant, e.g. ``onnx:all-MiniLM-L6-v2:int8``.

        Stored in each cube's manifest: vectors from different ids are not comparable.
        """
        ...

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return an array of shape ``(len(texts), dim)``, dtype float32, rows of norm 1."""
        ...


def check_texts(texts: Sequence[str]) -> list[str]:
    """The texts as a list, or InvalidInput naming the first one that is not a string."""
    if isinstance(texts, str):
        raise InvalidInput("embed() takes a list of texts, not one string: use [text]")
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise InvalidInput(f"texts[{i}] is {type(text).__name__}, not str")
    return out


def normalize(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return vectors / norms
