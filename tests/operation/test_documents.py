"""Documents chunked along their structure, stored as document items with provenance."""

from __future__ import annotations

import pytest

from mnemic import Memory
from mnemic.errors import InvalidInput
from mnemic.operation.reader.documents import chunk_document

GUIDE = """# Guide

Intro paragraph about the project.

## Setup

Install with pip. Then configure the home folder.

```bash
pip install mnemic

mnemic add "hello"
```

### Database

Use PostgreSQL 16 for teams. SQLite is the default for one person.

## Usage

Run it.
"""


def test_markdown_chunks_follow_headings_and_keep_code_whole() -> None:
    chunks = chunk_document(GUIDE, fmt="markdown", max_chars=80)
    assert [(c.context, c.text.split()[0]) for c in chunks] == [
        ("Guide", "Intro"),
        ("Guide > Setup", "Install"),
        ("Guide > Setup", "```bash"),
        ("Guide > Setup > Database", "Use"),
        ("Guide > Usage", "Run"),
    ]
    code = chunks[2].text
    assert code.startswith("```bash") and code.endswith("```") and "\n\n" in code
    for chunk in chunks:
        assert GUIDE[chunk.start : chunk.end].strip() == chunk.text


def test_plain_text_chunks_at_paragraphs_then_sentences() -> None:
    text = "First para one. Still first.\n\nSecond para.\n\n" + "Long sentence here. " * 10
    chunks = chunk_document(text, max_chars=60)
    assert chunks[0].text == "First para one. Still first.\n\nSecond para."
    assert all(len(c.text) <= 60 for c in chunks)
    assert " ".join(c.text for c in chunks[1:]).split() == ("Long sentence here. " * 10).split()
    with pytest.raises(ValueError, match="unknown document format"):
        chunk_document(text, fmt="pdf")


def test_add_document_is_searchable_with_provenance(memory: Memory) -> None:
    items = memory.add_document(
        GUIDE, user_id="ana", title="guide.md", format="markdown", wait=True
    )
    assert {i.kind for i in items} == {"document"}
    hits = memory.search("which database for teams", user_id="ana", top_k=1)
    (hit,) = hits
    assert "PostgreSQL 16" in hit.item.text and hit.item.source.document == "guide.md"
    start, end = hit.item.source.offsets or (0, 0)
    assert GUIDE[start:end].strip() == hit.item.text
    assert hit.item.metadata["headings"] == ["Guide", "Setup", "Database"]
    with pytest.raises(InvalidInput):
        memory.add_document("x", user_id="ana", format="pdf")
