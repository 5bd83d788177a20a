"""Item-item collaborative filtering: cosine similarity with shrinkage, top-k neighbours.

sim(i, j) = <x_i, x_j> / (|x_i| |x_j| + shrinkage) over the binary user x item matrix,
keeping the ``neighbours`` most similar items of each item. A user's scores are their
live history (values summed per item) times the similarity matrix, so interactions that
arrive after the fit count at once.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp

from rectune.domain.configuration import ParamValue
from rectune.domain.space import Hyperparameter, ParamType, StrategySpace
from services.scoring.core.data import ScoringData, TrainingData
from services.scoring.core.strategies.base import FittedModel, Scores, ScoringContext, Strategy, history_vector

SPACE = StrategySpace(
    "item_knn",
    "Item-item cosine similarity over who interacted with what; scores sum the similarities to the user's items.",
    (
        Hyperparameter("neighbours", ParamType.INT, 100, "most similar items kept per item", 5, 1000, True),
        Hyperparameter("shrinkage", ParamType.FLOAT, 10.0, "added to the cosine denominator", 0.0, 1000.0),
    ),
)
# Rows of the item x item product computed at once: bounded so that a chunk's co-occurrences
# (at most rows x items) stay within about CHUNK_CELLS, whatever the catalogue size.
CHUNK_CELLS = 2**26
MAX_CHUNK_ROWS = 4096


def cosine_top_k(matrix: sp.csr_matrix, neighbours: int, shrinkage: float) -> sp.csr_matrix:
    """items x items similarities, top ``neighbours`` per row, the diagonal excluded.

    Computed a chunk of items at a time from the sparse co-occurrences alone (a pair of items
    no user shares has similarity 0 and is never a neighbour), so memory stays bounded by the
    chunk and by the result, items x ``neighbours``, at every catalogue size."""
    # users x items and items x users, both CSR: each chunk's product then needs no conversion
    # of the whole matrix (scipy would convert a CSC operand on every call).
    binary = (matrix > 0).astype(np.float32).tocsr()
    n_items = binary.shape[1]
    norms = np.sqrt(np.asarray(binary.multiply(binary).sum(axis=0)).ravel())
    keep = min(neighbours, max(n_items - 1, 1))
    item_major = binary.T.tocsr()
    chunk = max(1, min(MAX_CHUNK_ROWS, CHUNK_CELLS // max(n_items, 1)))
    parts = [
        _top_of_chunk(item_major[start : min(start + chunk, n_items)] @ binary, start, norms, shrinkage, keep)
        for start in range(0, n_items, chunk)
    ]
    rows, cols, vals = (np.concatenate(column) if parts else np.zeros(0) for column in zip(*parts, strict=True))
    similarity = sp.csr_matrix((vals, (rows, cols)), shape=(n_items, n_items))
    similarity.eliminate_zeros()
    return similarity


def _top_of_chunk(
    dots: sp.spmatrix, start: int, norms: np.ndarray, shrinkage: float, keep: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``keep`` largest cosines of each row of a chunk, as (row, column, value) arrays;
    ties broken by the lower column."""
    coo = dots.tocoo()
    rows, cols = coo.row.astype(np.int64) + start, coo.col.astype(np.int64)
    values = coo.data / (norms[rows] * norms[cols] + shrinkage + 1e-12)
    off_diagonal = (rows != cols) & (values > 0)
    rows, cols, values = rows[off_diagonal], cols[off_diagonal], values[off_diagonal]
    order = np.lexsort((cols, -values, rows))
    rows, cols, values = rows[order], cols[order], values[order]
    first_of_row = np.searchsorted(rows, rows, side="left")
    kept = np.arange(len(rows)) - first_of_row < keep
    return rows[kept], cols[kept], values[kept].astype(np.float32)


class ItemKnnModel(FittedModel):
    def __init__(self, similarity: sp.csr_matrix) -> None:
        self.similarity = similarity
        self.n_items = similarity.shape[0]

    def scores(self, context: ScoringContext) -> Scores:
        # Only the history's rows of the similarity matrix are read (the same sums, in the
        # same order, as the whole matrix's product): the cost follows the history and the
        # neighbours, not the catalogue's neighbour lists (10^7 entries at 10^5 items).
        rows, weights = self._history_rows(context)
        if len(rows) == 0:
            return np.zeros(self.n_items)
        return np.asarray(self.similarity[rows].T @ weights, dtype=np.float64).ravel()

    def scores_at(self, context: ScoringContext, items: np.ndarray) -> Scores:
        """Scores of some items from the history's rows alone (calibration: a few items per user)."""
        rows, weights = self._history_rows(context)
        if len(rows) == 0:
            return np.zeros(len(items))
        return np.asarray(self.similarity[rows][:, items].T @ weights, dtype=np.float64).ravel()

    def _history_rows(self, context: ScoringContext) -> tuple[np.ndarray, np.ndarray]:
        """The history's items (in item order) and their summed values: the rows to read."""
        vector = history_vector(context.history, self.n_items)
        rows = np.flatnonzero(vector)
        return rows, vector[rows]

    def nbytes(self) -> int:
        return int(self.similarity.data.nbytes + self.similarity.indices.nbytes + self.similarity.indptr.nbytes)


class ItemKnn(Strategy):
    space = SPACE
    # Its fitted models are plain arrays: kept in the model store (model_store.py).
    stored = True

    def fit(self, data: TrainingData, params: Mapping[str, ParamValue], live: ScoringData | None) -> ItemKnnModel:
        similarity = cosine_top_k(data.user_item_matrix(), int(params["neighbours"]), float(params["shrinkage"]))
        return ItemKnnModel(similarity)
