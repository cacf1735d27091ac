"""Retrying JSON POSTs to model servers (OpenAI-compatible embeddings and chat endpoints).

Timeouts, network errors, 408, 429 and 5xx are retried up to ``max_retries`` times with
exponential backoff (``backoff_base_s`` doubled per attempt, capped at 30 s), waiting what
``Retry-After`` asks when the server says. Other 4xx fail at once with :class:`HTTPRejected`,
whose message quotes the server and, for 401/403, names the config key to check.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx

from mnemic.errors import BackendUnavailable

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
RETRY_STATUS = frozenset({408, 429})  # plus every 5xx


class HTTPRejected(BackendUnavailable):
    """The server answered a 4xx that retrying will not fix; ``status`` and ``body`` say why."""

    def __init__(self, message: str, status: int, body: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class JsonPoster:
    """POSTs JSON to ``{url_base}{path}``. Thread-safe, as ``httpx.Client`` is."""

    def __init__(
        self,
        url_base: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        max_retries: int = 3,
        backoff_base_s: float = BACKOFF_BASE_S,
        key_hint: str = "api_key",
    ) -> None:
        self.url_base = url_base.rstrip("/")
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.key_hint = key_hint
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s), headers=headers)

    def url(self, path: str) -> str:
        return self.url_base + path

    def close(self) -> None:
        self._client.close()

    def post(
        self,
        path: str,
        payload: dict[str, Any],
        *,
        what: str,
        refused: Callable[[int, str], bool] | None = None,
    ) -> httpx.Response:
        """The first response under 400; ``what`` names the request in error messages.
        ``refused(status, body)`` marks error responses that retrying cannot help (e.g. a
        server answering an unsupported option with HTTP 500): raised at once."""
        return self._send(path, payload, what=what, stream=False, refused=refused)

    def stream_lines(self, path: str, payload: dict[str, Any], *, what: str) -> Iterator[str]:
        """The response body line by line as it arrives. Only the request is retried: once
        lines have been yielded, a broken stream raises :class:`BackendUnavailable`."""
        response = self._send(path, payload, what=what, stream=True)
        try:
            yield from response.iter_lines()
        except httpx.TimeoutException as exc:
            raise BackendUnavailable(
                f"{self.url(path)} timed out mid-stream ({type(exc).__name__}) for {what}"
            ) from None
        except httpx.TransportError as exc:
            raise BackendUnavailable(
                f"{self.url(path)} broke the stream for {what}: network error: {exc}"
            ) from None
        finally:
            response.close()

    def _send(
        self,
        path: str,
        payload: dict[str, Any],
        *,
        what: str,
        stream: bool,
        refused: Callable[[int, str], bool] | None = None,
    ) -> httpx.Response:
        url = self.url(path)
        last = ""
        for attempt in range(self.max_retries + 1):
            wait = min(BACKOFF_CAP_S, self.backoff_base_s * 2**attempt)
            try:
                request = self._client.build_request("POST", url, json=payload)
                response = self._client.send(request, stream=stream)
                if stream and response.status_code >= 400:
                    response.read()
                    response.close()
            except httpx.TimeoutException as exc:
                last = f"timed out ({type(exc).__name__})"
            except httpx.TransportError as exc:
                last = f"network error: {exc}"
            else:
                status = response.status_code
                if status < 400:
                    return response
                last = f"HTTP {status}: {snippet(response.text)}"
                if (status not in RETRY_STATUS and status < 500) or (
                    refused is not None and refused(status, response.text)
                ):
                    hint = f" (check {self.key_hint})" if status in (401, 403) else ""
                    raise HTTPRejected(
                        f"{url} rejected the request for {what}: {last}{hint}",
                        status,
                        response.text,
                    )
                asked = retry_after(response.headers.get("retry-after"))
                if asked is not None:
                    wait = min(asked, BACKOFF_CAP_S)
            if attempt < self.max_retries:
                time.sleep(wait)
        raise BackendUnavailable(
            f"{url} failed after {self.max_retries + 1} attempts; last: {last}"
        )


def retry_after(value: str | None) -> float | None:
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


def json_body(response: httpx.Response, url: str) -> Any:
    """The response's JSON, or :class:`BackendUnavailable` quoting what came back instead."""
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BackendUnavailable(
            f"{url} answered HTTP {response.status_code} with non-JSON: {snippet(response.text)}"
        ) from None


def snippet(text: str, limit: int = 200) -> str:
    """``text`` on one line, cut at ``limit`` characters, quoted for an error message."""
    text = " ".join(text.split())
    return repr(text[:limit] + ("..." if len(text) > limit else ""))
