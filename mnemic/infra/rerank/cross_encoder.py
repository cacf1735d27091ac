"""Cross-encoder reranker on transformers (PyTorch), imported only when asked for.

Loads a sequence-classification model and its tokenizer from a local folder or the local hub
cache, never from the network (``local_files_only``). A model with one output (the MS MARCO
cross-encoders) scores by that logit; one with two or more by the log-odds of its last class
("relevant"). Needs ``pip install torch==2.13.0 && pip install 'mnemic[torch]'``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from mnemic.config import RerankerConfig
from mnemic.errors import BackendUnavailable
from mnemic.infra.embed.sentence_transformers import INSTALL_HINT


class CrossEncoderReranker:
    """Calls are serialized: one forward pass at a time uses every torch thread."""

    def __init__(
        self, model: str, *, max_length: int = 256, batch_size: int = 32, threads: int = 0
    ) -> None:
        try:
            import torch
            from transformers import AutoModelForSequenceClassification, AutoTokenizer
        except ImportError as exc:
            raise BackendUnavailable(
                f"the cross-encoder reranker needs torch and transformers ({exc}); "
                f"run `{INSTALL_HINT}`"
            ) from exc
        if threads > 0:
            torch.set_num_threads(threads)  # process-wide: torch has no per-model setting
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(model, local_files_only=True)
            self._model = AutoModelForSequenceClassification.from_pretrained(
                model, local_files_only=True
            )
        except (OSError, ValueError) as exc:
            raise BackendUnavailable(
                f"cannot load the cross-encoder {model!r}: {exc}. Give a local folder with a "
                f"sequence-classification model and its tokenizer, or a hub name that is "
                f"already in the local cache (nothing is downloaded)"
            ) from exc
        self._model.eval()
        self._torch: Any = torch
        self._model_name = model
        self.max_length = max_length
        self.batch_size = batch_size
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: RerankerConfig) -> CrossEncoderReranker:
        return cls(
            config.model,
            max_length=config.max_length,
            batch_size=config.batch_size,
            threads=config.threads,
        )

    @property
    def id(self) -> str:
        return f"cross-encoder:{self._model_name}"

    def score(self, query: str, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros(0, dtype=np.float32)
        parts = []
        with self._lock, self._torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = texts[start : start + self.batch_size]
                encoded = self._tokenizer(
                    [query] * len(batch),
                    batch,
                    padding=True,
                    truncation="only_second",
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                logits = self._model(**encoded).logits.float()
                if logits.shape[-1] == 1:
                    scores = logits[:, 0]
                else:  # log-odds of the last class against the others
                    logp = self._torch.log_softmax(logits, dim=-1)
                    scores = logp[:, -1] - self._torch.logsumexp(logp[:, :-1], dim=-1)
                parts.append(scores.cpu().numpy())
        return np.concatenate(parts).astype(np.float32)
