"""BM25 over a small FTS5 table from posting lists held in memory.

On a small table (under ``FTS_PRUNE_ROWS`` rows) FTS5's own ``bm25()`` ranks a query in one
call, but it re-reads every matching row's position lists for each query: 1.5-4 ms a query
on the LoCoMo store (3,700 rows), twice a search (bm25, feedback) and for two tables each.
A word's posting list, (row, count) pairs, is what that work recomputes; here it is read
once from ``fts5vocab`` and kept until the next commit (the store's generation), so a query
of known words costs a few numpy sums.

The score is FTS5's ``bm25()`` as the store asks for it (``bm25(table, 0.0, 1.0)``, see
fts5_bm25): for each query word, the IDF of the rows that hold it in any column, times its
count in the text column under BM25's saturation, with a row's length over all its columns.
A word that FTS5 splits into several tokens is a phrase to FTS5: such a query is left to
FTS5 (``None``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import numpy as np

from mnemic.infra.store import fts5_bm25

MAX_LISTS = 50_000  # posting lists kept per table before the cache starts over


class SmallTablePostings:
    """Posting lists of an FTS5 table's words, valid for one store generation.

    Two levels: a word's rows in the whole table (and so its IDF), read from
    ``temp.mnemic_<table>_i``, an ``fts5vocab(..., 'instance')`` table the store creates;
    and, per scope, its rows there with their BM25 shares, which only change with the
    table. Not thread-safe: the store calls it under its lock, in one read snapshot.
    """

    def __init__(self, table: str, text_column: str) -> None:
        self.table, self.text_column = table, text_column
        self._generation: object = None
        self._lists: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}
        self._shares: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        self._scopes: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def _check(self, generation: object) -> None:
        if generation != self._generation or len(self._shares) > MAX_LISTS:
            self._lists.clear()
            self._shares.clear()
            self._scopes.clear()
            self._generation = generation

    def _postings(self, db: sqlite3.Connection, token: str) -> tuple[np.ndarray, np.ndarray, int]:
        """(rows holding ``token`` in the text column, sorted; its count in each; the number
        of rows holding it in any column, as FTS5 counts them for the IDF)."""
        known = self._lists.get(token)
        if known is None:
            rows = db.execute(
                f"SELECT doc, col = ?, count(*) FROM temp.mnemic_{self.table}_i "
                "WHERE term = ? GROUP BY doc, col ORDER BY doc",
                (self.text_column, token),
            ).fetchall()
            found = np.array(rows, dtype=np.int64).reshape(-1, 3)
            in_text = found[found[:, 1] == 1]
            known = (
                in_text[:, 0].copy(),
                in_text[:, 2].astype(np.float64),
                len(np.unique(found[:, 0])),
            )
            self._lists[token] = known
        return known

    def _scope(self, db: sqlite3.Connection, scope: str) -> tuple[np.ndarray, np.ndarray]:
        """The scope's rows, sorted, and their lengths in tokens (all columns)."""
        known = self._scopes.get(scope)
        if known is None:
            rows = np.array(
                sorted(fts5_bm25.matching_rows(db, self.table, f'scope : "{scope}"')),
                dtype=np.int64,
            )
            lengths = fts5_bm25.row_lengths(db, self.table, rows) if len(rows) else np.empty(0)
            known = (rows, lengths)
            self._scopes[scope] = known
        return known

    def _share(
        self, db: sqlite3.Connection, scope: str, token: str, stats: tuple[int, float]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The scope's rows holding ``token`` and the token's BM25 share of their scores."""
        known = self._shares.get((scope, token))
        if known is None:
            total, avgdl = stats
            rows, counts, df = self._postings(db, token)
            scope_rows, lengths = self._scope(db, scope)
            at = np.searchsorted(scope_rows, rows)
            inside = at < len(scope_rows)
            inside[inside] = scope_rows[at[inside]] == rows[inside]
            weight = fts5_bm25.idf(total, min(df, total))
            known = (
                rows[inside],
                fts5_bm25.term_score(weight, counts[inside], lengths[at[inside]], avgdl),
            )
            self._shares[(scope, token)] = known
        return known

    def rank(
        self,
        db: sqlite3.Connection,
        generation: object,
        scope: str,
        tokens_of: Sequence[Sequence[str]],
        stats: tuple[int, float],
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The scope's rows that hold a query word, best first, and their BM25 scores;
        ``tokens_of`` holds FTS5's tokens of each query word, ``stats`` the table's row count
        and average row length. None when a word is a phrase to FTS5."""
        if any(len(tokens) != 1 for tokens in tokens_of):
            return None
        self._check(generation)
        ids: list[np.ndarray] = []
        shares: list[np.ndarray] = []
        for (token,) in tokens_of:  # a word twice in the query counts twice, as in FTS5
            rows, share = self._share(db, scope, token, stats)
            if len(rows):
                ids.append(rows)
                shares.append(share)
        rows, sums = fts5_bm25.sum_by_row(ids, shares)
        order = np.argsort(-sums, kind="stable")
        return rows[order], sums[order]
