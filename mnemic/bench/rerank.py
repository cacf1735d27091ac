"""A cross-encoder of real shape with random weights, to measure what the ``rerank`` stage
costs when no reranker's weights are at hand (none ship in a package): its speed is that of
the real model, its scores are noise.

    python -m mnemic.bench.rerank /tmp/ce   # the shape of cross-encoder/ms-marco-MiniLM-L6-v2
    MNEMIC_RETRIEVAL__RERANKER__MODEL=/tmp/ce mnemic bench locomo \\
        --stages bm25,feedback,dense,topic,time,fusion,speaker,session,rerank

The tokenizer is the one shipped with the embedder (all-MiniLM-L6-v2's, BERT's uncased word
pieces: the same vocabulary as the MS MARCO MiniLM cross-encoders). Needs the torch extra.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from mnemic.infra.embed.onnx import ASSETS, SHIPPED_MODEL

# cross-encoder/ms-marco-MiniLM-L6-v2's config.json, weights left out
MINILM_L6 = {
    "hidden_size": 384,
    "num_hidden_layers": 6,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "max_position_embeddings": 512,
}


def random_cross_encoder(folder: Path, shape: dict[str, int] | None = None, seed: int = 0) -> Path:
    """Save a one-output BERT sequence classifier (``shape``, default MiniLM-L6) with seeded
    random weights and the shipped tokenizer to ``folder``, loadable as a reranker model."""
    import torch
    import transformers
    from tokenizers import Tokenizer

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
    config = hf.BertConfig(vocab_size=len(tokenizer), num_labels=1, **(shape or MINILM_L6))
    hf.BertForSequenceClassification(config).eval().save_pretrained(folder)
    return folder


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m mnemic.bench.rerank FOLDER")
    print(random_cross_encoder(Path(sys.argv[1])))
