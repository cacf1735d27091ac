"""The local transformers LLM backend, generating with a tiny Llama built from a config with
random weights and a word-level tokenizer built here with the ``tokenizers`` library: no
download. Random weights write no JSON, so the JSON path must end in a reported error."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from mnemic.infra.llm import LLMConfig, LLMOutputError, get_llm
from mnemic.infra.llm.hf import HFLLM

WORDS = 'ana ben lives in paris boston moved to the a user assistant system : { } [ ] " , .'


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<unk>", "<pad>", "<s>", "</s>"]
    vocab = {w: n for n, w in enumerate([*specials, *dict.fromkeys(WORDS.split())])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=1,
        bos_token_id=2,
        eos_token_id=3,
    )
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


ASK = [{"role": "user", "content": "ana moved to paris"}]


def test_generates_from_the_vocabulary(tiny_model: Path) -> None:
    llm = get_llm(LLMConfig(backend="hf", model=str(tiny_model), max_new_tokens=6))
    assert isinstance(llm, HFLLM) and llm.id == f"hf:{tiny_model}"
    reply = llm.complete(ASK)
    assert reply.split() and set(reply.split()) <= set(WORDS.split())
    assert len(reply.split()) <= 6
    assert llm.complete(ASK) == reply  # greedy: the same every time
    assert len(llm.complete(ASK, max_tokens=2).split()) <= 2
    assert "".join(llm.stream(ASK)).split() == reply.split()


class Fact(BaseModel):
    subject: str


def test_json_from_a_model_that_cannot_write_it_is_reported(tiny_model: Path) -> None:
    llm = HFLLM(str(tiny_model), max_new_tokens=4)
    with pytest.raises(LLMOutputError) as failure:
        llm.complete_json(ASK, Fact, retries=1)
    assert failure.value.reply is not None and "not" in failure.value.error


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    from mnemic.errors import BackendUnavailable

    with pytest.raises(BackendUnavailable, match="cannot load the HF model"):
        HFLLM(str(tmp_path / "nothing-here")).complete(ASK)
