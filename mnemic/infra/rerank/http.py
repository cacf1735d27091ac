"""Reranker for a server's ``POST {base_url}/rerank`` in the Cohere/Jina form, which vLLM,
Infinity, Jina and Cohere serve: ``{"model", "query", "documents", "top_n"}`` in,
``{"results": [{"index", "relevance_score"}, ...]}`` out (a bare list of ``{"index",
"score"}`` is read too). Requests go through :class:`mnemic.infra.http.JsonPoster`: timeouts,
network errors, 408, 429 and 5xx are retried with backoff; other 4xx fail at once. An answer
that does not score every document once raises :class:`BackendUnavailable` quoting it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mnemic.config import RerankerConfig
from mnemic.errors import BackendUnavailable
from mnemic.infra.http import BACKOFF_BASE_S, JsonPoster, json_body, snippet


class HttpReranker:
    """Thread-safe, as ``httpx.Client`` is."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str = "http://localhost:8000/v1",
        api_key: str | None = None,
        timeout_s: float = 30.0,
        max_retries: int = 2,
        backoff_base_s: float = BACKOFF_BASE_S,
    ) -> None:
        self.model = model
        self._poster = JsonPoster(
            base_url,
            api_key=api_key,
            timeout_s=timeout_s,
            max_retries=max_retries,
            backoff_base_s=backoff_base_s,
            key_hint="retrieval.reranker.api_key",
        )
        self.url = self._poster.url("/rerank")

    @classmethod
    def from_config(cls, config: RerankerConfig) -> HttpReranker:
        return cls(
            config.model,
            base_url=config.base_url,
            api_key=config.api_key,
            timeout_s=config.timeout_s,
            max_retries=config.max_retries,
        )

    @property
    def id(self) -> str:
        return f"http:{self.model}"

    def close(self) -> None:
        self._poster.close()

    def score(self, query: str, texts: Sequence[str]) -> np.ndarray:
        documents = list(texts)
        if not documents:
            return np.zeros(0, dtype=np.float32)
        payload = {
            "model": self.model,
            "query": query,
            "documents": documents,
            "top_n": len(documents),
        }
        response = self._poster.post("/rerank", payload, what=f"reranker {self.model!r}")
        body = json_body(response, self.url)
        results = body.get("results") if isinstance(body, dict) else body
        return self._scores(results, len(documents), response.text)

    def _scores(self, results: Any, expected: int, text: str) -> np.ndarray:
        if not isinstance(results, list):
            raise BackendUnavailable(
                f"{self.url} answered without a 'results' list: {snippet(text)}"
            )
        scores = np.full(expected, np.nan, dtype=np.float64)
        for entry in results:
            index = entry.get("index") if isinstance(entry, dict) else None
            value = None
            if isinstance(entry, dict):
                value = entry.get("relevance_score", entry.get("score"))
            if (
                not isinstance(index, int)
                or not 0 <= index < expected
                or not isinstance(value, int | float)
                or isinstance(value, bool)
                or not math.isfinite(value)
                or not math.isnan(scores[index])
            ):
                raise BackendUnavailable(
                    f"{self.url} answered with an entry that is not a new document index "
                    f"(0..{expected - 1}) with a finite score: {snippet(json.dumps(entry))}"
                )
            scores[index] = float(value)
        if np.isnan(scores).any():
            raise BackendUnavailable(
                f"{self.url} scored {int((~np.isnan(scores)).sum())} of {expected} documents: "
                f"{snippet(text)}"
            )
        return scores.astype(np.float32)
