"""Rerankers: the cross-encoder on a BERT of real architecture with random weights (saved to a
folder and loaded by the real loading code), and the HTTP client against a protocol peer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mnemic.config import RerankerConfig
from mnemic.errors import BackendUnavailable, ConfigError
from mnemic.infra.http import HTTPRejected
from mnemic.infra.rerank import get_reranker
from mnemic.infra.rerank.http import HttpReranker
from tests.infra.protocol_peer import ProtocolPeer, Reply

TEXTS = ["Ana: I planted roses by the fence.", "Ben: I like jazz.", "Ben: cold tea"]


SMALL = {  # a BERT of real architecture, small enough to build in a test
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 128,
}


def tiny_cross_encoder(folder: Path, labels: int) -> Path:
    """A 2-layer BERT sequence classifier, random weights, and the shipped word pieces."""
    from mnemic.infra.hf_models import random_cross_encoder

    return random_cross_encoder(folder, SMALL, labels=labels)


@pytest.mark.parametrize("labels", [1, 2])
def test_cross_encoder_scores_each_pair_read_together(tmp_path: Path, labels: int) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = tiny_cross_encoder(tmp_path / "ce", labels)
    reranker = get_reranker(RerankerConfig(model=str(folder), batch_size=2))
    assert reranker.id == f"cross-encoder:{folder}"
    query = "What did Ana plant?"
    scores = reranker.score(query, TEXTS)
    assert scores.shape == (3,) and scores.dtype == np.float32
    # batches (padded) and single pairs agree, and so does the model read directly
    alone = np.concatenate([reranker.score(query, [t]) for t in TEXTS])
    np.testing.assert_allclose(scores, alone, atol=1e-5)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        logits = model(**tokenizer(query, TEXTS[1], return_tensors="pt")).logits[0]
    expected = logits[0] if labels == 1 else logits[1] - logits[0]  # log-odds of "relevant"
    assert scores[1] == pytest.approx(float(expected), abs=1e-5)
    assert reranker.score(query, []).shape == (0,)
    # the same settings give the model already loaded
    assert get_reranker(RerankerConfig(model=str(folder), batch_size=2)) is reranker


def test_cross_encoder_never_downloads_and_says_what_to_give(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable, match="nothing is downloaded"):
        get_reranker(RerankerConfig(model=str(tmp_path / "missing")))
    with pytest.raises(BackendUnavailable, match="nothing is downloaded"):
        get_reranker(RerankerConfig(model="some-org/not-in-the-cache"))


def test_a_reranker_without_a_model_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"retrieval\.reranker\.model"):
        get_reranker(RerankerConfig())


# --- HTTP /rerank ----------------------------------------------------------------------------


class RerankPeer(ProtocolPeer):
    """Answers ``POST /v1/rerank`` in the Cohere/Jina form; its scores count the query's words
    in each document (a protocol peer, not a model), best first as servers send them."""

    def answer(self, payload: dict, reply: Reply) -> str:
        words = set(payload["query"].lower().split())
        results = [
            {"index": i, "relevance_score": float(len(words & set(d.lower().split())))}
            for i, d in enumerate(payload["documents"])
        ]
        results.sort(key=lambda r: -r["relevance_score"])
        return json.dumps({"id": "r1", "results": results[: payload["top_n"]]})


@pytest.fixture
def peer() -> Iterator[RerankPeer]:
    server = RerankPeer()
    yield server
    server.close()


def client(peer: RerankPeer, **kw: object) -> HttpReranker:
    return HttpReranker("test-rerank", base_url=peer.url, backoff_base_s=0.01, **kw)


def test_http_scores_in_the_order_of_the_documents(peer: RerankPeer) -> None:
    reranker = client(peer, api_key="sk-test")
    scores = reranker.score("cold tea please", ["jazz", "cold tea", "tea"])
    assert scores.tolist() == [0.0, 2.0, 1.0]
    sent = peer.requests[0]
    assert sent["path"] == "/v1/rerank" and sent["auth"] == "Bearer sk-test"
    assert sent["documents"] == ["jazz", "cold tea", "tea"] and sent["top_n"] == 3
    assert reranker.score("q", []).shape == (0,) and len(peer.requests) == 1


def test_http_retries_a_500_and_reads_a_bare_list(peer: RerankPeer) -> None:
    peer.replies = [
        Reply(status=500),
        Reply(body='[{"index": 1, "score": 0.5}, {"index": 0, "score": 0.25}]'),
    ]
    assert client(peer).score("q", ["a", "b"]).tolist() == [0.25, 0.5]
    assert len(peer.requests) == 2


def test_http_400_fails_at_once(peer: RerankPeer) -> None:
    peer.replies = [Reply(status=400, body='{"error": "no such model"}')]
    with pytest.raises(HTTPRejected, match="no such model"):
        client(peer).score("q", ["a"])
    assert len(peer.requests) == 1


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("not json", "non-JSON"),
        ('{"data": []}', "without a 'results' list"),
        ('{"results": [{"index": 0, "relevance_score": 1.0}]}', "scored 1 of 2"),
        (
            '{"results": [{"index": 0, "relevance_score": 1}, {"index": 0, "relevance_score": 2}]}',
            "new document index",
        ),
        ('{"results": [{"index": 5, "relevance_score": 1.0}]}', "new document index"),
        ('{"results": [{"index": 0, "relevance_score": "high"}]}', "finite score"),
    ],
)
def test_http_malformed_answers_say_what_came_back(peer: RerankPeer, body: str, says: str) -> None:
    peer.replies = [Reply(body=body)]
    with pytest.raises(BackendUnavailable, match=says):
        client(peer).score("q", ["a", "b"])


def test_the_bench_model_has_the_shipped_vocabulary_and_loads_as_a_reranker(
    tmp_path: Path,
) -> None:
    from mnemic.infra.hf_models import random_cross_encoder

    folder = random_cross_encoder(tmp_path / "bench-ce", SMALL)
    reranker = get_reranker(RerankerConfig(model=str(folder)))
    pair = reranker._tokenizer("what did ana plant?", "Ana: roses.")  # type: ignore[attr-defined]
    ids = pair["input_ids"]
    # [CLS] query [SEP] memory [SEP] in BERT's uncased word pieces
    assert ids[0] == 101 and ids.count(102) == 2 and ids[-1] == 102
    assert set(pair["token_type_ids"]) == {0, 1}
    assert reranker.score("what did ana plant?", TEXTS).shape == (3,)
