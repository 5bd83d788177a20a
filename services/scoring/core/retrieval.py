"""Approximate top-k for the strategies whose scores are dot products (als, content, two_tower).

Exact ranking scores every item: O(items x dimension) per request, about 10 ms at 100,000
items here and growing linearly. Above ``ann_min_items`` (ScoringLimits) a model of these
strategies gets an index, built when it is fitted or loaded, and a request asks the index for
its best candidates instead: over-fetched by the number of items the request excludes (the
user's history and ``exclude_item_ids``), then filtered, and fetched again wider in the rare
case too few survive, so that an excluded or seen item is never returned. The survivors are
scored exactly (the same dot product as the exact path) and ordered as the exact path orders:
score, then item index.

The index is faiss's IVF with inner product over the item vectors reduced to a
nearest-neighbour problem: each item vector x gets one more coordinate sqrt(M^2 - |x|^2)
(M the largest norm) and a query q a 0 there, so that the nearest items by distance are the
items of the largest q.x (maximum inner product search by a norm-completing transform). IVF
partitions the items into about 4 sqrt(items) cells with k-means and scans the cells nearest
to the query: ``scan_share`` of them (10%), and at least 64 (so a small catalogue's index
scans every cell and is exact). Why faiss's IVF and not HNSW (faiss's or hnswlib's): bench/scale.py measured
them here; the README gives the numbers, and hnswlib ships no wheel for this Python (it
would compile at install).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from services.scoring.core.strategies.base import ScoringContext

Vectors = npt.NDArray[np.float32]
Indices = npt.NDArray[np.int64]
# The share of cells scanned per query: at 100,000 items (1,264 cells) on ALS vectors, 5%
# gave recall@10 0.92 and 10% 0.995 (bench/scale.py's data); more, better recall, slower.
DEFAULT_SCAN_SHARE = 0.1
MIN_PROBES = 64
TRAINING_SAMPLE = 100_000  # vectors the k-means of the cells is trained on (faiss: >= 39 per cell)
SEED = 1234


@runtime_checkable
class DotProductModel(Protocol):
    """A fitted model whose scores are ``item_vectors() @ query(context) * score_scale``."""

    n_items: int
    score_scale: float

    def item_vectors(self) -> Vectors:
        """One float32 row per item of the fitted catalogue."""
        ...

    def query(self, context: ScoringContext) -> npt.NDArray[np.float32] | None:
        """The user's vector; None when the model has nothing to go on (every score equal)."""
        ...


@dataclass(frozen=True)
class RetrievalSettings:
    min_items: int = 50_000  # an index for catalogues at least this large; 0: never
    scan_share: float = DEFAULT_SCAN_SHARE

    def wants_index(self, model: object) -> bool:
        return (
            self.min_items > 0
            and isinstance(model, DotProductModel)
            and model.n_items >= self.min_items
            and getattr(model, "select", None) is None  # hybrid re-ranks every score itself
        )


class ApproximateIndex:
    """IVF over norm-completed item vectors (see the module's docstring)."""

    def __init__(self, vectors: Vectors, scan_share: float = DEFAULT_SCAN_SHARE) -> None:
        import faiss  # imported here: only replicas with large catalogues build an index

        items = np.ascontiguousarray(vectors, dtype=np.float32)
        self.n_items, dimension = items.shape
        completed = _complete_norms(items)
        lists = max(1, min(int(4 * math.sqrt(self.n_items)), self.n_items // 39))
        quantizer = faiss.IndexFlatL2(dimension + 1)
        self.index = faiss.IndexIVFFlat(quantizer, dimension + 1, lists)
        self.index.cp.seed = SEED
        sample = completed
        if len(completed) > TRAINING_SAMPLE:
            rows = np.random.default_rng(SEED).choice(len(completed), TRAINING_SAMPLE, replace=False)
            sample = completed[np.sort(rows)]
        self.index.train(sample)
        self.index.add(completed)
        self.index.nprobe = min(lists, max(MIN_PROBES, math.ceil(scan_share * lists)))
        self.lists = lists

    def search(self, query: npt.NDArray[np.float32], count: int) -> Indices:
        """Up to ``count`` candidate items, likeliest first (fewer when the scanned cells hold fewer)."""
        padded = np.zeros((1, len(query) + 1), dtype=np.float32)
        padded[0, :-1] = query
        _, found = self.index.search(padded, min(count, self.n_items))
        row: Indices = found[0].astype(np.int64)
        return row[row >= 0]

    def nbytes(self) -> int:
        return int(self.n_items * (self.index.d * 4 + 8))


def _complete_norms(items: Vectors) -> Vectors:
    norms = np.linalg.norm(items, axis=1)
    extra = np.sqrt(np.maximum(float(norms.max(initial=0.0)) ** 2 - norms**2, 0.0)).astype(np.float32)
    return np.ascontiguousarray(np.hstack([items, extra[:, None]]), dtype=np.float32)


def approximate_top_k(
    index: ApproximateIndex, model: DotProductModel, context: ScoringContext, k: int, excluded: Indices
) -> tuple[Indices, npt.NDArray[np.float64]] | None:
    """The k best items by the index (none excluded) with their exact scores, best first;
    None when the model has no query (the caller ranks exactly)."""
    query = model.query(context)
    if query is None:
        return None
    banned = np.unique(excluded)
    fetch = k + len(banned)
    while True:
        found = index.search(query, fetch)
        kept = found[~np.isin(found, banned)]
        if len(kept) >= k or fetch >= index.n_items:
            break
        fetch = min(fetch * 4, index.n_items)
    vectors = model.item_vectors()
    scores = (vectors[kept] @ query).astype(np.float64) * model.score_scale
    order = np.lexsort((kept, -scores))[:k]
    return kept[order], scores[order]
