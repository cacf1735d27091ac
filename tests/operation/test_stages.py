"""Each retrieval stage's behaviour on small cases of our own making, through the SDK."""

from __future__ import annotations

import os

import pytest

from mnemic import Memory
from mnemic.errors import ConfigError
from mnemic.operation.retrieval.query import analyze, without_speakers


def recipe(memory: Memory, *stages: str, **params) -> None:
    memory.set_retrieval(
        memory.settings.retrieval.model_copy(update={"stages": list(stages), **params})
    )


def test_analyze_finds_named_speakers_with_possessives() -> None:
    a = analyze("What is Caroline's favourite book, and did Mel read it?", ["Caroline", "Mel"])
    assert a.speakers == {"Caroline", "Mel"}
    assert analyze("What did carolines do?", ["Caroline"]).speakers == frozenset()
    assert analyze("Where did Ana Lopez go?", ["Ana Lopez", "Ana"]).speakers == {
        "Ana Lopez",
        "Ana",
    }


def test_speaker_stage_prefers_the_named_speaker(memory: Memory) -> None:
    memory.add(
        [
            {"speaker": "Ben", "content": "I love hiking in the mountains.", "id": "b"},
            {"speaker": "Ana", "content": "Hiking is fun, I love it too.", "id": "a"},
        ],
        user_id="u",
        session_id="s1",
    )
    recipe(memory, "bm25", "dense", "fusion")
    plain = memory.search("What does Ana love?", user_id="u", top_k=2)
    recipe(memory, "bm25", "dense", "fusion", "speaker", speaker_boost=5.0)
    boosted = memory.search("What does Ana love?", user_id="u", top_k=2)
    assert boosted[0].item.speaker == "Ana"
    assert boosted[0].stages["speaker"] == 6.0 and "whom the query names" in boosted[0].why
    assert boosted[0].score > plain[[h.item.speaker for h in plain].index("Ana")].score


def test_neighbors_stage_brings_the_adjacent_turn(memory: Memory) -> None:
    memory.add(
        [
            {"speaker": "Ana", "content": "Guess what I bought for the garden?", "id": "q"},
            {"speaker": "Ben", "content": "No idea, tell me.", "id": "x"},
            {"speaker": "Ana", "content": "A lemon tree!", "id": "a"},
            {"speaker": "Ben", "content": "Unrelated: the weather is nice.", "id": "w"},
        ],
        user_id="u",
        session_id="s1",
    )
    memory.add("Something else entirely about trains.", user_id="u", session_id="s2")
    recipe(memory, "bm25", "fusion")
    found = memory.search("bought for the garden", user_id="u", top_k=5)
    assert found[0].item.source.message_ids == ["q"]
    assert ["a"] not in [h.item.source.message_ids for h in found]
    recipe(
        memory,
        "bm25",
        "fusion",
        "neighbors",
        neighbor_seeds=1,
        neighbor_window=2,
        neighbor_decay=0.5,
    )
    hits = memory.search("bought for the garden", user_id="u", top_k=5)
    got = {h.item.source.message_ids[0]: h for h in hits}
    assert set(got) == {"q", "x", "a"}  # within two turns, same session only
    assert got["a"].stages["neighbors"] == 2 and "from a strong hit" in got["a"].why
    assert got["q"].score > got["a"].score


def test_session_stage_favours_the_session_that_matches_as_a_whole(memory: Memory) -> None:
    memory.add(
        ["We planned the trip to Japan.", "The Japan trip needs visas.", "Cherry blossoms!"],
        user_id="u",
        session_id="travel",
    )
    # filler keeps "trip" rare: BM25 gives no weight to a term in over half of the items
    filler = [f"Note number {n} is about nothing much." for n in range(12)]
    memory.add(["My cousin mentioned a trip once.", *filler], user_id="u", session_id="misc")
    recipe(memory, "bm25", "fusion", "session", session_weight=1.0)
    hits = memory.search("trip", user_id="u", top_k=4)
    by_session = {h.item.session_id: h.stages.get("session") for h in hits}
    assert by_session["travel"] > by_session["misc"]


def test_session_stage_leaves_candidates_alone_when_none_scored(memory: Memory) -> None:
    memory.add(["We planned the trip to Japan.", "Cherry blossoms!"], user_id="u", session_id="t")
    # every list that found something is weighted 0: candidates all score 0 (once a
    # ZeroDivisionError in session)
    recipe(memory, "bm25", "dense", "fusion", "session", dense_weight=0.0, fulltext_weight=0.0)
    hits = memory.search("trip", user_id="u", top_k=2)
    assert hits and all(h.score == 0 and "session" not in h.stages for h in hits)


def test_unknown_stage_is_a_config_error(memory: Memory) -> None:
    import pytest

    from mnemic import ConfigError

    with pytest.raises(ConfigError, match="available"):
        recipe(memory, "bm25", "telepathy")


def test_time_stage_recalls_what_was_said_in_the_named_month(memory: Memory) -> None:
    for month, text in [
        (3, "We went hiking by the lake."),
        (7, "We went hiking in the hills."),
        (11, "We went hiking at the coast."),
    ]:
        memory.add(text, user_id="u", session_id=f"m{month}", timestamp=f"2022-{month:02d}-10")
    filler = [f"Filler note {n} about groceries." for n in range(10)]
    memory.add(filler, user_id="u", session_id="x", timestamp="2022-01-01")
    recipe(memory, "bm25", "dense", "time", "fusion", time_slack_days=14)
    hits = memory.search("Where did we go hiking in July 2022?", user_id="u", top_k=3)
    assert hits[0].item.session_id == "m7"
    assert "bm25@time_rank" in hits[0].stages and "dense@time_rank" in hits[0].stages
    assert "time 'July 2022'" in hits[0].why
    assert all("bm25@time_rank" not in h.stages for h in hits[1:])  # outside the span


def test_feedback_stage_reaches_turns_that_share_the_hits_words(memory: Memory) -> None:
    memory.add(
        [
            "I love my pottery class.",
            "Pottery and clay keep me calm.",
            "The clay bowl is done.",
            "Glazing clay is messy.",
            *[f"Note {n} about the weather." for n in range(10)],
        ],
        user_id="u",
        session_id="s",
    )
    # after fusion it reads the best fused candidates; before, the bm25 list, and adds a list
    for stages in (("bm25", "fusion", "feedback"), ("bm25", "feedback", "fusion")):
        recipe(memory, *stages, feedback_docs=3, feedback_weight=1.0)
        hits = memory.search("pottery", user_id="u", top_k=6)
        texts = [h.item.text for h in hits]
        # "clay" is shared by the pottery hits, so the glazing turn, which never says
        # pottery, comes
        assert "Glazing clay is messy." in texts, stages
        assert "feedback terms: clay" in hits[0].why
        assert "feedback_rank" in hits[texts.index("Glazing clay is messy.")].stages


def test_feedback_terms_that_tie_come_in_the_order_the_hits_say_them() -> None:
    """Words shared equally often are taken in text order, not in the order of a set, so a
    search gives the same results in every process (Python salts string hashes)."""
    import subprocess
    import sys

    words = "apple birch cedar daisy elm fern grape hazel iris juniper kale".split()  # noqa: SIM905
    script = (
        "import tempfile; from pathlib import Path; from mnemic import Memory, load_settings\n"
        "s = load_settings().model_copy(update={'home': Path(tempfile.mkdtemp())})\n"
        "with Memory(s) as m:\n"
        "    m.add(['Pottery: " + " ".join(words) + ".',\n"
        "           'More pottery, " + " ".join(words) + ".',\n"
        "           *[f'Note {n} on rain.' for n in range(10)]], user_id='u', session_id='s')\n"
        "    m.set_retrieval(m.settings.retrieval.model_copy(update={\n"
        "        'stages': ['bm25', 'feedback', 'fusion'], 'feedback_docs': 2,\n"
        "        'feedback_terms': 3}))\n"
        "    print(m.search('pottery', user_id='u', top_k=1)[0].why)\n"
    )
    seen = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": str(seed), "HF_HUB_OFFLINE": "1"},
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.split("feedback terms: ")[1]
        .split(";")[0]
        .strip()
        for seed in (1, 2, 3)
    }
    assert seen == {", ".join(words[:3])}


def test_search_embeds_the_query_and_its_nameless_variant_in_the_background(
    memory: Memory,
) -> None:
    memory.add(
        [
            {"speaker": "Ana", "content": "I painted a lake at sunrise.", "id": "a"},
            {"speaker": "Ben", "content": "Wow Ana, lovely colours!", "id": "b"},
        ],
        user_id="u",
        session_id="s",
        wait=True,
    )
    seen: list[str] = []
    embed = memory.embedder.embed

    def spy(texts):
        seen.extend(texts)
        return embed(texts)

    memory.embedder.embed = spy  # type: ignore[method-assign]
    try:
        recipe(memory, "bm25", "feedback", "dense", "topic", "speaker_recall", "fusion")
        hits = memory.search("What has Ana painted?", user_id="u", top_k=2)
    finally:
        memory.embedder.embed = embed  # type: ignore[method-assign]
    # each text once: the stages waited for the background results instead of embedding again
    assert sorted(seen) == ["What has Ana painted?", "What has painted?"]
    assert {"dense", "dense@topic", "dense@speaker Ana"} <= set(hits[0].stages)


def test_dense_search_runs_in_the_background_after_the_embedding(memory: Memory) -> None:
    import pytest

    from mnemic.infra.store.base import ItemFilter

    texts = ["I painted a lake at sunrise.", "We sold the boat.", "Tea with lemon."]
    memory.add(texts, user_id="u", session_id="a")
    memory.add("A painted fence.", user_id="u", session_id="b", wait=True)
    cube = memory.search("x", user_id="u", top_k=1)[0].item.cube_id
    recipe(memory, "dense", "fusion")
    flt = ItemFilter(session_id="a")
    vector = memory.embedder.embed(["painted"])[0]
    direct = memory.store.vector_search("u", cube, vector, 50, flt)
    hits = memory.retriever.search("painted", user_id="u", cube_id=cube, top_k=3, flt=flt)
    # the background search is the store's, under the search's filter
    assert [h.item.id for h in hits] == [s.item_id for s in direct][:3]
    assert len(hits) == 3 and all(h.item.session_id == "a" for h in hits)

    def broken(texts):
        raise RuntimeError("embedder down")

    embed = memory.embedder.embed
    memory.embedder.embed = broken  # type: ignore[method-assign]
    try:  # an error in the background reaches the caller
        with pytest.raises(RuntimeError, match="embedder down"):
            memory.retriever.search("painted", user_id="u", cube_id=cube, top_k=3, flt=flt)
    finally:
        memory.embedder.embed = embed  # type: ignore[method-assign]


def test_relative_time_in_a_query_counts_back_from_now(memory: Memory) -> None:
    memory.add("We went hiking by the lake.", user_id="u", session_id="a", timestamp="2022-05-10")
    memory.add("We went hiking in the hills.", user_id="u", session_id="b", timestamp="2023-05-10")
    memory.add(
        [f"Filler note {n} about groceries." for n in range(10)],
        user_id="u",
        session_id="x",
        timestamp="2021-01-01",
    )
    recipe(memory, "bm25", "dense", "time", "fusion")
    asked_2022 = memory.search(
        "Where did we go hiking last May?", user_id="u", top_k=1, now="2022-06-01"
    )
    asked_2023 = memory.search(
        "Where did we go hiking last May?", user_id="u", top_k=1, now="2023-06-01"
    )
    assert asked_2022[0].item.session_id == "a"
    assert asked_2023[0].item.session_id == "b"


def test_dedup_keeps_one_of_items_that_say_the_same(memory: Memory) -> None:
    memory.add(
        [
            "I live in Lisbon now.",
            "i live in lisbon now",
            "Lisbon has trams.",
            *[f"Filler note {n} about groceries." for n in range(10)],
        ],
        user_id="u",
        session_id="s",
    )
    recipe(memory, "bm25", "dense", "fusion")
    assert (
        sum(
            "live in" in h.item.text.lower()
            for h in memory.search("where do I live", user_id="u", top_k=3)
        )
        == 2
    )
    recipe(memory, "bm25", "dense", "fusion", "dedup")
    hits = memory.search("where do I live", user_id="u", top_k=3)
    assert sum("live in" in h.item.text.lower() for h in hits) == 1
    assert any("duplicate" in h.why for h in hits)


def test_tree_stage_descends_to_the_topic_of_the_query(memory: Memory) -> None:
    memory.add(
        [
            "I planted tomatoes and basil in the vegetable garden.",
            "The lemon tree in my backyard finally has fruit.",
            "The night train to Vienna was two hours late.",
        ],
        user_id="u",
        session_id="s1",
    )
    memory.settings = memory.settings.model_copy(
        update={"organizer": memory.settings.organizer.model_copy(update={"topic_similarity": 0})}
    )
    assert memory.reorganize(user_id="u")["placed"] == 3
    recipe(memory, "bm25", "fusion")
    plain = memory.search("tomatoes", user_id="u", top_k=5)
    assert [h.item.text[:14] for h in plain] == ["I planted toma"]
    recipe(memory, "bm25", "fusion", "tree", tree_leaves=2, tree_weight=0.25)
    hits = memory.search("tomatoes", user_id="u", top_k=5)
    assert hits[0].item.text.startswith("I planted")  # the word match stays first
    lemon = [h for h in hits if h.item.text.startswith("The lemon")]
    assert lemon and "under topic" in lemon[0].why and lemon[0].stages["tree_rank"] == 2
    assert not any(h.item.text.startswith("The night") for h in hits)  # beyond tree_leaves
    filtered = memory.search("tomatoes", user_id="u", filters={"session_id": "other"})
    assert filtered == []


def test_graph_stage_follows_edges_from_strong_hits(memory: Memory) -> None:
    memory.add("We met Oscar at the harbour market.", user_id="u", session_id="s1")
    memory.add("Later that month Oscar sold us his old sailboat.", user_id="u", session_id="s2")
    memory.add("The weather was grey all week.", user_id="u", session_id="s3")
    memory.reorganize(user_id="u")
    recipe(memory, "bm25", "fusion")
    assert [h.item.session_id for h in memory.search("harbour market", user_id="u")] == ["s1"]
    recipe(memory, "bm25", "fusion", "graph", graph_kinds=["same_entity"], graph_decay=0.5)
    hits = memory.search("harbour market", user_id="u")
    assert [h.item.session_id for h in hits] == ["s1", "s2"]
    assert "linked to a strong hit (same_entity)" in hits[1].why
    assert hits[1].score == hits[0].score * 0.5
    recipe(memory, "bm25", "fusion", "graph", graph_kinds=["before"])
    assert len(memory.search("harbour market", user_id="u")) == 2  # Oscar: s1 before s2
    only_s1 = memory.search("harbour market", user_id="u", filters={"session_id": "s1"})
    assert [h.item.session_id for h in only_s1] == ["s1"]


def test_topic_stage_searches_what_is_asked_without_the_names(memory: Memory) -> None:
    memory.add(
        [
            {"speaker": "Ana", "content": "I took up pottery and watercolour classes.", "id": "a"},
            *[
                {"speaker": "Ben", "content": f"Hi Ana, it is Ben, message {n}.", "id": f"b{n}"}
                for n in range(6)
            ],
        ],
        user_id="u",
        session_id="s1",
    )
    question = "What hobbies does Ana have?"
    assert without_speakers(analyze(question, ["Ana", "Ben"])) == "What hobbies does have?"
    recipe(memory, "dense", "topic", "fusion", candidates=2)
    hits = memory.search(question, user_id="u", top_k=3)
    pottery = next(h for h in hits if h.item.source.message_ids == ["a"])
    assert pottery.stages["dense@topic_rank"] == 1
    assert "topic without the names: 'What hobbies does have?'" in pottery.why
    # a question that names nobody is left to the dense stage
    hits = memory.search("What hobbies are there?", user_id="u", top_k=3)
    assert all("dense@topic_rank" not in h.stages for h in hits)


def test_bm25_leaves_out_the_names_of_the_speakers_a_query_names(memory: Memory) -> None:
    memory.add(
        [
            {"speaker": "Ben", "content": "Ana! Ana, hello Ana!", "id": "b"},
            *[
                {"speaker": "Ben", "content": f"The weather report {n} says rain.", "id": f"w{n}"}
                for n in range(6)
            ],
        ],
        user_id="u",
        session_id="s1",
    )
    # another session, so no weather turn has the roses among its following turns
    memory.add(
        [{"speaker": "Ana", "content": "I planted roses by the fence.", "id": "a"}],
        user_id="u",
        session_id="s2",
    )
    question = "What did Ana plant?"
    recipe(memory, "bm25", "fusion", bm25_speaker_names=True)
    named = [h.item.source.message_ids for h in memory.search(question, user_id="u", top_k=5)]
    assert ["b"] in named  # only the name matches: Ben speaking to Ana
    recipe(memory, "bm25", "fusion", bm25_speaker_names=False)
    hits = [h.item.source.message_ids for h in memory.search(question, user_id="u", top_k=5)]
    assert hits == [["a"]]


def test_rerank_reorders_the_best_candidates_and_keeps_them_above_the_rest(
    memory: Memory,
) -> None:
    from mnemic.config import RerankerConfig
    from tests.infra.test_rerank import RerankPeer

    texts = {
        "p": "orchid, violin, harbor, comet.",  # most words for bm25, none for the peer
        "q": "an orchid by the harbor at dawn",
        "r": "a violin case",
        "s": "a lantern",
        "t": "the comet tail",
    }
    for key, text in texts.items():  # apart: no turn is another's context
        memory.add([{"speaker": "Ben", "content": text, "id": key}], user_id="u", session_id=key)
    query = "orchid violin harbor comet lantern"
    recipe(memory, "bm25", "fusion", reranker=RerankerConfig())
    before = [h.item.source.message_ids[0] for h in memory.search(query, user_id="u", top_k=5)]
    assert before[0] == "p" and len(before) == 5
    # a recipe with rerank and no model fails when it is set, not at a search
    with pytest.raises(ConfigError, match=r"retrieval\.reranker\.model"):
        recipe(memory, "bm25", "fusion", "rerank", reranker=RerankerConfig())
    peer = RerankPeer()  # a protocol peer: a score counts the query's words in a text
    try:
        reranker = RerankerConfig(backend="http", model="m", base_url=peer.url, candidates=3)
        recipe(memory, "bm25", "fusion", "rerank", reranker=reranker)
        hits = memory.search(query, user_id="u", top_k=5)
    finally:
        peer.close()
    after = [h.item.source.message_ids[0] for h in hits]
    # the peer saw the best three as "Speaker: text", and only those
    assert peer.requests[0]["documents"] == [f"Ben: {texts[k]}" for k in before[:3]]
    words = set(query.split())

    def peer_score(key: str) -> int:
        return len(words & set(f"ben: {texts[key]}".split()))

    # the three in the peer's order (ties as they were), then the rest as they were
    assert after[:3] == sorted(before[:3], key=lambda k: -peer_score(k))
    assert after[2] == "p" and after[3:] == before[3:]
    assert all("rerank" in h.stages for h in hits[:3]) and "cross-encoder rank 1" in hits[0].why
    assert "rerank" not in hits[3].stages
    # a reranker that fails leaves the order as it was, and says so
    down = RerankerConfig(backend="http", model="m", base_url=peer.url, max_retries=0)
    recipe(memory, "bm25", "fusion", "rerank", reranker=down)  # the peer is closed
    hits = memory.search(query, user_id="u", top_k=5)
    assert [h.item.source.message_ids[0] for h in hits] == before
    assert "rerank skipped" in hits[0].why


def test_event_anchor_reads_before_and_after_an_event_not_a_date() -> None:
    from mnemic.operation.retrieval.query import event_anchor

    found = event_anchor("Which city was John in before traveling to Chicago?")
    assert found is not None and (found.relation, found.phrase) == (
        "before",
        "traveling to Chicago",
    )
    since = event_anchor("How has he changed since adopting Pixie, and why?")
    assert since is not None and (since.relation, since.phrase) == ("after", "adopting Pixie")
    # dates are the time parser's; questions that only sound like it name no event
    for query in [
        "What happened after May 2023?",
        "What did she do before 2020?",
        "After how many weeks did Ana call?",
        "Has she been there before?",
        "What did he do after that?",
    ]:
        assert event_anchor(query) is None, query


def test_anchor_recalls_on_the_named_side_of_the_event(memory: Memory) -> None:
    days = {
        "porto": ("I visited Porto with my cousin.", "2023-05-05"),
        "wedding": ("The wedding in the garden was lovely.", "2023-05-10"),
        "madrid": ("I visited Madrid with my cousin.", "2023-05-20"),
    }
    for key, (text, day) in days.items():
        memory.add(
            [{"speaker": "Ana", "content": text, "id": key}],
            user_id="u",
            session_id=key,
            timestamp=day,
        )
    # other talk, so that the visits' words are rare enough for BM25 to weigh them
    for n, text in enumerate(
        ["The jazz concert was loud.", "My tomatoes are ripe.", "Rain again."]
    ):
        memory.add(
            [{"speaker": "Ana", "content": text, "id": f"x{n}"}],
            user_id="u",
            session_id=f"x{n}",
            timestamp="2023-05-15",
        )
    stages = ("bm25", "anchor", "fusion")

    def ranked(query: str) -> list[str]:  # turns, each once (memories extracted from a turn
        # carry its id too)
        hits = memory.search(query, user_id="u", top_k=10)
        return list(dict.fromkeys(h.item.source.message_ids[0] for h in hits))

    recipe(memory, *stages)
    before = ranked("Which city did Ana visit with her cousin before the wedding?")
    after = ranked("Which city did Ana visit with her cousin after the wedding?")
    assert before.index("porto") < before.index("madrid")
    assert after.index("madrid") < after.index("porto")
    hit = memory.search("What city before the wedding?", user_id="u", top_k=1)[0]
    assert "before 'the wedding': the event, on 2023-05-10" in hit.why
    # without the stage the two visits tie on words: the order does not follow the question
    recipe(memory, "bm25", "fusion")
    assert (
        ranked("Which city did Ana visit with her cousin before the wedding?")[:2]
        == ranked("Which city did Ana visit with her cousin after the wedding?")[:2]
    )


def test_mmr_lifts_a_different_memory_above_near_copies(memory: Memory) -> None:
    from mnemic.infra.store.base import ItemFilter
    from mnemic.operation.retrieval.stages.mmr import Diversity
    from mnemic.operation.retrieval.state import Candidate, SearchState

    texts = {
        "t1": "I love green tea in the morning.",
        "t2": "I love green tea every morning.",  # near copies of t1: cosine 0.98-1.0
        "t3": "I really love green tea in the morning.",
        "h": "I love hiking in the morning.",  # like them in part: cosine 0.63-0.66
        "x": "The car needs new tyres.",  # unlike all: cosine 0.28-0.40
    }
    ids = {}
    for key, text in texts.items():
        (item,) = memory.add(
            [{"speaker": "Ana", "content": text}], user_id="u", session_id=key, wait=True
        )  # MMR reads the stored vectors, written by the add's job
        ids[key] = item.id
    cube = item.cube_id
    scores = {"t1": 1.0, "t2": 0.99, "t3": 0.98, "h": 0.9, "x": 0.5}

    def order(lam: float, depth: int = 30) -> list[str]:
        state = SearchState(
            query="q",
            analysis=analyze("q"),
            user_id="u",
            cube_id=cube,
            top_k=5,
            flt=ItemFilter(),
            store=memory.store,
        )
        state.candidates = {ids[k]: Candidate(ids[k], v) for k, v in scores.items()}
        config = memory.settings.retrieval.model_copy(
            update={"mmr_lambda": lam, "mmr_candidates": depth}
        )
        Diversity(memory.store, None, config).run(state)
        by_id = {v: k for k, v in ids.items()}
        return [by_id[c.item_id] for c in state.ranked()]

    # relevance and unlikeness weigh the same: after t1, hiking beats its copies
    assert order(0.5) == ["t1", "h", "t2", "t3", "x"]
    assert order(1.0) == ["t1", "t2", "t3", "h", "x"]  # relevance alone: the order as it was
    # only the best `depth` are re-ordered, and they stay above the rest
    assert order(0.5, depth=3) == ["t1", "t2", "t3", "h", "x"]
    # in a recipe: the same items come back, each with its MMR value
    recipe(memory, "bm25", "dense", "fusion")
    plain = {h.item.id for h in memory.search("green tea morning", user_id="u", top_k=10)}
    recipe(memory, "bm25", "dense", "fusion", "mmr")
    hits = memory.search("green tea morning", user_id="u", top_k=10)
    assert {h.item.id for h in hits} == plain and all("mmr" in h.stages for h in hits[:3])


def test_speaker_recall_searches_among_what_the_named_speaker_said(memory: Memory) -> None:
    memory.add(
        [
            *[
                {
                    "speaker": "Ben",
                    "content": f"Ana, what have you painted? Painted {n}?",
                    "id": f"b{n}",
                }
                for n in range(6)
            ],
            {
                "speaker": "Ana",
                "content": "Last weekend I finished the horse I painted for my niece; it took "
                "many long evenings at the kitchen table, but she loved it.",
                "id": "a",
            },
        ],
        user_id="u",
        session_id="s1",
        wait=True,
    )
    # other talk, so that "painted" is in fewer than half the items (BM25 gives a word in
    # more no weight)
    memory.add(
        [{"speaker": "Ben", "content": f"The bus {n} was late.", "id": f"x{n}"} for n in range(20)],
        user_id="u",
        session_id="s0",
        wait=True,
    )
    question = "What has Ana painted?"
    recipe(memory, "bm25", "dense", "fusion", candidates=2)
    plain = memory.search(question, user_id="u", top_k=3)
    assert ["a"] not in [h.item.source.message_ids for h in plain]  # Ben's questions crowd it out
    recipe(
        memory, "bm25", "dense", "speaker_recall", "fusion", candidates=2, speaker_recall_weight=5
    )
    hits = memory.search(question, user_id="u", top_k=3)
    horse = hits[0]
    assert horse.item.source.message_ids == ["a"]
    assert horse.stages["bm25@speaker Ana_rank"] == 1
    assert horse.stages["dense@speaker Ana_rank"] == 1
    assert "recalled among what Ana said" in horse.why
    # nobody named, or a search already kept to one speaker: no lists of its own
    for text, kwargs in (("What was painted?", {}), (question, {"speaker": "Ana"})):
        found = memory.search(text, user_id="u", top_k=3, filters=kwargs or None)
        assert all(not any("@speaker" in s for s in h.stages) for h in found)
