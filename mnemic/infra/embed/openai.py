"""Embedder for any OpenAI-compatible ``POST {base_url}/embeddings`` (OpenAI, Ollama, vLLM).

Texts go out in batches of ``batch_size``; ``dimensions`` is sent when configured. Timeouts,
network errors, 429 and 5xx are retried up to ``max_retries`` times with exponential backoff
(0.5 s, 1 s, 2 s, ... capped at 30 s), waiting what ``Retry-After`` asks when the server says.
Other 4xx fail at once. A response that is not the expected JSON raises
:class:`BackendUnavailable` quoting what came back.

``dim`` is ``dimensions`` when configured; otherwise it is learned from the first response,
and reading ``dim`` before any ``embed`` call sends one one-text request to find it.
"""

from __future__ import annotations

import email.utils
import json
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np

from mnemic.config import EmbedderConfig
from mnemic.errors import BackendUnavailable, InvalidInput
from mnemic.infra.embed.base import check_texts, normalize

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
RETRY_STATUS = frozenset({408, 429})  # plus every 5xx


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
        self.url = base_url.rstrip("/") + "/embeddings"
        self._dimensions = dimensions
        self._dim = dimensions
        self._batch_size = batch_size
        self._max_retries = max_retries
        self._backoff_base_s = backoff_base_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s), headers=headers)
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
        self._client.close()

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
        response = self._post(payload)
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

    def _post(self, payload: dict[str, Any]) -> httpx.Response:
        last = ""
        for attempt in range(self._max_retries + 1):
            wait = min(BACKOFF_CAP_S, self._backoff_base_s * 2**attempt)
            try:
                response = self._client.post(self.url, json=payload)
            except httpx.TimeoutException as exc:
                last = f"timed out ({type(exc).__name__})"
            except httpx.TransportError as exc:
                last = f"network error: {exc}"
            else:
                status = response.status_code
                if status < 400:
                    return response
                last = f"HTTP {status}: {_snippet(response.text)}"
                if status not in RETRY_STATUS and status < 500:
                    hint = " (check embedder.api_key)" if status in (401, 403) else ""
                    raise BackendUnavailable(
                        f"{self.url} rejected the request for model {self.model!r}: {last}{hint}"
                    )
                asked = _retry_after(response.headers.get("retry-after"))
                if asked is not None:
                    wait = min(asked, BACKOFF_CAP_S)
            if attempt < self._max_retries:
                time.sleep(wait)
        raise BackendUnavailable(
            f"{self.url} failed after {self._max_retries + 1} attempts; last: {last}"
        )

    def _parse(self, response: httpx.Response, expected: int) -> np.ndarray:
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BackendUnavailable(
                f"{self.url} answered HTTP {response.status_code} with non-JSON: "
                f"{_snippet(response.text)}"
            ) from None
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or len(data) != expected:
            got = f"{len(data)} items" if isinstance(data, list) else "no 'data' list"
            raise BackendUnavailable(
                f"{self.url} answered with {got} for {expected} inputs: {_snippet(response.text)}"
            )
        try:
            if all(isinstance(d, dict) and isinstance(d.get("index"), int) for d in data):
                data = sorted(data, key=lambda d: d["index"])
            vectors = np.array([d["embedding"] for d in data], dtype=np.float32)
        except (KeyError, TypeError, ValueError):
            raise BackendUnavailable(
                f"{self.url} answered without a numeric 'embedding' in each item: "
                f"{_snippet(response.text)}"
            ) from None
        if vectors.ndim != 2 or vectors.shape[1] == 0 or not np.isfinite(vectors).all():
            raise BackendUnavailable(
                f"{self.url} answered with embeddings of unequal or zero length, or non-finite "
                f"values: {_snippet(response.text)}"
            )
        return vectors


def _retry_after(value: str | None) -> float | None:
    """Seconds asked by a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _snippet(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return repr(text[:limit] + ("..." if len(text) > limit else ""))
