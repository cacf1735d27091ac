"""Documents (plain text, Markdown) cut into chunks along their structure.

Markdown is split at headings, and each chunk keeps its heading path ("Setup > Database") as
context; inside a section, and in plain text, chunks end at blank lines (paragraphs), and a
paragraph longer than the budget is cut at sentence ends. Fenced code blocks are never cut
in the middle. Every chunk records its character offsets in the source.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from datetime import datetime

from mnemic.models import MemoryItem, MemoryKind, Source

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Chunk:
    text: str
    start: int  # offsets into the source text
    end: int
    headings: tuple[str, ...] = ()

    @property
    def context(self) -> str:
        return " > ".join(self.headings)


def chunk_document(text: str, *, fmt: str = "text", max_chars: int = 1500) -> list[Chunk]:
    """``fmt``: ``text`` or ``markdown``."""
    if fmt not in ("text", "markdown"):
        raise ValueError(f"unknown document format {fmt!r}; use text or markdown")
    blocks = _blocks(text, markdown=fmt == "markdown")
    chunks: list[Chunk] = []
    pending: list[tuple[int, int]] = []
    pending_headings: tuple[str, ...] = ()

    def flush() -> None:
        if pending:
            start, end = pending[0][0], pending[-1][1]
            chunks.append(Chunk(text[start:end].strip(), start, end, pending_headings))
            pending.clear()

    for start, end, headings, is_heading in blocks:
        if is_heading or headings != pending_headings:
            flush()
            pending_headings = headings
            if is_heading:
                continue
        size = (end - pending[0][0]) if pending else end - start
        if pending and size > max_chars:
            flush()
        if end - start > max_chars:
            for s, e in _split_long(text, start, end, max_chars):
                chunks.append(Chunk(text[s:e].strip(), s, e, headings))
            continue
        pending.append((start, end))
    flush()
    return [c for c in chunks if c.text]


def _blocks(text: str, *, markdown: bool) -> list[tuple[int, int, tuple[str, ...], bool]]:
    """(start, end, heading path, is it a heading line) of each paragraph, code block or
    heading, in order."""
    out: list[tuple[int, int, tuple[str, ...], bool]] = []
    path: list[tuple[int, str]] = []
    pos = 0
    block_start: int | None = None
    in_fence = False
    for line in text.splitlines(keepends=True):
        line_start, pos = pos, pos + len(line)
        stripped = line.strip()
        if markdown and _FENCE.match(line):
            if block_start is None:
                block_start = line_start
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        heading = _HEADING.match(stripped) if markdown else None
        if heading or not stripped:
            if block_start is not None:
                out.append((block_start, line_start, _names(path), False))
                block_start = None
            if heading:
                level = len(heading.group(1))
                path = [p for p in path if p[0] < level] + [(level, heading.group(2))]
                out.append((line_start, pos, _names(path), True))
            continue
        if block_start is None:
            block_start = line_start
    if block_start is not None:
        out.append((block_start, pos, _names(path), False))
    return out


def _names(path: list[tuple[int, str]]) -> tuple[str, ...]:
    return tuple(name for _, name in path)


def _split_long(text: str, start: int, end: int, max_chars: int) -> list[tuple[int, int]]:
    """Pieces of at most ``max_chars`` (where sentences allow), cut after sentence ends."""
    cuts = [start]
    for m in _SENTENCE_END.finditer(text, start, end):
        cuts.append(m.end())
    cuts.append(end)
    pieces: list[tuple[int, int]] = []
    piece_start = start
    for a, b in itertools.pairwise(cuts):
        if b - piece_start > max_chars and a > piece_start:
            pieces.append((piece_start, a))
            piece_start = a
        while b - piece_start > max_chars:  # one sentence over the budget: hard cut
            pieces.append((piece_start, piece_start + max_chars))
            piece_start += max_chars
    if piece_start < end:
        pieces.append((piece_start, end))
    return pieces


def read_document(
    text: str,
    *,
    user_id: str,
    cube_id: str,
    title: str | None,
    fmt: str,
    timestamp: datetime,
    max_chars: int = 1500,
    session_id: str | None = None,
    agent_id: str | None = None,
) -> list[MemoryItem]:
    """One ``document`` item per chunk, with its offsets and heading path as provenance and
    the title and headings in its search keys."""
    items = []
    for n, chunk in enumerate(chunk_document(text, fmt=fmt, max_chars=max_chars)):
        keys = [k for k in (title, chunk.context, chunk.text) if k]
        items.append(
            MemoryItem(
                user_id=user_id,
                cube_id=cube_id,
                session_id=session_id,
                agent_id=agent_id,
                text=chunk.text,
                index_text="\n".join(keys),
                kind=MemoryKind.DOCUMENT,
                valid_from=timestamp,
                source=Source(
                    kind="document",
                    document=title,
                    offsets=(chunk.start, chunk.end),
                    message_ids=[f"{title or 'document'}#{n}"],
                ),
                metadata={"headings": list(chunk.headings), "chunk": n, "format": fmt},
            )
        )
    return items
