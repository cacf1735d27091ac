"""In-process approximate nearest-neighbour index over one memory cube's embeddings.

The SQLite table is the source of truth; a :class:`VectorIndex` is *derived* state. The
store builds it from the rows, persists it next to the database with :meth:`VectorIndex.save`
and, on open, :meth:`VectorIndex.load` s the snapshot and reconciles it with the table
(``keys()`` gives what the snapshot holds, ``meta`` carries whatever marker the store saved
with it). Any failure to load raises :class:`IndexFileError`, whose answer is always the
same: rebuild from the table.

Engine: usearch HNSW (cosine metric). Keys are int64 (SQLite rowids); usearch stores them
as uint64, so they are reinterpreted bit for bit and -1 (uint64 max, usearch's "free slot"
sentinel, which is stored but never returned by a search) is refused.

Storage scalar (``dtype``): vectors are normalised to unit length before insertion; f32
keeps them as given, f16 halves memory with recall@10 unchanged in mnemic.bench.vectors,
i8 quarters it but costs recall (~0.95-0.97 even on the exact path, which is exact over the
quantised vectors only).

Exact path: while the index holds at most ``exact_threshold`` vectors (default 10,000) a
search is a brute-force scan (usearch ``exact=True``, SIMD over the same stored vectors, no
second copy). Measured on this project's 2-core box at 384 dims: ~0.1 ms per 1,000 vectors,
so <= ~1 ms at the threshold, against ~0.3-0.4 ms for HNSW: a negligible cost next to
embedding the query, and the answer is exact instead of ~0.97-0.99 recall. The HNSW graph is
still maintained below the threshold, so crossing it needs no rebuild.

usearch behaviours this class hides (usearch 2.x):

* ``add`` of a key already present raises ``RuntimeError`` ("Duplicate keys not allowed"),
  and a batch holding the same key twice raises *after* inserting part of the batch. So
  :meth:`add` dedupes the batch (last one wins) and removes present keys before inserting.
* ``remove`` only tombstones; the slot is reused by a later ``add`` (memory stays flat
  under churn).
* ``load`` of a file with another dimension silently adopts the file's dimension, and a
  flipped byte inside the vectors is not detected. So snapshots carry our own trailer with
  the dimension, dtype, count and a CRC-32 of everything before it.
* A zero vector has cosine distance 0 to everything; zero and non-finite vectors are refused.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import struct
import threading
import uuid
import zlib
from pathlib import Path
from typing import Any, Literal

import numpy as np
from usearch.index import Index

from mnemic.errors import InvalidInput, StoreError

DType = Literal["f32", "f16", "i8"]

DEFAULT_CONNECTIVITY = 16
"""HNSW M. 32 built ~2.5x slower on 2 cores for < 0.01 recall@10 gain (384-d, 50k)."""
DEFAULT_EXPANSION_ADD = 128
"""efConstruction. 64 built ~2-3x faster but recall@10 was 0.98 at 50k (0.999 with 128)."""
DEFAULT_EXPANSION_SEARCH = 512
"""efSearch. At 1M x 384-d (f32, 2 cores) recall@10 / p50 was 0.87 / 1.2 ms at 64, 0.95 /
1.6 ms at 128, 0.98 / 2.2 ms at 256 and 0.996 / 2.4 ms at 512: recall is worth the ~1 ms."""
DEFAULT_EXACT_THRESHOLD = 10_000
"""At or below this many vectors a search is exact (see the module docstring)."""

_WRITE_CHUNK = 2048  # vectors per lock hold in add(): a bulk build never starves searchers
_SENTINEL_KEY = -1  # uint64 max: usearch's free-slot key

# Snapshot layout: [usearch payload][header JSON][trailer]; the trailer is fixed-size so a
# reader finds it from the end of the file. The CRC covers payload + header JSON.
_MAGIC = b"MNEMVIX1"
_FORMAT_VERSION = 1
_TRAILER = struct.Struct("<8sIIQI")  # magic, format version, header length, payload length, crc
_NATIVE_SCALAR = {"f32": "F32", "f16": "F16", "i8": "I8"}


class IndexFileError(StoreError):
    """A vector index snapshot is missing, corrupt, or was written for another configuration.

    The snapshot is derived data: the remedy is always to rebuild it from the database.
    """


class IndexFileMissing(IndexFileError, FileNotFoundError):
    """The snapshot file does not exist (first open, or it was deleted)."""


def _as_keys(keys: Any) -> np.ndarray:
    """int64 keys -> contiguous uint64 view, validated."""
    arr = np.asarray(keys)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise InvalidInput(f"keys must be a 1-D array of integers, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise InvalidInput(f"keys must be integers, got dtype {arr.dtype}")
    if arr.dtype == np.uint64 and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
        raise InvalidInput("keys must fit in int64")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    if arr.size and bool((arr == _SENTINEL_KEY).any()):
        raise InvalidInput("key -1 is reserved by the vector index")
    return arr.view(np.uint64)


def _from_native_keys(keys: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(keys, dtype=np.uint64).view(np.int64).copy()


class VectorIndex:
    """Cosine-similarity ANN index (usearch HNSW) with int64 keys; upsert, remove, search.

    Thread-safe: every call takes one lock; :meth:`add` takes it per chunk of
    2,048 vectors, so searches interleave with a bulk build (and see a prefix of it).
    """

    def __init__(
        self,
        dim: int,
        *,
        dtype: DType = "f32",
        connectivity: int = DEFAULT_CONNECTIVITY,
        expansion_add: int = DEFAULT_EXPANSION_ADD,
        expansion_search: int = DEFAULT_EXPANSION_SEARCH,
        exact_threshold: int = DEFAULT_EXACT_THRESHOLD,
        threads: int = 0,
    ) -> None:
        """Create an empty index.

        ``dtype`` is the storage scalar: f32 (exact vectors), f16 (half the memory, recall
        unchanged in our bench) or i8 (a quarter, recall measurably lower). ``threads`` is
        the worker count for bulk adds (0 = all cores); a search always uses one thread.
        """
        if int(dim) <= 0:
            raise InvalidInput(f"dim must be positive, got {dim}")
        if dtype not in _NATIVE_SCALAR:
            raise InvalidInput(f"dtype must be one of {sorted(_NATIVE_SCALAR)}, got {dtype!r}")
        if min(connectivity, expansion_add, expansion_search) <= 0 or exact_threshold < 0:
            raise InvalidInput("connectivity/expansion must be positive, exact_threshold >= 0")
        self.dim = int(dim)
        self.dtype: DType = dtype
        self.connectivity = int(connectivity)
        self.expansion_add = int(expansion_add)
        self.exact_threshold = int(exact_threshold)
        self.threads = int(threads)
        self.meta: dict[str, Any] = {}
        """Free-form JSON-able marker saved with the snapshot (e.g. the store's change counter)."""
        self._lock = threading.RLock()
        self._index = Index(
            ndim=self.dim,
            metric="cos",
            dtype=dtype,
            connectivity=self.connectivity,
            expansion_add=self.expansion_add,
            expansion_search=int(expansion_search),
        )

    # -- configuration ------------------------------------------------------------------

    @property
    def expansion_search(self) -> int:
        return int(self._index.expansion_search)

    @expansion_search.setter
    def expansion_search(self, value: int) -> None:
        if int(value) <= 0:
            raise InvalidInput("expansion_search must be positive")
        with self._lock:
            self._index.expansion_search = int(value)  # type: ignore[misc]  # settable at run time

    @property
    def memory_usage(self) -> int:
        """Bytes held by the native index (vectors + graph)."""
        with self._lock:
            return int(self._index.memory_usage)

    # -- writes ---------------------------------------------------------------------------

    def _prepare_vectors(self, vectors: Any, n: int) -> np.ndarray:
        arr = np.asarray(vectors, dtype=np.float32)
        if arr.ndim == 1 and n == 1:
            arr = arr.reshape(1, -1)
        if arr.ndim != 2 or arr.shape != (n, self.dim):
            raise InvalidInput(
                f"vectors must have shape ({n}, {self.dim}) to match the keys, got {arr.shape}"
            )
        if not np.isfinite(arr).all():
            raise InvalidInput("vectors contain NaN or infinity")
        norms = np.linalg.norm(arr, axis=1)
        if n and not (norms > 0).all():
            raise InvalidInput("zero vectors have no direction and cannot be indexed")
        # Unit length: cosine == dot, and f16/i8 quantise a well-scaled vector.
        return np.ascontiguousarray(arr / norms[:, None], dtype=np.float32)

    def add(self, keys: Any, vectors: Any) -> None:
        """Insert or replace: an existing key's vector is replaced, never duplicated.

        ``keys`` is int64-like of shape (n,), ``vectors`` float of shape (n, dim) (or (dim,)
        with a single key). Within one call the last vector given for a key wins. Inputs
        are validated before anything is written.
        """
        ukeys = _as_keys(keys)
        vecs = self._prepare_vectors(vectors, ukeys.size)
        if ukeys.size == 0:
            return
        # Dedupe, keeping the last occurrence: unique() over the reversed array finds it.
        _, rev_first = np.unique(ukeys[::-1], return_index=True)
        if rev_first.size != ukeys.size:
            keep = np.sort(ukeys.size - 1 - rev_first)
            ukeys, vecs = ukeys[keep], vecs[keep]
        for start in range(0, ukeys.size, _WRITE_CHUNK):
            ck = np.ascontiguousarray(ukeys[start : start + _WRITE_CHUNK])
            cv = vecs[start : start + _WRITE_CHUNK]
            with self._lock:
                present = np.atleast_1d(self._index.contains(ck))
                if present.any():
                    self._index.remove(np.ascontiguousarray(ck[present]))
                self._index.add(ck, cv, threads=self.threads)

    def remove(self, keys: Any) -> int:
        """Remove keys; absent keys are ignored. Returns how many were removed."""
        ukeys = _as_keys(keys)
        if ukeys.size == 0:
            return 0
        ukeys = np.unique(ukeys)
        with self._lock:
            present = np.atleast_1d(self._index.contains(ukeys))
            if not present.any():
                return 0
            self._index.remove(np.ascontiguousarray(ukeys[present]))
            return int(present.sum())

    def clear(self) -> None:
        """Remove everything (keeps the configuration)."""
        with self._lock:
            self._index.clear()

    # -- reads ----------------------------------------------------------------------------

    def search(self, query: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest keys to ``query`` and their cosine similarities, best first.

        Returns (int64 keys, float32 similarities), both of length min(k, len(self)). Exact
        while len(self) <= ``exact_threshold``, when k asks for half the index or more, and
        when the graph could not reach k nodes (then the search is redone as a scan).
        """
        q = np.asarray(query, dtype=np.float32)
        if q.shape != (self.dim,):
            raise InvalidInput(f"query must have shape ({self.dim},), got {q.shape}")
        if not np.isfinite(q).all():
            raise InvalidInput("query contains NaN or infinity")
        norm = float(np.linalg.norm(q))
        if norm == 0.0:
            raise InvalidInput("a zero query vector has no direction")
        k = int(k)
        empty = (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32))
        if k <= 0:
            return empty
        q = np.ascontiguousarray(q / norm)
        with self._lock:
            size = len(self._index)
            if size == 0:
                return empty
            want = min(k, size)
            # asking for (nearly) everything: a scan is exact and no slower than the graph
            exact = size <= self.exact_threshold or want >= size // 2
            matches = self._index.search(q, want, exact=exact, threads=1)
            if not exact and len(matches.keys) < want:
                # the graph could not reach enough nodes (possible after many removals):
                # the caller asked for k and k exist, so scan
                matches = self._index.search(q, want, exact=True, threads=1)
            keys = _from_native_keys(matches.keys)
            sims = (1.0 - np.asarray(matches.distances, dtype=np.float32)).astype(np.float32)
        order = np.argsort(-sims, kind="stable")
        return keys[order], sims[order]

    def __len__(self) -> int:
        with self._lock:
            return len(self._index)

    def __contains__(self, key: object) -> bool:
        try:
            ukey = _as_keys(key)
        except InvalidInput:
            return False
        if ukey.size != 1:
            return False
        with self._lock:
            return bool(self._index.contains(int(ukey[0])))

    def keys(self) -> np.ndarray:
        """All keys present (int64, in no particular order), for reconciliation."""
        with self._lock:
            if len(self._index) == 0:
                return np.empty(0, dtype=np.int64)
            native = self._index._compiled.get_keys_in_slice()
        return _from_native_keys(native)

    def get(self, key: int) -> np.ndarray | None:
        """The stored (unit-length, possibly quantised) vector of ``key``, or None."""
        ukey = _as_keys(key)
        with self._lock:
            if not bool(self._index.contains(int(ukey[0]))):
                return None
            vec = self._index.get(int(ukey[0]), dtype="f32")
        return None if vec is None else np.asarray(vec, dtype=np.float32).reshape(self.dim)

    # -- persistence ----------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write a snapshot atomically: temp file in the same directory, fsync, rename.

        Readers of ``path`` see either the previous snapshot or this one, never a torn
        file. Searches wait while the native index is written (the lock is held).
        """
        path = Path(path)
        directory = path.parent if str(path.parent) else Path(".")
        tmp = directory / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            with self._lock:
                self._index.save(os.fspath(tmp))
                header = {
                    "dim": self.dim,
                    "dtype": self.dtype,
                    "metric": "cos",
                    "count": len(self._index),
                    "connectivity": self.connectivity,
                    "expansion_add": self.expansion_add,
                    "expansion_search": self.expansion_search,
                    "exact_threshold": self.exact_threshold,
                    "meta": self.meta,
                }
            header_bytes = json.dumps(header, sort_keys=True).encode()
            with open(tmp, "r+b") as f:
                payload_len = os.fstat(f.fileno()).st_size
                crc = 0
                if payload_len:
                    with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                        crc = zlib.crc32(mm)
                crc = zlib.crc32(header_bytes, crc)
                f.seek(0, os.SEEK_END)
                f.write(header_bytes)
                f.write(_TRAILER.pack(_MAGIC, _FORMAT_VERSION, len(header_bytes), payload_len, crc))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(directory)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        dim: int,
        *,
        dtype: DType | None = None,
        expansion_search: int | None = None,
        exact_threshold: int | None = None,
        threads: int = 0,
    ) -> VectorIndex:
        """Read a snapshot written by :meth:`save`.

        Raises :class:`IndexFileMissing` if there is no file, :class:`IndexFileError` if it
        is truncated, corrupt (CRC mismatch), of another format version, or written with
        another ``dim`` (or ``dtype``, when given). Either way: rebuild from the database.
        Settings not given are taken from the snapshot.
        """
        path = Path(path)
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed in finally; mmap needs the fd
        except FileNotFoundError as e:
            raise IndexFileMissing(f"no vector index snapshot at {path}") from e
        except OSError as e:
            raise IndexFileError(f"cannot read vector index snapshot {path}: {e}") from e

        def bad(reason: str) -> IndexFileError:
            return IndexFileError(f"vector index snapshot {path} is unusable ({reason}); rebuild")

        try:
            size = os.fstat(f.fileno()).st_size
            if size < _TRAILER.size:
                raise bad("file too short")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                magic, version, header_len, payload_len, crc = _TRAILER.unpack_from(
                    mm, size - _TRAILER.size
                )
                if magic != _MAGIC:
                    raise bad("not a mnemic vector index snapshot")
                if version != _FORMAT_VERSION:
                    raise bad(f"format version {version}, expected {_FORMAT_VERSION}")
                if payload_len + header_len + _TRAILER.size != size:
                    raise bad("truncated or padded file")
                body = memoryview(mm)
                try:
                    if zlib.crc32(body[: payload_len + header_len]) != crc:
                        raise bad("checksum mismatch")
                    try:
                        header = json.loads(bytes(body[payload_len : payload_len + header_len]))
                    except ValueError as e:
                        raise bad(f"unreadable header: {e}") from e
                    if header.get("dim") != int(dim):
                        raise bad(f"written for dim {header.get('dim')}, expected {dim}")
                    if header.get("metric") != "cos":
                        raise bad(f"metric {header.get('metric')!r}, expected 'cos'")
                    file_dtype = header.get("dtype")
                    if file_dtype not in _NATIVE_SCALAR:
                        raise bad(f"unknown dtype {file_dtype!r}")
                    if dtype is not None and file_dtype != dtype:
                        raise bad(f"written with dtype {file_dtype}, expected {dtype}")
                    index = cls(
                        int(dim),
                        dtype=file_dtype,
                        connectivity=int(header["connectivity"]),
                        expansion_add=int(header["expansion_add"]),
                        expansion_search=int(
                            expansion_search
                            if expansion_search is not None
                            else header["expansion_search"]
                        ),
                        exact_threshold=int(
                            exact_threshold
                            if exact_threshold is not None
                            else header["exact_threshold"]
                        ),
                        threads=threads,
                    )
                    payload = body[:payload_len]
                    try:
                        native_meta = Index.metadata(payload)
                        if not native_meta or native_meta.get("dimensions") != int(dim):
                            raise bad("native index dimension mismatch")
                        if (
                            str(native_meta.get("kind_scalar")).rsplit(".", 1)[-1].upper()
                            != (_NATIVE_SCALAR[file_dtype])
                        ):
                            raise bad("native index scalar kind mismatch")
                        index._index.load(payload)
                    except IndexFileError:
                        raise
                    except (RuntimeError, ValueError) as e:
                        raise bad(f"usearch could not read it: {e}") from e
                    finally:
                        payload.release()
                    if len(index._index) != int(header["count"]) or index._index.ndim != int(dim):
                        raise bad("entry count or dimension differs from the header")
                    meta = header.get("meta")
                    index.meta = dict(meta) if isinstance(meta, dict) else {}
                    return index
                except KeyError as e:
                    raise bad(f"header lacks {e}") from e
                finally:
                    body.release()
        finally:
            f.close()

    def __repr__(self) -> str:
        return (
            f"VectorIndex(dim={self.dim}, dtype={self.dtype!r}, size={len(self)}, "
            f"connectivity={self.connectivity}, expansion_search={self.expansion_search}, "
            f"exact_threshold={self.exact_threshold})"
        )


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
