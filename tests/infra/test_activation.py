"""Activation memory on a tiny random-weight model: the injected cache must change nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mnemic.errors import InvalidInput
from mnemic.infra.activation import ActivationStore, compile_cache, generate, generate_in_prompt, kv
from mnemic.infra.hf_models import byte_tokenizer, random_model
from mnemic.models import MemoryItem, MemoryStatus

QUERY = "Where did Caroline go last weekend?"


def _items(*texts: str) -> list[MemoryItem]:
    return [MemoryItem(user_id="u", cube_id="u/default", text=t, speaker="Caroline") for t in texts]


ITEMS = _items(
    "I went hiking by the lake with my dog last weekend.",
    "My sister visits in July; we plan a trip to Lisbon.",
    "I started painting sunsets at the art class on Tuesdays.",
)


@pytest.fixture(scope="module")
def model() -> object:
    return random_model("tiny", seed=0)


@pytest.mark.parametrize("template", [True, False], ids=["chat-template", "plain-text"])
def test_injected_cache_generates_exactly_what_the_prompt_does(model, template: bool) -> None:
    tok = byte_tokenizer(chat_template=template)
    cache = compile_cache(model, tok, ITEMS)
    with_cache = generate(model, tok, cache, QUERY, max_new_tokens=24)
    in_prompt = generate_in_prompt(model, tok, ITEMS, QUERY, max_new_tokens=24)
    assert with_cache == in_prompt
    assert len(set(with_cache)) > 3  # a varied sequence, not one token repeated
    # generation appended to a copy: the cache still holds the prefix alone and gives it again
    assert all(k.shape[-2] == cache.tokens for k, _ in cache.layers)
    assert generate(model, tok, cache, QUERY, max_new_tokens=24) == with_cache
    # and the memory matters: other memories give another answer
    other = compile_cache(model, tok, _items("I stayed home and read about whales all week."))
    assert generate(model, tok, other, QUERY, max_new_tokens=24) != with_cache


def test_chat_template_puts_the_memory_in_the_system_turn(model) -> None:
    tok = byte_tokenizer()
    cache = compile_cache(model, tok, ITEMS)
    text = tok.decode(cache.prefix_ids)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_end|>\n")
    assert "Caroline: I went hiking by the lake" in text


def test_saved_cache_loads_and_generates_the_same(model, tmp_path: Path) -> None:
    tok = byte_tokenizer()
    cache = compile_cache(model, tok, ITEMS)
    size = kv.save(cache, tmp_path / "c.safetensors")
    assert size == (tmp_path / "c.safetensors").stat().st_size
    loaded = kv.load(tmp_path / "c.safetensors")
    assert loaded.key == cache.key and loaded.items == [(i.id, 1) for i in ITEMS]
    assert loaded.model.layers == 2 and loaded.model.dtype == "float32"
    for (k1, v1), (k2, v2) in zip(cache.layers, loaded.layers, strict=True):
        assert torch.equal(k1, k2) and torch.equal(v1, v2)
    kv.check_model(loaded, model)
    expected = generate_in_prompt(model, tok, ITEMS, QUERY, max_new_tokens=16)
    assert generate(model, tok, loaded, QUERY, max_new_tokens=16) == expected
    # saving the loaded cache gives the same bytes
    kv.save(loaded, tmp_path / "again.safetensors")
    assert (tmp_path / "again.safetensors").read_bytes() == (
        tmp_path / "c.safetensors"
    ).read_bytes()


def test_a_cache_is_refused_for_another_model_or_a_tampered_file(model, tmp_path: Path) -> None:
    tok = byte_tokenizer()
    cache = compile_cache(model, tok, ITEMS)
    other = random_model("tiny", seed=1)  # same shape, other weights
    with pytest.raises(InvalidInput, match="made for"):
        kv.check_model(cache, other)
    with pytest.raises(InvalidInput, match="made for"):
        generate(other, tok, cache, QUERY)
    path = tmp_path / "c.safetensors"
    kv.save(cache, path)
    # the header claims another version of an item than the one the tensors were made from
    held = f'[\\"{ITEMS[0].id}\\", 1]'.encode()
    data = path.read_bytes()
    assert held in data
    path.write_bytes(data.replace(held, held.replace(b"1]", b"2]")))
    with pytest.raises(InvalidInput, match="altered"):
        kv.load(path)
    (tmp_path / "junk.safetensors").write_bytes(b"not a cache")
    with pytest.raises(InvalidInput, match="not a readable"):
        kv.load(tmp_path / "junk.safetensors")


def test_store_keys_by_item_versions_and_invalidates_changed_items(model, tmp_path: Path) -> None:
    tok = byte_tokenizer()
    acts = ActivationStore(tmp_path / "activation")
    assert acts.get(model, ITEMS) is None
    cache = acts.get_or_compile(model, tok, ITEMS)
    again = acts.get(model, ITEMS)
    assert again is not None and again.key == cache.key
    (info,) = list(acts)
    assert info.tokens == cache.tokens and info.model_id == "random/tiny-seed0"
    # the same ids at a new version are another key: the old cache is not found for them
    edited = [ITEMS[0].model_copy(update={"version": 2, "text": "I went to the sea."}), *ITEMS[1:]]
    assert acts.get(model, edited) is None
    # another order is another prefix
    assert acts.get(model, list(reversed(ITEMS))) is None
    # invalidation drops the cache once an item it holds moves on, keeps it otherwise
    current = {i.id: i.version for i in ITEMS}
    assert acts.invalidate(current) == []
    assert acts.invalidate({**current, ITEMS[0].id: 2}) == [info.path]
    assert list(acts) == []


def test_invalidate_from_the_store(model, store, tmp_path: Path) -> None:
    tok = byte_tokenizer()
    store.ensure_cube("u/default", "u", embedder="test", dim=8)
    store.add_items(ITEMS, np.ones((3, 8), dtype=np.float32), actor="u")
    acts = ActivationStore(tmp_path / "activation")
    acts.get_or_compile(model, tok, ITEMS)
    acts.get_or_compile(model, tok, ITEMS[1:])
    assert acts.invalidate_from(store, "u", "u/default") == []
    changed = ITEMS[0].model_copy(update={"version": 2, "text": "I went to the sea instead."})
    store.update_item(changed, None, actor="u", expected_version=1)
    removed = acts.invalidate_from(store, "u", "u/default")
    assert len(removed) == 1 and [i.items for i in acts] == [[(i.id, 1) for i in ITEMS[1:]]]
    deleted = ITEMS[2].model_copy(update={"version": 2, "status": MemoryStatus.DELETED})
    store.update_item(deleted, None, actor="u", action="delete", expected_version=1)
    assert len(acts.invalidate_from(store, "u", "u/default")) == 1
    assert list(acts) == []


def test_empty_question_or_memory_is_refused(model) -> None:
    tok = byte_tokenizer()
    with pytest.raises(InvalidInput, match="no memory items"):
        compile_cache(model, tok, [])
    cache = compile_cache(model, tok, ITEMS)
    with pytest.raises(InvalidInput, match="question is empty"):
        generate(model, tok, cache, "  ")
