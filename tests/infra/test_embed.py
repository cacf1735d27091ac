"""Embedders: the shipped ONNX model, its agreement with sentence-transformers, and the
OpenAI-compatible client against a local server that speaks the embeddings protocol."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from protocol_peer import ProtocolPeer, Reply

from mnemic.config import EmbedderConfig
from mnemic.errors import BackendUnavailable, InvalidInput
from mnemic.infra.embed import Embedder, get_embedder
from mnemic.infra.embed.onnx import ASSETS, OnnxEmbedder
from mnemic.infra.embed.openai import OpenAIEmbedder

REPO = Path(__file__).resolve().parents[2]
SENTENCES = [
    "A man is playing a guitar on stage.",
    "Caroline went to the LGBTQ support group on 7 May 2023.",
    "What did Melanie paint last year?",
    "The quarterly report shows revenue grew by twelve percent.",
    "hi",
    "",
]


@pytest.fixture(scope="module")
def onnx_embedder() -> OnnxEmbedder:
    embedder = get_embedder(EmbedderConfig(backend="onnx"))
    assert isinstance(embedder, OnnxEmbedder)
    return embedder


# --- ONNX (the default) ----------------------------------------------------------------------


def test_onnx_loads_offline_without_network() -> None:
    # a fresh interpreter with the hub switched off and every socket connect refused
    code = (
        "import socket\n"
        "def deny(*a, **k): raise OSError('network disabled by the test')\n"
        "socket.socket.connect = deny\n"
        "socket.create_connection = deny\n"
        "from mnemic.config import EmbedderConfig\n"
        "from mnemic.infra.embed import get_embedder\n"
        "e = get_embedder(EmbedderConfig())\n"
        "v = e.embed(['offline works'])\n"
        "print(e.id, e.dim, v.shape)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["onnx:all-MiniLM-L6-v2:int8", "384", "(1,", "384)"]


def test_onnx_shapes_dtype_and_unit_norms(onnx_embedder: OnnxEmbedder) -> None:
    assert isinstance(onnx_embedder, Embedder)
    assert onnx_embedder.id == "onnx:all-MiniLM-L6-v2:int8"
    assert onnx_embedder.dim == 384
    vectors = onnx_embedder.embed(SENTENCES)
    assert vectors.shape == (len(SENTENCES), 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_onnx_empty_list(onnx_embedder: OnnxEmbedder) -> None:
    empty = onnx_embedder.embed([])
    assert empty.shape == (0, 384)
    assert empty.dtype == np.float32


def test_onnx_rejects_a_bare_string_and_non_strings(onnx_embedder: OnnxEmbedder) -> None:
    with pytest.raises(InvalidInput):
        onnx_embedder.embed("one string")
    with pytest.raises(InvalidInput):
        onnx_embedder.embed(["fine", 3])  # type: ignore[list-item]


def test_onnx_related_sentences_score_higher(onnx_embedder: OnnxEmbedder) -> None:
    anchor, related, unrelated = onnx_embedder.embed(
        [
            "A man is playing a guitar.",
            "Someone strums an acoustic guitar on stage.",
            "The central bank raised interest rates again.",
        ]
    )
    assert anchor @ related > anchor @ unrelated + 0.3


def test_onnx_padding_and_batch_invariance() -> None:
    # batch_size 2 so the texts are split into several length-sorted, padded batches
    embedder = get_embedder(EmbedderConfig(backend="onnx", batch_size=2))
    short = "The cat sat on the mat."
    longer = [
        "A considerably longer sentence about the many details of quarterly accounting. " * 3,
        "Melanie painted a sunrise over the lake because it reminded her of camping trips.",
        short,
        "Another long text " * 30,
        "Caroline went to the support group.",
    ]
    alone = embedder.embed([short])[0]
    batch = embedder.embed(longer)
    np.testing.assert_allclose(batch[2], alone, atol=1e-4)
    # rows come back in input order
    for i, text in enumerate(longer):
        np.testing.assert_allclose(batch[i], embedder.embed([text])[0], atol=1e-4)


def test_onnx_truncates_at_256_tokens(onnx_embedder: OnnxEmbedder) -> None:
    long = "memory " * 400  # far beyond 256 tokens
    a, b = onnx_embedder.embed([long, long + "and a tail the model never sees"])
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_onnx_is_thread_safe(onnx_embedder: OnnxEmbedder) -> None:
    expected = onnx_embedder.embed(SENTENCES)
    results: list[np.ndarray] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(3):
                results.append(onnx_embedder.embed(SENTENCES))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for got in results:
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_onnx_model_folder(tmp_path: Path, onnx_embedder: OnnxEmbedder) -> None:
    folder = tmp_path / "minilm"
    folder.mkdir()
    shipped = ASSETS / "all-MiniLM-L6-v2"
    for name in ("model-int8.onnx", "tokenizer.json"):
        (folder / name).symlink_to(shipped / name)
    embedder = get_embedder(EmbedderConfig(backend="onnx", model=str(folder)))
    assert embedder.id == "onnx:minilm:int8"
    np.testing.assert_allclose(
        embedder.embed(SENTENCES[:3]), onnx_embedder.embed(SENTENCES[:3]), atol=1e-5
    )
    # a folder with only the int8 file serves quantized=False too, and says so in its id
    assert get_embedder(EmbedderConfig(model=str(folder), quantized=False)).id == (
        "onnx:minilm:int8"
    )


def test_onnx_missing_files_raise_backend_unavailable(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable, match="neither"):
        get_embedder(EmbedderConfig(backend="onnx", model=str(tmp_path)))
    with pytest.raises(BackendUnavailable, match="not-a-model"):
        get_embedder(EmbedderConfig(backend="onnx", model="not-a-model"))
    with pytest.raises(BackendUnavailable, match="fp32"):
        get_embedder(EmbedderConfig(backend="onnx", quantized=False))
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(BackendUnavailable, match="tokenizer"):
        get_embedder(EmbedderConfig(backend="onnx", model=str(tmp_path)))
    (tmp_path / "tokenizer.json").symlink_to(ASSETS / "all-MiniLM-L6-v2" / "tokenizer.json")
    with pytest.raises(BackendUnavailable, match=r"onnxruntime \S+ cannot load"):
        get_embedder(EmbedderConfig(backend="onnx", model=str(tmp_path)))


# --- sentence-transformers -------------------------------------------------------------------


def test_int8_onnx_matches_sentence_transformers(onnx_embedder: OnnxEmbedder) -> None:
    pytest.importorskip("sentence_transformers")
    torch_embedder = get_embedder(EmbedderConfig(backend="sentence-transformers"))
    assert torch_embedder.id == "sentence-transformers:all-MiniLM-L6-v2"
    assert torch_embedder.dim == 384
    reference = torch_embedder.embed(SENTENCES)
    assert reference.shape == (len(SENTENCES), 384) and reference.dtype == np.float32
    cosines = np.sum(onnx_embedder.embed(SENTENCES) * reference, axis=1)
    assert cosines.min() >= 0.98, cosines
    assert torch_embedder.embed([]).shape == (0, 384)


def test_sentence_transformers_missing_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import now fails
    with pytest.raises(BackendUnavailable, match=r"pip install torch==2\.13\.0"):
        get_embedder(EmbedderConfig(backend="sentence-transformers"))


# --- OpenAI-compatible -----------------------------------------------------------------------


class EmbeddingsPeer(ProtocolPeer):
    """Answers ``POST /v1/embeddings`` as OpenAI does, with vectors derived from the text."""

    dim = 8

    def answer(self, payload: dict, reply: Reply) -> str:
        dim = payload.get("dimensions", self.dim)
        texts = payload["input"]
        data = [
            {"object": "embedding", "index": i, "embedding": self.vector(t, dim).tolist()}
            for i, t in enumerate(texts)
        ]
        data.reverse()  # order by "index", not by position
        return json.dumps({"object": "list", "data": data, "model": payload["model"]})

    @staticmethod
    def vector(text: str, dim: int) -> np.ndarray:
        rng = np.random.default_rng(abs(hash(text)) % 2**32)
        return rng.normal(size=dim) * 3  # not unit length: the client normalizes


@pytest.fixture
def peer() -> Iterator[EmbeddingsPeer]:
    server = EmbeddingsPeer()
    yield server
    server.close()


def client(peer: EmbeddingsPeer, **kw: object) -> OpenAIEmbedder:
    # short backoff keeps the retry tests fast
    return OpenAIEmbedder("test-embed", base_url=peer.url, backoff_base_s=0.01, **kw)


def test_openai_success_batches_and_order(peer: EmbeddingsPeer) -> None:
    embedder = client(peer, batch_size=2, api_key="sk-test", dimensions=6)
    texts = ["alpha", "beta", "gamma", "delta", ""]
    vectors = embedder.embed(texts)
    assert vectors.shape == (5, 6) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    expected = EmbeddingsPeer.vector("gamma", 6)
    np.testing.assert_allclose(vectors[2], expected / np.linalg.norm(expected), atol=1e-5)
    assert len(peer.requests) == 3  # 2 + 2 + 1
    first = peer.requests[0]
    assert first["path"] == "/v1/embeddings"
    assert first["auth"] == "Bearer sk-test"
    assert first["model"] == "test-embed" and first["dimensions"] == 6
    assert peer.requests[2]["input"] == [" "]  # empty text sent as a space
    assert embedder.id == "openai:test-embed:6" and embedder.dim == 6


def test_openai_dim_discovered_from_first_response(peer: EmbeddingsPeer) -> None:
    embedder = get_embedder(EmbedderConfig(backend="openai", model="m", base_url=peer.url))
    assert embedder.dim == EmbeddingsPeer.dim
    assert len(peer.requests) == 1 and "dimensions" not in peer.requests[0]
    assert embedder.embed([]).shape == (0, EmbeddingsPeer.dim)
    assert len(peer.requests) == 1


def test_openai_retries_after_500(peer: EmbeddingsPeer) -> None:
    peer.replies = [Reply(500, '{"error": "overloaded"}')]
    vectors = client(peer, max_retries=2).embed(["retry me"])
    assert vectors.shape == (1, EmbeddingsPeer.dim)
    assert len(peer.requests) == 2


def test_openai_429_waits_for_retry_after(peer: EmbeddingsPeer) -> None:
    peer.replies = [Reply(429, '{"error": "slow down"}', {"Retry-After": "0.3"})]
    start = time.monotonic()
    client(peer, max_retries=1).embed(["x"])
    assert time.monotonic() - start >= 0.3
    assert len(peer.requests) == 2


def test_openai_gives_up_after_max_retries(peer: EmbeddingsPeer) -> None:
    peer.replies = [Reply(503, "busy")] * 3
    with pytest.raises(BackendUnavailable, match=r"after 3 attempts.*503"):
        client(peer, max_retries=2).embed(["x"])
    assert len(peer.requests) == 3


def test_openai_400_raises_at_once(peer: EmbeddingsPeer) -> None:
    peer.replies = [Reply(400, '{"error": {"message": "unknown model"}}')]
    with pytest.raises(BackendUnavailable, match=r"400.*unknown model"):
        client(peer, max_retries=3).embed(["x"])
    assert len(peer.requests) == 1


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("this is not json", "non-JSON.*this is not json"),
        ('{"data": []}', "0 items for 1 inputs"),
        ('{"result": "ok"}', "no 'data' list"),
        ('{"data": [{"vector": [1, 2]}]}', "without a numeric 'embedding'"),
        ('{"data": [{"embedding": ["a", "b"]}]}', "without a numeric 'embedding'"),
    ],
)
def test_openai_malformed_response(peer: EmbeddingsPeer, body: str, says: str) -> None:
    peer.replies = [Reply(200, body)]
    with pytest.raises(BackendUnavailable, match=says):
        client(peer, max_retries=3).embed(["x"])
    assert len(peer.requests) == 1  # a malformed answer is not retried


def test_openai_timeout_is_honoured(peer: EmbeddingsPeer) -> None:
    peer.replies = [Reply(delay_s=1.5)]
    start = time.monotonic()
    with pytest.raises(BackendUnavailable, match="timed out"):
        client(peer, timeout_s=0.2, max_retries=0).embed(["slow"])
    assert time.monotonic() - start < 1.0


def test_openai_timeout_then_success(peer: EmbeddingsPeer) -> None:
    peer.replies = [Reply(delay_s=1.0)]
    vectors = client(peer, timeout_s=0.3, max_retries=1).embed(["slow, then fine"])
    assert vectors.shape == (1, EmbeddingsPeer.dim)
    assert len(peer.requests) == 2


def test_openai_unreachable_server() -> None:
    embedder = OpenAIEmbedder("m", base_url="http://127.0.0.1:9/v1", max_retries=0)
    with pytest.raises(BackendUnavailable, match="network error"):
        embedder.embed(["x"])
