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

from mnemic.infra.hf_models import random_cross_encoder

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m mnemic.bench.rerank FOLDER")
    print(random_cross_encoder(Path(sys.argv[1])))
