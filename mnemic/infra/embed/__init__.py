"""Embedders, chosen by name from :class:`mnemic.config.EmbedderConfig`."""

from __future__ import annotations

from mnemic.config import EmbedderConfig
from mnemic.errors import ConfigError
from mnemic.infra.embed.base import Embedder, normalize

__all__ = ["Embedder", "get_embedder", "normalize"]


def get_embedder(config: EmbedderConfig) -> Embedder:
    """Build the embedder the config names. Heavy backends are imported only here."""
    if config.backend == "onnx":
        from mnemic.infra.embed.onnx import OnnxEmbedder

        return OnnxEmbedder.from_config(config)
    if config.backend == "sentence-transformers":
        from mnemic.infra.embed.sentence_transformers import SentenceTransformerEmbedder

        return SentenceTransformerEmbedder.from_config(config)
    if config.backend == "openai":
        from mnemic.infra.embed.openai import OpenAIEmbedder

        return OpenAIEmbedder.from_config(config)
    raise ConfigError(
        f"unknown embedder backend {config.backend!r}; use onnx, sentence-transformers or openai"
    )
