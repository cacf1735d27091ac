"""Rerankers, chosen by name from :class:`mnemic.config.RerankerConfig`; one model is loaded
once per process however many retrievers use it."""

from __future__ import annotations

import threading

from mnemic.config import RerankerConfig
from mnemic.errors import ConfigError
from mnemic.infra.rerank.base import Reranker

__all__ = ["Reranker", "get_reranker"]

_loaded: dict[str, Reranker] = {}
_lock = threading.Lock()


def get_reranker(config: RerankerConfig) -> Reranker:
    """The reranker the config names (cached by its settings). Heavy backends are imported
    only here."""
    if not config.model:
        raise ConfigError(
            "the rerank stage needs retrieval.reranker.model: a cross-encoder folder (e.g. a "
            "download of cross-encoder/ms-marco-MiniLM-L6-v2) with backend 'cross-encoder', "
            "or a served model's name with backend 'http' and retrieval.reranker.base_url"
        )
    key = config.model_dump_json()
    with _lock:
        cached = _loaded.get(key)
        if cached is not None:
            return cached
        reranker: Reranker
        if config.backend == "cross-encoder":
            from mnemic.infra.rerank.cross_encoder import CrossEncoderReranker

            reranker = CrossEncoderReranker.from_config(config)
        elif config.backend == "http":
            from mnemic.infra.rerank.http import HttpReranker

            reranker = HttpReranker.from_config(config)
        else:  # pragma: no cover - the config's Literal refuses other names
            raise ConfigError(f"unknown reranker backend {config.backend!r}")
        _loaded[key] = reranker
        return reranker
