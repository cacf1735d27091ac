"""What an LLM backend offers, its configuration, and the tolerant reading of JSON replies.

:func:`parse_json_reply` takes what chat models actually send: plain JSON, a ```json fenced
block, or JSON inside prose; it repairs trailing commas, single-quoted keys and strings
(only where the quote cannot be an apostrophe), Python's ``True``/``False``/``None``, and
missing or stray closing brackets at the end, then validates with pydantic.
"""

from __future__ import annotations

import json
import re
from typing import Any, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ValidationError

from mnemic.errors import BackendUnavailable
from mnemic.infra.http import snippet

M = TypeVar("M", bound=BaseModel)

_FENCE = re.compile(r"```[ \t]*(?:json|JSON|javascript|js)?[ \t]*\r?\n?(.*?)```", re.DOTALL)
_PY_LITERALS = {"True": "true", "False": "false", "None": "null"}


class LLMOutputError(BackendUnavailable):
    """The model answered, but not with JSON that validates. ``error`` says what was wrong
    (suitable to quote back to the model), ``reply`` is what it sent."""

    def __init__(self, message: str, *, reply: str, error: str) -> None:
        super().__init__(message)
        self.reply = reply
        self.error = error


@runtime_checkable
class LLM(Protocol):
    @property
    def id(self) -> str: ...

    def complete(
        self,
        messages: list[dict[str, str]],
        *,
        temperature: float = 0.0,
        max_tokens: int | None = None,
    ) -> str: ...

    def complete_json(
        self, messages: list[dict[str, str]], schema: type[M], *, retries: int = 2
    ) -> M: ...


def parse_json_reply(text: str, schema: type[M]) -> M:
    """The first JSON value in ``text`` that validates as ``schema``.

    Raises :class:`LLMOutputError` quoting the reply and the parse or validation error.
    """
    first_error: str | None = None
    parsed_any = False
    for candidate in _candidates(text):
        value = _loads(candidate)
        if value is _NOTHING:
            continue
        try:
            return schema.model_validate(value)
        except ValidationError as exc:
            if not parsed_any:
                first_error = f"it does not match {schema.__name__}: {format_validation(exc)}"
            parsed_any = True
    error = first_error or "it is not JSON (no parseable object or array found)"
    raise LLMOutputError(
        f"LLM reply is not valid: {error}; reply: {snippet(text)}", reply=text, error=error
    )


def format_validation(exc: ValidationError) -> str:
    """A pydantic error on one line: ``field.path: message; ...``."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


_NOTHING = object()


def _loads(text: str) -> Any:
    for attempt in (text, _repair(text)):
        try:
            return json.loads(attempt)
        except (json.JSONDecodeError, RecursionError):
            continue
    return _NOTHING


def _candidates(text: str) -> list[str]:
    """Where JSON may be, most likely first: the whole text, fenced blocks, then the spans
    starting at the first ``{`` and the first ``[`` (earlier one first)."""
    stripped = text.strip()
    out = [stripped]
    out += [m.group(1).strip() for m in _FENCE.finditer(text)]
    starts = sorted(i for i in (stripped.find("{"), stripped.find("[")) if i >= 0)
    out += [_span(stripped, i) for i in starts]
    return [c for c in dict.fromkeys(out) if c]  # in order, without duplicates


def _span(text: str, start: int) -> str:
    """From ``start`` to its matching bracket (strings respected), or to the end."""
    depth = 0
    in_string = False
    escaped = False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    return text[start:]


def _single_quoted_end(text: str, start: int) -> int | None:
    """The index of the quote closing the single-quoted string at ``start`` when converting
    it is safe: it opens where a value or key may start and closes before ``: , } ]`` or the
    end. ``None`` when the quote may be an apostrophe."""
    before = text[:start].rstrip()
    if before and before[-1] not in "{[,:":
        return None
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "'":
            after = text[i + 1 :].lstrip()
            return i if not after or after[0] in ":,}]" else None
        if ch == "\n":
            return None
        i += 1
    return None


def _repair(text: str) -> str:
    """Fix the usual breakage outside strings; see the module docstring."""
    out: list[str] = []
    stack: list[str] = []  # expected closers
    closers = {"{": "}", "[": "]"}
    i = 0
    n = len(text)
    in_string = False
    while i < n:
        ch = text[i]
        if in_string:
            out.append(ch)
            if ch == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 1
            elif ch == '"':
                in_string = False
            i += 1
            continue
        if ch == '"':
            in_string = True
            out.append(ch)
        elif ch == "'" and (end := _single_quoted_end(text, i)) is not None:
            inner = text[i + 1 : end].replace("\\'", "'")
            out.append('"' + re.sub(r'(?<!\\)"', r'\\"', inner) + '"')
            i = end
        elif ch in closers:
            stack.append(closers[ch])
            out.append(ch)
        elif ch in "}]":
            _drop_trailing_comma(out)
            if ch in stack:  # close what was left open inside, then this one
                while stack:
                    closer = stack.pop()
                    out.append(closer)
                    if closer == ch:
                        break
            # a closer matching nothing open is dropped
        elif ch.isalpha():
            j = i
            while j < n and (text[j].isalnum() or text[j] == "_"):
                j += 1
            word = text[i:j]
            out.append(_PY_LITERALS.get(word, word))
            i = j
            continue
        else:
            out.append(ch)
        i += 1
    if in_string:
        out.append('"')
    _drop_trailing_comma(out)
    out.extend(reversed(stack))
    return "".join(out)


def _drop_trailing_comma(out: list[str]) -> None:
    j = len(out) - 1
    while j >= 0 and out[j].isspace():
        j -= 1
    if j >= 0 and out[j] == ",":
        del out[j]
