"""LLM over any OpenAI-compatible ``POST {base_url}/chat/completions`` (OpenAI, Ollama, vLLM,
llama.cpp server).

Requests go through :class:`mnemic.infra.http.JsonPoster` (retries with backoff on timeouts,
network errors, 408, 429 and 5xx; other 4xx fail at once).

:meth:`OpenAICompatLLM.complete_json` asks for ``response_format`` ``json_schema`` first; a
server that rejects that (HTTP 400/422 naming ``response_format``, or llama-cpp-python's
HTTP 500 validation error naming it) is asked with
``json_object`` (with the schema, which llama.cpp's server enforces), then with no
``response_format`` (the schema then goes in a system message),
and the client remembers what worked. A reply that does not parse or validate is sent back
with the error quoted, up to ``retries`` times.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx

from mnemic.config import LLMConfig
from mnemic.errors import BackendUnavailable, InvalidInput
from mnemic.infra.http import BACKOFF_BASE_S, HTTPRejected, JsonPoster, json_body, snippet
from mnemic.infra.llm.base import LLMOutputError, M, parse_json_reply

FORMATS = ("json_schema", "json_object", "none")  # tried in this order
PATH = "/chat/completions"


class OpenAICompatLLM:
    """Thread-safe: the HTTP client is, and the remembered format is set under a lock."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str = "http://localhost:11434/v1",
        api_key: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 2,
        backoff_base_s: float = BACKOFF_BASE_S,
        max_tokens: int | None = None,
    ) -> None:
        self.model = model
        self.max_tokens = max_tokens  # per structured reply (complete_json); None: the server's
        self._poster = JsonPoster(
            base_url,
            api_key=api_key,
            timeout_s=timeout_s,
            max_retries=max_retries,
            backoff_base_s=backoff_base_s,
            key_hint="llm.api_key",
        )
        self.url = self._poster.url(PATH)
        self._format = 0  # index into FORMATS of the first one to try
        self._lock = threading.Lock()
        self._id = f"openai:{model}"

    @classmethod
    def from_config(cls, config: LLMConfig) -> OpenAICompatLLM:
        return cls(
            config.model,
            base_url=config.base_url,
            api_key=config.api_key,
            timeout_s=config.timeout_s,
            max_retries=config.max_retries,
            max_tokens=config.max_new_tokens,
        )

    @property
    def id(self) -> str:
        return self._id

    @property
    def json_format(self) -> str:
        """The ``response_format`` type :meth:`complete_json` will ask with next."""
        return FORMATS[self._format]

    def close(self) -> None:
        self._poster.close()

    def __enter__(self) -> OpenAICompatLLM:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- requests ----------------------------------------------------------------------------

    def complete(
        self,
        messages: list[dict[str, str]],
        *,
        temperature: float = 0.0,
        max_tokens: int | None = None,
    ) -> str:
        payload = self._payload(messages, temperature, max_tokens)
        return self._content(self._poster.post(PATH, payload, what=self._what))

    def complete_json(
        self, messages: list[dict[str, str]], schema: type[M], *, retries: int = 2
    ) -> M:
        conversation = list(messages)
        error: LLMOutputError | None = None
        for _ in range(retries + 1):
            reply = self._complete_with_format(conversation, schema)
            try:
                return parse_json_reply(reply, schema)
            except LLMOutputError as exc:
                error = exc
            conversation = [
                *conversation,
                {"role": "assistant", "content": reply},
                {
                    "role": "user",
                    "content": f"Your previous reply was not valid: {error.error}. "
                    "Reply with JSON only.",
                },
            ]
        assert error is not None
        raise error

    def stream(
        self,
        messages: list[dict[str, str]],
        *,
        temperature: float = 0.0,
        max_tokens: int | None = None,
    ) -> Iterator[str]:
        """The reply's text pieces as the server sends them (server-sent events)."""
        payload = self._payload(messages, temperature, max_tokens)
        payload["stream"] = True
        for line in self._poster.stream_lines(PATH, payload, what=self._what):
            if not line.startswith("data:"):
                continue  # blank separators, ": keep-alive" comments, "event:" lines
            data = line[5:].strip()
            if data == "[DONE]":
                return
            try:
                chunk = json.loads(data)
            except json.JSONDecodeError:
                raise BackendUnavailable(
                    f"{self.url} streamed a non-JSON event: {snippet(data)}"
                ) from None
            if isinstance(chunk, dict) and "error" in chunk:
                raise BackendUnavailable(f"{self.url} streamed an error: {snippet(data)}")
            try:
                piece = chunk["choices"][0].get("delta", {}).get("content")
            except (KeyError, IndexError, TypeError, AttributeError):
                continue  # e.g. a final usage-only chunk with no choices
            if piece:
                yield piece

    # --- helpers -----------------------------------------------------------------------------

    @property
    def _what(self) -> str:
        return f"model {self.model!r}"

    def _payload(
        self, messages: list[dict[str, str]], temperature: float, max_tokens: int | None
    ) -> dict[str, Any]:
        if not isinstance(messages, list) or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages
        ):
            raise InvalidInput("messages must be a list of {'role': ..., 'content': ...} dicts")
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": temperature,
        }
        if max_tokens is not None:
            payload["max_tokens"] = max_tokens
        return payload

    def _complete_with_format(self, messages: list[dict[str, str]], schema: type[M]) -> str:
        index = self._format
        while True:
            kind = FORMATS[index]
            payload = self._payload(_with_schema_hint(messages, schema, kind), 0.0, self.max_tokens)
            if kind == "json_schema":
                payload["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {
                        "name": schema.__name__,
                        "schema": schema.model_json_schema(),
                        "strict": False,
                    },
                }
            elif kind == "json_object":
                # llama.cpp's server constrains the output to a "schema" given here; others
                # ignore it (and one that refuses it is asked without response_format)
                payload["response_format"] = {
                    "type": "json_object",
                    "schema": schema.model_json_schema(),
                }
            try:
                response = self._poster.post(
                    PATH,
                    payload,
                    what=self._what,
                    refused=_refuses_format if index + 1 < len(FORMATS) else None,
                )
            except HTTPRejected as exc:
                if index + 1 < len(FORMATS) and _refuses_format(exc.status, exc.body):
                    index += 1
                    continue
                raise
            with self._lock:
                self._format = max(self._format, index)
            return self._content(response)

    def _content(self, response: httpx.Response) -> str:
        body = json_body(response, self.url)
        try:
            content = body["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise BackendUnavailable(
                f"{self.url} answered without choices[0].message.content: {snippet(response.text)}"
            ) from None
        if not isinstance(content, str):
            raise BackendUnavailable(
                f"{self.url} answered with no text content (a refusal or a tool call?): "
                f"{snippet(response.text)}"
            )
        return content


def _refuses_format(status: int, body: str) -> bool:
    """The server does not take this ``response_format``: HTTP 400/422 naming it, or HTTP 500
    with a validation error naming it (llama-cpp-python's server answers ``json_schema`` so)."""
    body = body.lower()
    names_it = "response_format" in body or "json_schema" in body
    if status in (400, 422):
        return names_it
    return status == 500 and names_it and ("validation" in body or "literal_error" in body)


def _with_schema_hint(
    messages: list[dict[str, str]], schema: type[M], kind: str
) -> list[dict[str, str]]:
    """Without ``json_schema`` support the model sees the schema in a system message (and
    ``json_object`` mode requires the word JSON to appear in the messages)."""
    if kind == "json_schema":
        return messages
    hint = (
        "Reply with a single JSON value only, no prose, matching this JSON schema: "
        + json.dumps(schema.model_json_schema(), separators=(",", ":"))
    )
    return [{"role": "system", "content": hint}, *messages]
