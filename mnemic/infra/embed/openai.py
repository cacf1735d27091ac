"""Embedder for any OpenAI-compatible ``POST {base_url}/embeddings`` (OpenAI, Ollama, vLLM).

Texts go out in batches of ``batch_size``; ``dimensions`` is sent when configured. Requests
go through :class:`mnemic.infra.http.JsonPoster`: timeouts, network errors, 408, 429 and 5xx
are retried up to ``max_retries`` times with exponential backoff (0.5 s, 1 s, 2 s, ... capped
at 30 s), waiting what ``Retry-After`` asks when the server says; other 4xx fail at once.
A response that is not the expected JSON raises :class:`BackendUnavailable` quoting what came
back.

``dim`` is ``dimensions`` when configured; otherwise it is learned from the first response,
and reading ``dim`` before any ``embed`` call sends one one-text request to find it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from mnemic.config import EmbedderConfig
from mnemic.errors import BackendUnavailable, InvalidInput
from mnemic.infra.embed.base import check_texts, normalize
from mnemic.infra.http import BACKOFF_BASE_S, JsonPoster, json_body, snippet


class OpenAIEmbedder:
    """Thread-safe: ``httpx.Client`` is, and the learned dimension is set under a lock."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str = "http://localhost:11434/v1",
        api_key: str | None = None,
        dimensions: int | None = None,
        batch_size: int = 64,
        timeout_s: float = 30.0,
        max_retries: int = 3,
        backoff_base_s: float = BACKOFF_BASE_S,
    ) -> None:
        if dimensions is not None and dimensions < 1:
            raise InvalidInput(f"dimensions must be positive, got {dimensions}")
        self.model = model
        self._poster = JsonPoster(
            base_url,
            api_key=api_key,
            timeout_s=timeout_s,
            max_retries=max_retries,
            backoff_base_s=backoff_base_s,
            key_hint="embedder.api_key",
        )
        self.url = self._poster.url("/embeddings")
        self._dimensions = dimensions
        self._dim = dimensions
        self._batch_size = batch_size
        self._lock = threading.Lock()
        self._id = f"openai:{model}" + (f":{dimensions}" if dimensions else "")

    @classmethod
    def from_config(cls, config: EmbedderConfig) -> OpenAIEmbedder:
        return cls(
            config.model,
            base_url=config.base_url,
            api_key=config.api_key,
            dimensions=config.dimensions,
            batch_size=config.batch_size,
            timeout_s=config.timeout_s,
            max_retries=config.max_retries,
        )

    @property
    def id(self) -> str:
        return self._id

    @property
    def dim(self) -> int:
        if self._dim is None:
            self.embed(["dimension probe"])  # sets self._dim
        assert self._dim is not None
        return self._dim

    def close(self) -> None:
        self._poster.close()

    def __enter__(self) -> OpenAIEmbedder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = check_texts(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # OpenAI rejects empty strings; a single space embeds as "nothing" everywhere
        texts = [t if t else " " for t in texts]
        parts = [
            self._embed_batch(texts[i : i + self._batch_size])
            for i in range(0, len(texts), self._batch_size)
        ]
        return normalize(np.concatenate(parts, axis=0))

    def _embed_batch(self, batch: list[str]) -> np.ndarray:
        payload: dict[str, Any] = {"model": self.model, "input": batch}
        if self._dimensions is not None:
            payload["dimensions"] = self._dimensions
        response = self._poster.post("/embeddings", payload, what=f"model {self.model!r}")
        vectors = self._parse(response, len(batch))
        with self._lock:
            if self._dim is None:
                self._dim = vectors.shape[1]
        if vectors.shape[1] != self._dim:
            raise BackendUnavailable(
                f"{self.url} returned {vectors.shape[1]}-dimensional vectors for model "
                f"{self.model!r}, expected {self._dim}"
            )
        return vectors

    def _parse(self, response: httpx.Response, expected: int) -> np.ndarray:
        body = json_body(response, self.url)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or len(data) != expected:
            got = f"{len(data)} items" if isinstance(data, list) else "no 'data' list"
            raise BackendUnavailable(
                f"{self.url} answered with {got} for {expected} inputs: {snippet(response.text)}"
            )
        try:
            if all(isinstance(d, dict) and isinstance(d.get("index"), int) for d in data):
                data = sorted(data, key=lambda d: d["index"])
            vectors = np.array([d["embedding"] for d in data], dtype=np.float32)
        except (KeyError, TypeError, ValueError):
            raise BackendUnavailable(
                f"{self.url} answered without a numeric 'embedding' in each item: "
                f"{snippet(response.text)}"
            ) from None
        if vectors.ndim != 2 or vectors.shape[1] == 0 or not np.isfinite(vectors).all():
            raise BackendUnavailable(
                f"{self.url} answered with embeddings of unequal or zero length, or non-finite "
                f"values: {snippet(response.text)}"
            )
        return vectors
