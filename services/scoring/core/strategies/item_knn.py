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
from services.scoring.core.strategies.base import Scores, ScoringContext, history_vector

SPACE = StrategySpace(
    "item_knn",
    "Item-item cosine similarity over who interacted with what; scores sum the similarities to the user's items.",
    (
        Hyperparameter("neighbours", ParamType.INT, 100, "most similar items kept per item", 5, 1000, True),
        Hyperparameter("shrinkage", ParamType.FLOAT, 10.0, "added to the cosine denominator", 0.0, 1000.0),
    ),
)
CHUNK = 1024


def cosine_top_k(matrix: sp.csr_matrix, neighbours: int, shrinkage: float) -> sp.csr_matrix:
    """items x items similarities, top ``neighbours`` per row, the diagonal excluded."""
    binary = (matrix > 0).astype(np.float32).tocsc()
    n_items = binary.shape[1]
    norms = np.sqrt(np.asarray(binary.multiply(binary).sum(axis=0)).ravel())
    keep = min(neighbours, max(n_items - 1, 1))
    rows, cols, vals = [], [], []
    item_major = binary.T.tocsr()
    for start in range(0, n_items, CHUNK):
        stop = min(start + CHUNK, n_items)
        dots = (item_major[start:stop] @ binary).toarray()
        dots /= np.outer(norms[start:stop], norms) + shrinkage + 1e-12
        dots[np.arange(stop - start), np.arange(start, stop)] = 0.0
        top = (
            np.argpartition(-dots, keep - 1, axis=1)[:, :keep]
            if keep < n_items
            else np.tile(np.arange(n_items), (stop - start, 1))
        )
        values = np.take_along_axis(dots, top, axis=1)
        rows.append(np.repeat(np.arange(start, stop), top.shape[1]))
        cols.append(top.ravel())
        vals.append(values.ravel())
    similarity = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_items, n_items)
    )
    similarity.eliminate_zeros()
    return similarity


class ItemKnnModel:
    def __init__(self, similarity: sp.csr_matrix) -> None:
        self.similarity = similarity
        self.n_items = similarity.shape[0]

    def scores(self, context: ScoringContext) -> Scores:
        vector = history_vector(context.history, self.n_items)
        return np.asarray(self.similarity.T @ vector, dtype=np.float64).ravel()

    def nbytes(self) -> int:
        return int(self.similarity.data.nbytes + self.similarity.indices.nbytes + self.similarity.indptr.nbytes)


class ItemKnn:
    space = SPACE
    # Its fitted models are plain arrays: kept in the model store (model_store.py).
    stored = True

    def fit(self, data: TrainingData, params: Mapping[str, ParamValue], live: ScoringData | None) -> ItemKnnModel:
        similarity = cosine_top_k(data.user_item_matrix(), int(params["neighbours"]), float(params["shrinkage"]))
        return ItemKnnModel(similarity)
