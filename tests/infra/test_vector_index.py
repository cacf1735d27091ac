"""VectorIndex: exact below the threshold, HNSW recall above it, upsert/remove, snapshots."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from mnemic.errors import InvalidInput
from mnemic.infra.store.vector_index import IndexFileError, IndexFileMissing, VectorIndex

DIM = 32


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def clustered(n: int, dim: int = DIM, centers: int = 50, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = unit(rng.standard_normal((centers, dim)))
    x = c[rng.integers(0, centers, n)] + 0.35 * rng.standard_normal((n, dim)) / np.sqrt(dim)
    return unit(x)


def exact_topk(data: np.ndarray, keys: np.ndarray, q: np.ndarray, k: int):
    sims = data @ unit(q)
    order = np.argsort(-sims, kind="stable")[:k]
    return keys[order], sims[order]


def test_exact_below_threshold_matches_numpy():
    rng = np.random.default_rng(1)
    data = unit(rng.standard_normal((2000, DIM)))
    keys = rng.permutation(10**6)[:2000].astype(np.int64)
    ix = VectorIndex(DIM, exact_threshold=5000)
    ix.add(keys, data)
    for q in rng.standard_normal((20, DIM)):
        got_k, got_s = ix.search(q, 10)
        want_k, want_s = exact_topk(data, keys, q, 10)
        assert got_k.dtype == np.int64 and got_s.dtype == np.float32
        np.testing.assert_array_equal(got_k, want_k)
        np.testing.assert_allclose(got_s, want_s, atol=1e-5)
        assert np.all(np.diff(got_s) <= 0)


@pytest.mark.parametrize("ef", [None, 64])
def test_hnsw_recall_at_10_above_threshold(ef):
    data = clustered(4000, seed=2)
    keys = np.arange(4000, dtype=np.int64)
    ix = VectorIndex(DIM, exact_threshold=100, threads=1)  # HNSW path, deterministic build
    if ef is not None:  # a small beam: the graph itself must be good, not the search width
        ix.expansion_search = ef
    ix.add(keys, data)
    queries = clustered(100, seed=3)
    hits = 0
    for q in queries:
        got, sims = ix.search(q, 10)
        want, _ = exact_topk(data, keys, q, 10)
        hits += len(set(got.tolist()) & set(want.tolist()))
        assert np.all(np.diff(sims) <= 1e-6)
    assert hits / (10 * len(queries)) >= 0.95


def test_upsert_replaces_without_duplicates():
    rng = np.random.default_rng(4)
    data = unit(rng.standard_normal((300, DIM)))
    ix = VectorIndex(DIM)
    ix.add(np.arange(300), data)
    new = unit(rng.standard_normal(DIM))
    ix.add([7], new[None, :])
    assert len(ix) == 300
    assert sorted(ix.keys().tolist()) == list(range(300))
    keys, sims = ix.search(new, 3)
    assert keys[0] == 7 and sims[0] == pytest.approx(1.0, abs=1e-5)
    # the old vector of key 7 no longer answers for it
    keys, _ = ix.search(data[7], 1)
    assert keys[0] != 7 or np.allclose(data[7], new)
    np.testing.assert_allclose(ix.get(7), new, atol=1e-6)
    # a batch naming a key twice: the last vector wins, one entry
    a, b = unit(rng.standard_normal((2, DIM)))
    ix.add([1000, 1000], np.stack([a, b]))
    assert len(ix) == 301
    np.testing.assert_allclose(ix.get(1000), b, atol=1e-6)


def test_upsert_on_hnsw_path_and_churn():
    data = clustered(1500, seed=5)
    ix = VectorIndex(DIM, exact_threshold=0)
    ix.add(np.arange(1500), data)
    for _ in range(3):  # churn: every key replaced, size stays put
        ix.add(np.arange(1500), data[::-1])
    assert len(ix) == 1500
    keys, sims = ix.search(data[0], 1)
    assert keys[0] == 1499 and sims[0] == pytest.approx(1.0, abs=1e-4)


def test_asking_for_every_vector_returns_every_vector_on_the_hnsw_path():
    """After heavy churn an HNSW graph may not reach every node; a search for all of them
    (or for more than half) scans instead, so nothing is silently left out. The crash test
    found this at 13,392 items: one was unreachable."""
    data = clustered(3000, seed=9)
    ix = VectorIndex(DIM, exact_threshold=0)
    ix.add(np.arange(3000), data)
    rng = np.random.default_rng(1)
    for _ in range(5):  # churn: remove and re-add a random third, with new vectors
        gone = rng.choice(3000, 1000, replace=False)
        ix.remove(gone)
        ix.add(gone, clustered(1000, seed=int(rng.integers(1000))))
    for k in (3000, 5000, 1600):
        keys, _ = ix.search(data[0], k)
        assert len(keys) == min(k, 3000) and len(set(keys.tolist())) == len(keys)


def test_remove_removes():
    rng = np.random.default_rng(6)
    data = unit(rng.standard_normal((100, DIM)))
    ix = VectorIndex(DIM)
    ix.add(np.arange(100), data)
    assert ix.remove([3, 4, 4, 999]) == 2
    assert len(ix) == 98
    assert 3 not in ix and 4 not in ix and 5 in ix
    keys, _ = ix.search(data[3], 100)
    assert 3 not in keys.tolist() and len(keys) == 98
    assert ix.remove([]) == 0
    assert ix.get(3) is None
    ix.add([3], data[3])  # re-adding after removal works
    assert ix.search(data[3], 1)[0][0] == 3


def test_edge_cases():
    ix = VectorIndex(DIM)
    k, s = ix.search(np.ones(DIM), 5)
    assert k.shape == (0,) and s.shape == (0,)
    ix.add([-5, 2**62], unit(np.eye(DIM)[:2]))
    keys, _ = ix.search(np.eye(DIM)[0], 50)  # k larger than size
    assert keys.tolist() == [-5, 2**62]
    assert ix.search(np.eye(DIM)[0], 0)[0].size == 0
    assert -5 in ix and "x" not in ix
    with pytest.raises(InvalidInput):
        ix.add([-1], np.ones((1, DIM)))  # usearch's sentinel key
    with pytest.raises(InvalidInput):
        ix.add([1], np.zeros((1, DIM)))
    with pytest.raises(InvalidInput):
        ix.add([1, 2], np.ones((1, DIM)))
    with pytest.raises(InvalidInput):
        ix.add([1], np.full((1, DIM), np.nan))
    with pytest.raises(InvalidInput):
        ix.search(np.ones(DIM + 1), 3)
    assert len(ix) == 2


@pytest.mark.parametrize("dtype", ["f32", "f16", "i8"])
def test_save_load_round_trip(tmp_path, dtype):
    data = clustered(3000, seed=7)
    keys = np.arange(10, 3010, dtype=np.int64)
    ix = VectorIndex(DIM, dtype=dtype, exact_threshold=500, expansion_search=80)
    ix.add(keys, data)
    ix.remove([10, 11])
    ix.meta = {"generation": 42}
    path = tmp_path / "cube.vix"
    ix.save(path)
    ix.save(path)  # overwriting an existing snapshot is fine
    assert os.listdir(tmp_path) == ["cube.vix"]  # no temp file left behind
    back = VectorIndex.load(path, DIM)
    assert back.dtype == dtype and back.meta == {"generation": 42}
    assert back.exact_threshold == 500 and back.expansion_search == 80
    assert len(back) == len(ix) == 2998
    assert sorted(back.keys().tolist()) == sorted(ix.keys().tolist())
    for q in clustered(5, seed=8):
        k1, s1 = ix.search(q, 10)
        k2, s2 = back.search(q, 10)
        np.testing.assert_array_equal(k1, k2)
        np.testing.assert_allclose(s1, s2, atol=1e-6)
    assert VectorIndex.load(path, DIM, exact_threshold=10).exact_threshold == 10


def test_empty_round_trip(tmp_path):
    VectorIndex(DIM).save(tmp_path / "e.vix")
    back = VectorIndex.load(tmp_path / "e.vix", DIM)
    assert len(back) == 0 and back.keys().shape == (0,)


def test_corrupt_or_mismatched_file_raises(tmp_path):
    ix = VectorIndex(DIM)
    ix.add(np.arange(200), clustered(200, seed=9))
    good = tmp_path / "good.vix"
    ix.save(good)
    blob = good.read_bytes()

    with pytest.raises(IndexFileMissing):
        VectorIndex.load(tmp_path / "absent.vix", DIM)
    assert issubclass(IndexFileMissing, IndexFileError)

    cases = {
        "flipped": blob[:1000] + bytes([blob[1000] ^ 0xFF]) + blob[1001:],
        "truncated": blob[: len(blob) // 2],
        "garbage": b"not an index" * 100,
        "empty": b"",
        "padded": blob + b"\0" * 16,
    }
    for name, content in cases.items():
        p = tmp_path / f"{name}.vix"
        p.write_bytes(content)
        with pytest.raises(IndexFileError):
            VectorIndex.load(p, DIM)
    with pytest.raises(IndexFileError, match="dim"):
        VectorIndex.load(good, DIM * 2)
    with pytest.raises(IndexFileError, match="dtype"):
        VectorIndex.load(good, DIM, dtype="i8")


def test_concurrent_add_and_search():
    data = clustered(6000, seed=10)
    ix = VectorIndex(DIM, exact_threshold=1000)
    ix.add(np.arange(500), data[:500])
    errors: list[BaseException] = []
    done = threading.Event()

    def writer():
        try:
            for start in range(500, 6000, 250):
                ix.add(np.arange(start, start + 250), data[start : start + 250])
                ix.remove([start - 1])
                ix.add([start - 1], data[start - 1])  # upsert churn while searching
        except BaseException as e:
            errors.append(e)
        finally:
            done.set()

    def reader():
        try:
            rng = np.random.default_rng(11)
            while not done.is_set():
                keys, sims = ix.search(data[rng.integers(0, 500)], 10)
                assert len(keys) == len(sims) <= 10
                ix.keys()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(ix) == 6000
