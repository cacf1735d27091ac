"""Random-weight models of real shapes (causal LMs with a byte tokenizer, a cross-encoder with
the shipped word pieces): tests and benchmarks, no download.

Nothing here loads weights: a model is built from its config with seeded random weights, so
timings and cache sizes are those of the real architecture while the outputs are noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# ChatML, as Qwen2.5 and SmolLM2 render it: a system turn, then user and assistant turns
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
BYTE_VOCAB = 256 + len(SPECIAL_TOKENS)

# the shapes of two small open models (their config.json, weights left out)
SHAPES: dict[str, dict[str, Any]] = {
    "tiny": {
        "model_type": "qwen2",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": True,
    },
    "qwen2.5-0.5b": {
        "model_type": "qwen2",
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "max_position_embeddings": 32768,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
        "vocab_size": 151936,
    },
    "smollm2-360m": {
        "model_type": "llama",
        "hidden_size": 960,
        "intermediate_size": 2560,
        "num_hidden_layers": 32,
        "num_attention_heads": 15,
        "num_key_value_heads": 5,
        "max_position_embeddings": 8192,
        "rope_theta": 100000.0,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": True,
        "vocab_size": 49152,
    },
}


def byte_tokenizer(*, chat_template: bool = True) -> Any:
    """A byte-level tokenizer (one token a byte, any text) with ChatML's special tokens.

    Built in memory with the ``tokenizers`` library, wrapped as a transformers fast tokenizer;
    ``chat_template=False`` gives one without a template (plain-text prompts)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL_TOKENS)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    if chat_template:
        wrapped.chat_template = CHATML_TEMPLATE
    return wrapped


def random_model(
    shape: str = "tiny", *, seed: int = 0, vocab_size: int | None = None, init_std: float = 0.2
) -> Any:
    """A causal LM of the named shape (:data:`SHAPES`) with seeded random weights, in eval mode.

    ``init_std`` is the weights' spread: at the usual 0.02 an untrained model's next-token
    distribution is so flat that greedy decoding repeats one token; 0.2 gives varied output,
    so tests comparing generations compare something."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if shape not in SHAPES:
        raise ValueError(f"unknown model shape {shape!r}; choose one of {sorted(SHAPES)}")
    spec = dict(SHAPES[shape])
    model_type = spec.pop("model_type")
    spec["vocab_size"] = vocab_size or spec.get("vocab_size", BYTE_VOCAB)
    spec["initializer_range"] = init_std
    config = AutoConfig.for_model(model_type, **spec)
    config.name_or_path = f"random/{shape}-seed{seed}"
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.config.name_or_path = f"random/{shape}-seed{seed}"
    model.generation_config.pad_token_id = 256  # <|endoftext|> of the byte tokenizer
    return model.eval()


# cross-encoder/ms-marco-MiniLM-L6-v2's config.json, weights left out
MINILM_L6 = {
    "hidden_size": 384,
    "num_hidden_layers": 6,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "max_position_embeddings": 512,
}


def random_cross_encoder(
    folder: Path, shape: dict[str, int] | None = None, *, seed: int = 0, labels: int = 1
) -> Path:
    """Save a BERT sequence classifier (``shape``, default MiniLM-L6; ``labels`` outputs, one
    as the MS MARCO cross-encoders have) with seeded random weights and the shipped tokenizer
    to ``folder``, loadable as a reranker model."""
    import torch
    import transformers
    from tokenizers import Tokenizer

    from mnemic.infra.embed.onnx import ASSETS, SHIPPED_MODEL

    hf: Any = transformers  # the Bert classes are loaded lazily, unseen by type checkers
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = hf.BertTokenizerFast(
        tokenizer_object=Tokenizer.from_file(str(ASSETS / SHIPPED_MODEL / "tokenizer.json")),
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
    )
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = hf.BertConfig(vocab_size=len(tokenizer), num_labels=labels, **(shape or MINILM_L6))
    hf.BertForSequenceClassification(config).eval().save_pretrained(folder)
    return folder
