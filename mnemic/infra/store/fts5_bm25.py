"""BM25 over a large FTS5 table, summed in Python from what FTS5 answers cheaply.

FTS5's ``bm25()`` counts the rows of every phrase in its query on each call: a walk of the
phrase's whole posting list, ~130 ms for a word in most of a million rows, and a scope's
token is in every row of the scope. On large tables the SQLite store therefore asks
``bm25()`` only about one rare word at a time (a short list to walk, and exactly FTS5's
share of the score: BM25 is a sum over words), and scores common words itself with the same
formula (k1 1.2, b 0.75, an IDF that is not positive clamped to 1e-6, a row's length
counted over all its columns) from:

* the rows a word is in, within a rowid range or list: a match with no auxiliary function
  reads only that part of the posting list;
* a row's length: the ``<table>_docsize`` shadow table (one varint a column);
* the table's row and token counts: its averages record (``<table>_data`` id 1);
* the word's row count from ``fts5vocab``, which the store caches for common words.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Sequence
from typing import Any

import numpy as np

K1, B = 1.2, 0.75
_CHUNK = 900  # values per IN (...) list, under SQLite's 999 variables
COLUMNS = 2  # the store's FTS5 tables: (scope, text)


def varints(data: bytes) -> list[int]:
    """Every SQLite varint in ``data`` (FTS5 writes its counters with them)."""
    out, i = [], 0
    while i < len(data):
        value = 0
        for j in range(9):
            byte = data[i + j]
            if j == 8:
                value = (value << 8) | byte
                i += 9
                break
            value = (value << 7) | (byte & 0x7F)
            if byte < 0x80:
                i += j + 1
                break
        out.append(value)
    return out


def averages(db: sqlite3.Connection, table: str) -> tuple[int, float] | None:
    """The table's row count and average row length in tokens (all columns), as bm25()
    reads them; None for an empty table."""
    row = db.execute(f"SELECT block FROM {table}_data WHERE id = 1").fetchone()
    if row is None:
        return None
    counts = varints(row[0])
    if not counts:  # an empty block: a table that never held a row
        return None
    rows, tokens = counts[0], sum(counts[1:])
    return (rows, tokens / rows) if rows else None


def sum_by_row(ids: list[np.ndarray], values: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Distinct row ids and the sum of their values over every (ids, values) pair."""
    if not ids:
        return np.empty(0, dtype=np.int64), np.empty(0)
    rows, where = np.unique(np.concatenate(ids), return_inverse=True)
    return rows, np.bincount(where, weights=np.concatenate(values), minlength=len(rows))


def idf(rows: int, df: int) -> float:
    value = math.log((rows - df + 0.5) / (df + 0.5))
    return value if value > 0 else 1e-6


def matching_rows(
    db: sqlite3.Connection,
    table: str,
    match: str,
    *,
    above: int = -1,
    rowids: Sequence[int] | None = None,
) -> list[int]:
    """The rowids FTS5 matches above a rowid, or among ``rowids``; no auxiliary function
    runs, so FTS5 reads only that part of the posting lists."""
    sql = f"SELECT rowid FROM {table} WHERE {table} MATCH ?"
    if rowids is None:
        return [r[0] for r in db.execute(sql + " AND rowid > ?", (match, above))]
    out: list[int] = []
    for start in range(0, len(rowids), _CHUNK):
        chunk = rowids[start : start + _CHUNK]
        marks = ", ".join("?" for _ in chunk)
        out.extend(r[0] for r in db.execute(sql + f" AND rowid IN ({marks})", (match, *chunk)))
    return out


def row_lengths(db: sqlite3.Connection, table: str, rowids: np.ndarray) -> np.ndarray:
    """Each row's length in tokens, all columns (FTS5's docsize table), for sorted
    ``rowids``: one range read when they are dense in it, IN lists otherwise."""
    sizes: dict[int, bytes] = {}
    low, high = int(rowids[0]), int(rowids[-1])
    if high - low < 4 * len(rowids):
        # the range in one row of text: ids, and each row's sizes in hex; when every
        # column's size is one byte (under 128 tokens) they are summed in numpy
        count, ids, hexes = db.execute(
            "SELECT count(*), group_concat(id, ','), group_concat(hex(sz), '') FROM "
            f"(SELECT id, sz FROM {table}_docsize WHERE id BETWEEN ? AND ? ORDER BY id)",
            (low, high),
        ).fetchone()
        if count and len(hexes) == 2 * COLUMNS * count:
            known = np.array(ids.split(","), dtype=np.int64)
            per_row = np.frombuffer(bytes.fromhex(hexes), dtype=np.uint8).reshape(-1, COLUMNS)
            at = np.searchsorted(known, rowids)
            if np.all(at < len(known)) and np.array_equal(known[np.minimum(at, count - 1)], rowids):
                return per_row.sum(axis=1)[at].astype(np.float64)
        sizes.update(
            db.execute(f"SELECT id, sz FROM {table}_docsize WHERE id BETWEEN ? AND ?", (low, high))
        )
    else:
        ids = rowids.tolist()
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            marks = ", ".join("?" for _ in chunk)
            sizes.update(
                db.execute(f"SELECT id, sz FROM {table}_docsize WHERE id IN ({marks})", chunk)
            )
    # one byte a column below 128 tokens: then the varints are the bytes
    return np.array(
        [
            sum(size) if max(size, default=0) < 0x80 else sum(varints(size))
            for size in map(sizes.__getitem__, rowids.tolist())
        ],
        dtype=np.float64,
    )


def term_score(weight: Any, tf: Any, length: Any, avgdl: float) -> Any:
    """One term's share of a row's BM25 score (``weight`` is its IDF); numbers or arrays."""
    return weight * tf * (K1 + 1) / (tf + K1 * (1 - B + B * length / avgdl))
