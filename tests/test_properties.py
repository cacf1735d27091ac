"""Property-based tests (hypothesis) over the SDK and the store: any input either works
exactly or is refused with InvalidInput, and a refusal changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnemic import Memory, load_settings
from mnemic.errors import InvalidInput
from mnemic.infra.store.base import ItemFilter
from mnemic.infra.store.sqlite import SQLiteStore
from mnemic.models import MemoryItem

# texts mixing letters, FTS/SQL syntax, quotes, control characters, emoji, surrogates
SYNTAX = st.sampled_from(
    [
        '"',
        "'",
        "*",
        "NEAR(",
        ")",
        "AND",
        "OR",
        "NOT",
        "-",
        ":",
        "^",
        "{",
        "}",
        ";",
        "--",
        "DROP TABLE items;",
        "%",
        "_",
        "\\",
        "\x00",
        "\ud800",
        "\x1b[31m",
        "🙂",
        "\u200b",
    ]
)
TEXTS = st.lists(st.one_of(st.text(max_size=12), SYNTAX), max_size=8).map("".join)
FAST = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def mem(tmp_path_factory: pytest.TempPathFactory, embedder: object) -> Iterator[Memory]:
    home = Path(tmp_path_factory.mktemp("props"))
    with Memory(load_settings(home=home), embedder=embedder) as m:  # type: ignore[arg-type]
        m.add("a first memory about pears", user_id="ana")
        yield m


@FAST
@given(text=TEXTS)
def test_add_stores_exactly_or_refuses_and_changes_nothing(mem: Memory, text: str) -> None:
    before = len(mem.get_all(user_id="ana", limit=1000))
    try:
        (item,) = mem.add(text, user_id="ana")
    except InvalidInput:
        assert len(mem.get_all(user_id="ana", limit=1000)) == before
        return
    assert mem.get(item.id, user_id="ana").text == text
    mem.delete(item.id, user_id="ana", purge=True)


@FAST
@given(
    query=TEXTS,
    top_k=st.integers(-5, 2000),
    budget=st.one_of(st.none(), st.integers(-5, 10**7)),
)
def test_search_answers_or_refuses_whatever_the_query(
    mem: Memory, query: str, top_k: int, budget: int | None
) -> None:
    try:
        hits = mem.search(query, user_id="ana", top_k=top_k, token_budget=budget)
    except InvalidInput:
        return
    assert len(hits) <= top_k
    assert all(h.item.user_id == "ana" for h in hits)


@FAST
@given(user=TEXTS)
def test_any_user_id_is_refused_or_isolated(mem: Memory, user: str) -> None:
    try:
        hits = mem.search("pears", user_id=user)
    except InvalidInput:
        return
    assert all(h.item.user_id == user for h in hits)  # never ana's pears
    assert user == "ana" or not hits


@st.composite
def stored_texts(draw: st.DrawFn) -> str:
    text = draw(TEXTS)
    return text if text.strip() and "\x00" not in text and "\ud800" not in text else "x"


def test_store_round_trips_and_searches_any_text(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db", dim=4)
    rng = np.random.default_rng(0)

    @FAST
    @given(text=stored_texts(), query=TEXTS)
    def check(text: str, query: str) -> None:
        item = MemoryItem(user_id="u", cube_id="c", text=text)
        store.add_items([item], rng.normal(size=(1, 4)).astype(np.float32), actor="t")
        assert store.get_items("u", "c", [item.id])[0].text == text
        found = store.fulltext_search("u", "c", query, 5, ItemFilter())
        assert all(isinstance(s.score, float) for s in found)

    try:
        check()
    finally:
        store.close()
