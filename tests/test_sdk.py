"""The SDK end to end, on the embedded store and the real default embedder."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mnemic import AccessDenied, InvalidInput, Memory, MemoryStatus, NotFound, load_settings


def test_add_then_search_finds_by_meaning_and_words(memory: Memory) -> None:
    memory.add(
        [
            {"role": "Ana", "content": "I adopted a golden retriever puppy last week.", "id": "m1"},
            {"role": "Ana", "content": "My sister works as a nurse in Porto.", "id": "m2"},
            {"role": "Ana", "content": "I am learning to play the cello.", "id": "m3"},
        ],
        user_id="ana",
        session_id="s1",
        timestamp="2023-05-08T13:56:00",
    )
    hits = memory.search("Does Ana have a dog?", user_id="ana", top_k=3)
    assert hits[0].item.source.message_ids == ["m1"]
    assert hits[0].stages and hits[0].why
    assert hits[0].item.valid_from == datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
    assert hits[0].item.speaker == "Ana" and hits[0].item.session_id == "s1"
    nurse = memory.search("nurse", user_id="ana", top_k=1)
    assert nurse[0].item.source.message_ids == ["m2"]


def test_users_are_isolated_through_every_call(memory: Memory) -> None:
    (mine,) = memory.add("ana's secret: the safe code is 1234", user_id="ana")
    memory.add("bob likes sailing", user_id="bob")
    assert all(h.item.user_id == "bob" for h in memory.search("safe code", user_id="bob"))
    with pytest.raises(NotFound):
        memory.get(mine.id, user_id="bob")
    with pytest.raises(NotFound):
        memory.history(mine.id, user_id="bob")
    with pytest.raises(NotFound):
        memory.delete(mine.id, user_id="bob")
    with pytest.raises(NotFound):
        memory.update(mine.id, user_id="bob", text="hacked")
    # naming ana's cube explicitly is refused, not silently served
    with pytest.raises(AccessDenied):
        memory.search("safe code", user_id="bob", cube_id="ana/default")
    with pytest.raises(AccessDenied):
        memory.add("intrusion", user_id="bob", cube_id="ana/default")
    with pytest.raises(AccessDenied):
        memory.get_all(user_id="bob", cube_id="ana/default")
    assert memory.get(mine.id, user_id="ana").text.startswith("ana's secret")
    assert memory.cubes(user_id="bob") == ["bob/default"]


def test_update_versions_and_history(memory: Memory) -> None:
    (item,) = memory.add("I live in Porto", user_id="ana")
    updated = memory.update(item.id, user_id="ana", text="I live in Lisbon", reason="moved")
    assert updated.version == 2 and updated.text == "I live in Lisbon"
    assert memory.search("Lisbon", user_id="ana")[0].item.id == item.id
    hist = memory.history(item.id, user_id="ana")
    assert [h.action for h in hist] == ["add", "update"]
    assert hist[1].before["text"] == "I live in Porto" and hist[1].reason == "moved"
    with pytest.raises(InvalidInput):
        memory.update(item.id, user_id="ana", version=7)
    with pytest.raises(InvalidInput):
        memory.update(item.id, user_id="ana", confidence=3.0)
    assert memory.get(item.id, user_id="ana").version == 2


def test_delete_is_a_status_then_purge_erases(memory: Memory) -> None:
    (item,) = memory.add("temporary note about parking", user_id="ana")
    memory.delete(item.id, user_id="ana")
    assert memory.get(item.id, user_id="ana").status == MemoryStatus.DELETED
    assert memory.search("parking", user_id="ana") == []
    assert memory.get_all(user_id="ana") == []
    assert len(memory.get_all(user_id="ana", filters={"statuses": ["deleted"]})) == 1
    memory.delete(item.id, user_id="ana", purge=True)
    with pytest.raises(NotFound):
        memory.get(item.id, user_id="ana")
    assert memory.history(item.id, user_id="ana")[-1].action == "purge"


def test_filters_and_token_budget(memory: Memory) -> None:
    memory.add("we talked about the garden", user_id="ana", session_id="s1", timestamp="2023-01-01")
    memory.add(
        "we talked about the garden again", user_id="ana", session_id="s2", timestamp="2023-06-01"
    )
    only_s2 = memory.search("garden", user_id="ana", filters={"session_id": "s2"})
    assert [h.item.session_id for h in only_s2] == ["s2"]
    before = memory.search("garden", user_id="ana", filters={"before": "2023-03-01"})
    assert [h.item.session_id for h in before] == ["s1"]
    packed = memory.search("garden", user_id="ana", token_budget=15)
    assert len(packed) == 1
    with pytest.raises(InvalidInput):
        memory.search("garden", user_id="ana", filters={"bogus": 1})


@pytest.mark.parametrize(
    ("call", "kwargs"),
    [
        ("add", {"messages": "", "user_id": "ana"}),
        ("add", {"messages": "   ", "user_id": "ana"}),
        ("add", {"messages": [], "user_id": "ana"}),
        ("add", {"messages": "x\x00y", "user_id": "ana"}),
        ("add", {"messages": "\ud800", "user_id": "ana"}),
        ("add", {"messages": 42, "user_id": "ana"}),
        ("add", {"messages": [{"content": "hi", "colour": "red"}], "user_id": "ana"}),
        ("add", {"messages": "hi", "user_id": ""}),
        ("add", {"messages": "hi", "user_id": "a\nb"}),
        ("add", {"messages": "hi", "user_id": "ana", "timestamp": "yesterday-ish"}),
        ("add", {"messages": "x" * 100_001, "user_id": "ana"}),
        ("search", {"query": "", "user_id": "ana"}),
        ("search", {"query": "q", "user_id": "ana", "top_k": 0}),
        ("search", {"query": "q", "user_id": "ana", "top_k": 10**9}),
        ("search", {"query": "q", "user_id": "ana", "token_budget": -5}),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(memory: Memory, call: str, kwargs) -> None:
    memory.add("baseline memory", user_id="ana")
    with pytest.raises(InvalidInput):
        getattr(memory, call)(**kwargs)
    assert len(memory.get_all(user_id="ana")) == 1


def test_search_before_any_add_is_empty(memory: Memory) -> None:
    assert memory.search("anything", user_id="newcomer") == []


def test_data_persists_across_instances(tmp_path, embedder) -> None:
    settings = load_settings(home=tmp_path / "h")
    with Memory(settings, embedder=embedder) as mem:
        (item,) = mem.add("the boat is called Wanda", user_id="ana")
    with Memory(settings, embedder=embedder) as mem:
        assert mem.search("boat name", user_id="ana")[0].item.id == item.id


def test_config_from_toml_and_env(tmp_path, monkeypatch) -> None:
    from mnemic import ConfigError

    cfg = tmp_path / "config.toml"
    cfg.write_text("[retrieval]\ncandidates = 77\n[embedder]\nbatch_size = 8\n")
    monkeypatch.setenv("MNEMIC_EMBEDDER__BATCH_SIZE", "16")
    s = load_settings(cfg)
    assert s.retrieval.candidates == 77
    assert s.embedder.batch_size == 16  # env wins over the file
    cfg.write_text("[retrieval]\ncandidate = 77\n")
    with pytest.raises(ConfigError, match="candidate"):
        load_settings(cfg)
    cfg.write_text("not = [toml")
    with pytest.raises(ConfigError):
        load_settings(cfg)


def test_a_cube_refuses_an_embedder_it_was_not_made_with(tmp_path, embedder) -> None:
    from mnemic import ConfigError

    settings = load_settings(home=tmp_path / "h")
    with Memory(settings, embedder=embedder) as mem:
        mem.add("the boat is called Wanda", user_id="ana")

    class Other:  # a real, different embedder: same model, another identity
        id = "onnx:some-other-model:int8"
        dim = embedder.dim

        def embed(self, texts):
            return embedder.embed(texts)

    with Memory(settings, embedder=Other()) as mem:
        with pytest.raises(ConfigError, match="migrate"):
            mem.search("boat", user_id="ana")
        with pytest.raises(ConfigError, match="migrate"):
            mem.add("more", user_id="ana")
        assert mem.get_all(user_id="ana")[0].text == "the boat is called Wanda"


@pytest.mark.parametrize(
    "content",
    [
        b'[retrieval]\ncandidates = "many"\n',  # wrong type
        b"[retrieval]\ncandidates = -3\n",  # out of range
        b'[store]\nbackend = "oracle"\n',  # unknown backend
        b"[nonsense]\nx = 1\n",  # unknown section
        b'[embedder]\nmodel = "\xff\xfe"\n',  # invalid UTF-8
        b"\x00\x01\x02",  # binary junk
        b"",  # empty file: defaults
    ],
)
def test_bad_config_files_get_a_config_error_that_names_the_file(tmp_path, content) -> None:
    from mnemic import ConfigError

    cfg = tmp_path / "config.toml"
    cfg.write_bytes(content)
    if not content:
        assert load_settings(cfg).retrieval.candidates == 50
        return
    with pytest.raises(ConfigError, match=str(cfg)):
        load_settings(cfg)


def test_bad_environment_values_get_a_config_error(monkeypatch) -> None:
    from mnemic import ConfigError

    monkeypatch.setenv("MNEMIC_RETRIEVAL__CANDIDATES", "lots")
    with pytest.raises(ConfigError, match="candidates"):
        load_settings()


def test_a_batch_over_the_limit_is_refused_whole(memory: Memory) -> None:
    from mnemic.operation.reader.messages import MAX_BATCH

    with pytest.raises(InvalidInput, match="batches"):
        memory.add(["x"] * (MAX_BATCH + 1), user_id="ana")
    assert memory.cubes(user_id="ana") == []


def test_adding_one_turn_at_a_time_keys_turns_as_one_batch_does(memory: Memory) -> None:
    turns = [
        {"role": "Ana", "content": "I adopted another pup last week."},
        {"role": "Ben", "content": "What's his name?"},
        {"role": "Ana", "content": "Scout! He loves the beach."},
        {"role": "Ben", "content": "Which beach do you go to?"},
        {"role": "Ana", "content": "The one near the lighthouse."},
    ]
    memory.add(turns, user_id="batch", session_id="s1", timestamp="2023-05-08T10:00:00")
    for turn in turns:  # an agent adding each turn as it comes
        memory.add([turn], user_id="live", session_id="s1", timestamp="2023-05-08T10:00:00")
    # a turn of another session is no context
    memory.add([{"role": "Cy", "content": "Jazz tonight?"}], user_id="live", session_id="s2")

    def keys(user: str) -> list[str | None]:
        stored = memory.get_all(user_id=user, filters={"session_id": "s1", "kinds": ["raw_turn"]})
        return [i.index_text for i in stored]

    assert keys("live") == keys("batch")
    first = keys("live")[0]
    assert first is not None and "Scout" in first  # named two turns later, in another add
    hits = memory.search("When did Ana adopt Scout?", user_id="live", top_k=5)
    assert "I adopted another pup last week." in [h.item.text for h in hits]
