"""Local embedder on onnxruntime: the default, with an int8 all-MiniLM-L6-v2 shipped in the wheel.

``model`` is either the shipped name ``all-MiniLM-L6-v2`` or a path:

* a folder holding ``tokenizer.json`` and ``model-int8.onnx`` and/or ``model.onnx``;
  ``quantized`` picks ``model-int8.onnx`` (true) or ``model.onnx`` (false), and a folder
  holding only one of the two uses that one. ``scripts/export_minilm_onnx.py --fp32-dir DIR``
  writes such a folder with the fp32 model.
* an ``.onnx`` file with ``tokenizer.json`` beside it.

The graph must take ``input_ids`` and ``attention_mask`` (and ``token_type_ids``, fed zeros,
if it asks for it) and return token states ``[batch, sequence, dim]``, mean-pooled here over
the attention mask, or an already pooled ``[batch, dim]``.

The shipped int8 model uses onnxruntime's ``MatMulNBits`` with 8-bit weights, which needs
onnxruntime >= 1.22 on x86-64 and >= 1.23 on ARM64 (see scripts/export_minilm_onnx.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mnemic.config import EmbedderConfig
from mnemic.errors import BackendUnavailable, InvalidInput
from mnemic.infra.embed.base import check_texts, normalize

SHIPPED_MODEL = "all-MiniLM-L6-v2"
ASSETS = Path(__file__).resolve().parent.parent / "assets"
# sentence-transformers' max_seq_length for all-MiniLM-L6-v2 (special tokens included)
MAX_TOKENS = 256
INT8_FILE = "model-int8.onnx"
FP32_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
TOKENS_PER_BATCH = 512


class OnnxEmbedder:
    """Tokenizes with HF ``tokenizers``, runs the transformer on onnxruntime, mean-pools.

    Thread-safe: the tokenizer is configured once and only read afterwards, and an
    onnxruntime session may be run from several threads at once.
    """

    def __init__(
        self,
        model_path: str | Path,
        tokenizer_path: str | Path,
        *,
        model_id: str,
        batch_size: int = 64,
        threads: int = 0,
        max_tokens: int = MAX_TOKENS,
    ) -> None:
        model_path, tokenizer_path = Path(model_path), Path(tokenizer_path)
        for path, what in ((model_path, "ONNX model"), (tokenizer_path, "tokenizer")):
            if not path.is_file():
                raise BackendUnavailable(
                    f"the {what} file {path} is missing; reinstall mnemic for the shipped "
                    f"model, or export one with scripts/export_minilm_onnx.py"
                )
        if batch_size < 1:
            raise InvalidInput(f"batch_size must be at least 1, got {batch_size}")
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:  # core dependencies, but say so if they are broken
            raise BackendUnavailable(
                f"the onnx embedder needs onnxruntime and tokenizers ({exc}); "
                f"run `pip install onnxruntime tokenizers`"
            ) from exc

        try:
            tokenizer = Tokenizer.from_file(str(tokenizer_path))
        except Exception as exc:
            raise BackendUnavailable(f"cannot load tokenizer {tokenizer_path}: {exc}") from exc
        tokenizer.enable_truncation(max_length=max_tokens)
        tokenizer.no_padding()  # padding is done per length-sorted batch in _run
        self._tokenizer = tokenizer
        self._pad_id = _pad_id(tokenizer)

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(
                str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise BackendUnavailable(
                f"onnxruntime {ort.__version__} cannot load {model_path}: {exc} (the shipped "
                f"int8 model needs onnxruntime >= 1.23)"
            ) from exc

        inputs = {i.name for i in self._session.get_inputs()}
        missing = {"input_ids", "attention_mask"} - inputs
        if missing:
            raise BackendUnavailable(
                f"{model_path} lacks the inputs {sorted(missing)}; it has {sorted(inputs)}"
            )
        self._token_types = "token_type_ids" in inputs
        self._output = self._session.get_outputs()[0].name
        self._id = model_id
        self._batch_size = batch_size
        self.model_path = model_path
        # first run allocates and pre-packs weights: do it now, not on the first query
        self._dim = int(self._run([self._tokenizer.encode("warm up").ids]).shape[1])

    @classmethod
    def from_config(cls, config: EmbedderConfig) -> OnnxEmbedder:
        model_path, tokenizer_path, model_id = resolve_model(config.model, config.quantized)
        return cls(
            model_path,
            tokenizer_path,
            model_id=model_id,
            batch_size=config.batch_size,
            threads=config.threads,
        )

    @property
    def id(self) -> str:
        return self._id

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = check_texts(texts)
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        if len(texts) == 1:  # the search hot path: no batching machinery
            return self._run([self._tokenizer.encode(texts[0]).ids])

        ids = [e.ids for e in self._tokenizer.encode_batch(texts)]
        # sorting by length makes each batch pad to nearly its own length
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
        out = np.empty((len(ids), self._dim), dtype=np.float32)
        start = 0
        while start < len(order):
            # a batch also stops at TOKENS_PER_BATCH padded tokens: on CPU, larger ones spill
            # the caches and run slower per text
            longest = len(ids[order[start]])
            size = min(self._batch_size, max(1, TOKENS_PER_BATCH // longest))
            chunk = order[start : start + size]
            out[chunk] = self._run([ids[i] for i in chunk])
            start += size
        return out

    def _run(self, ids: list[list[int]]) -> np.ndarray:
        """Embed one batch of token id lists; returns unit rows."""
        longest = max(len(x) for x in ids)
        if all(len(x) == longest for x in ids):
            input_ids = np.array(ids, dtype=np.int64)
            mask = np.ones_like(input_ids)
        else:
            input_ids = np.full((len(ids), longest), self._pad_id, dtype=np.int64)
            mask = np.zeros((len(ids), longest), dtype=np.int64)
            for row, seq in enumerate(ids):
                input_ids[row, : len(seq)] = seq
                mask[row, : len(seq)] = 1
        feed = {"input_ids": input_ids, "attention_mask": mask}
        if self._token_types:
            feed["token_type_ids"] = np.zeros_like(input_ids)
        try:
            hidden = self._session.run([self._output], feed)[0]
        except Exception as exc:
            raise BackendUnavailable(f"onnxruntime failed on {self.model_path}: {exc}") from exc
        if hidden.ndim == 2:  # the graph pools itself
            return normalize(hidden)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return normalize(pooled)


def resolve_model(model: str, quantized: bool = True) -> tuple[Path, Path, str]:
    """Map a model name or path to (model file, tokenizer file, embedder id)."""
    variant_file = INT8_FILE if quantized else FP32_FILE
    if model == SHIPPED_MODEL:
        folder = ASSETS / SHIPPED_MODEL
        if not quantized:
            raise BackendUnavailable(
                f"only the int8 {SHIPPED_MODEL} ships with mnemic; for fp32 run "
                f"`python scripts/export_minilm_onnx.py --fp32-dir DIR` (needs the torch "
                f"extra) and set embedder.model to DIR"
            )
        return folder / INT8_FILE, folder / TOKENIZER_FILE, f"onnx:{SHIPPED_MODEL}:int8"

    path = Path(model).expanduser()
    if path.is_file():
        return path, path.parent / TOKENIZER_FILE, f"onnx:{path.parent.name}:{_variant(path)}"
    if path.is_dir():
        chosen = path / variant_file
        if not chosen.is_file():
            other = path / (FP32_FILE if quantized else INT8_FILE)
            if other.is_file():
                chosen = other
            else:
                raise BackendUnavailable(
                    f"{path} holds neither {INT8_FILE} nor {FP32_FILE}; the onnx embedder "
                    f"needs one of them and {TOKENIZER_FILE}"
                )
        return chosen, path / TOKENIZER_FILE, f"onnx:{path.name}:{_variant(chosen)}"
    raise BackendUnavailable(
        f"onnx embedder model {model!r} is neither the shipped {SHIPPED_MODEL!r} nor an "
        f"existing folder or .onnx file"
    )


def _variant(path: Path) -> str:
    return {INT8_FILE: "int8", FP32_FILE: "fp32"}.get(path.name, path.stem)


def _pad_id(tokenizer) -> int:
    for token in ("[PAD]", "<pad>"):
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return int(token_id)
    return 0
