"""The scheduler preloads into activation memory: a session's working memory becomes a KV cache
of a local transformer (a tiny random-weight model), used for generation and dropped when one
of its items changes."""

from __future__ import annotations

import pytest

from mnemic import Memory
from mnemic.infra.activation import ActivationStore, generate, generate_in_prompt
from mnemic.infra.hf_models import byte_tokenizer, random_model
from mnemic.operation.scheduler.activation import cache_order

QUERY = "Where did Ana go hiking?"


@pytest.fixture(scope="module")
def model() -> object:
    return random_model("tiny", seed=0)


def test_preloaded_working_memory_becomes_a_kv_cache(memory: Memory, model) -> None:
    tok = byte_tokenizer()
    memory.add("Ana lives in Lisbon.", user_id="ana", session_id="s1", wait=True)
    assert memory.session_cache("s1", user_id="ana") is None  # no model attached yet
    memory.attach_model(model, tok)
    turns = [
        {"speaker": "Ana", "content": "I went hiking in Sintra with my dog Rex."},
        {"speaker": "Bo", "content": "Sintra is beautiful in May."},
    ]
    memory.add(turns, user_id="ana", session_id="s1", timestamp="2023-05-08", wait=True)
    cache = memory.session_cache("s1", user_id="ana", wait=60)
    assert cache is not None
    working = memory.scheduler.working("ana", "ana/default", "s1").items()
    assert [i for i, _ in cache.items] == [i.id for i in cache_order(working)][: len(cache.items)]
    assert "Ana: I went hiking in Sintra" in cache.memory
    # generating from it gives exactly what the memory in the prompt gives
    held = memory.get_all(user_id="ana", limit=100)
    ordered = [next(i for i in held if i.id == item_id) for item_id, _ in cache.items]
    assert generate(model, tok, cache, QUERY, max_new_tokens=16) == generate_in_prompt(
        model, tok, ordered, QUERY, max_new_tokens=16
    )
    # it is stored with the cube's activation memory
    folder = memory.cube_folder(user_id="ana") / "activation"
    assert any(info.key == cache.key for info in ActivationStore(folder))

    # an item of it changes: the cache is no longer handed out
    first = cache.items[0][0]
    memory.update(first, user_id="ana", text="I went hiking in Arrabida instead.")
    assert memory.session_cache("s1", user_id="ana") is None
    # the session goes on: the next preload compiles the new working memory
    memory.add("Rex loved the beach there.", user_id="ana", session_id="s1", wait=True)
    again = memory.session_cache("s1", user_id="ana", wait=60)
    assert again is not None and again.key != cache.key
    assert cache.items[0] not in again.items  # never the stale version of the changed item


def test_attach_model_needs_the_scheduler(tmp_path, embedder, model) -> None:
    from mnemic import load_settings
    from mnemic.errors import ConfigError

    settings = load_settings(home=tmp_path / "m", scheduler={"enabled": False})
    with (
        Memory(settings, embedder=embedder) as mem,  # type: ignore[arg-type]
        pytest.raises(ConfigError, match="scheduler"),
    ):
        mem.attach_model(model, byte_tokenizer())
