"""Approximate top-k for the strategies whose scores are dot products (als, content, two_tower).

Exact ranking scores every item: O(items x dimension) per request, about 10 ms at 100,000
items here and growing linearly. Above ``ann_min_items`` (ScoringLimits) a model of these
strategies gets an index, built when it is fitted or loaded, and a request asks the index for
its best candidates instead: over-fetched by the number of items the request excludes (the
user's history and ``exclude_item_ids``), then filtered, and fetched again wider in the rare
case too few survive, so that an excluded or seen item is never returned. The survivors are
scored exactly (the same dot product as the exact path) and ordered as the exact path orders:
score, then item index.

The index splits the items by the norm of their vectors (norm ranging, as in Yan et al.,
"Norm-Ranging LSH for Maximum Inner Product Search", NeurIPS 2018). Collaborative vectors have
very unequal norms (ALS at 10^6 synthetic items: median 0.011, largest 16.7), and the largest
inner products belong mostly to the few items of large norm. So the ``head`` (the 1% of items
of largest norm, at least 10,000) is scanned exactly, a matrix-vector product; the rest go to
faiss's IVF with the inner product reduced to a nearest-neighbour problem: each vector x gets
one more coordinate sqrt(M^2 - |x|^2) (M the largest norm among them) and a query q a 0
there, so that the nearest items by distance are those of the largest q.x. IVF partitions
them into about 4 sqrt(items) cells with k-means and scans the cells nearest to the query:
``scan_share`` of them (10%), at least 64. The candidates of both are scored exactly by the
caller. Measured on those 10^6 items (bench/scale.py's data): IVF alone over all items gave
recall@10 0.45 at 10% of the cells, the head with IVF on the rest 1.0; faiss's HNSW over the
completed vectors gave 0.26 at 10^5 items (docs/scaling.md). hnswlib ships no wheel for this
Python (it would compile at install). A catalogue no larger than the head is scanned whole:
exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from services.scoring.core.strategies.base import DotProductModel, ScoringContext

Vectors = npt.NDArray[np.float32]
Indices = npt.NDArray[np.int64]
# The share of cells scanned per query: at 100,000 items (1,264 cells) on ALS vectors, 5%
# gave recall@10 0.92 and 10% 0.995 (bench/scale.py's data); more, better recall, slower.
DEFAULT_SCAN_SHARE = 0.1
MIN_PROBES = 64
TRAINING_SAMPLE = 200_000  # vectors the k-means of the cells is trained on (faiss: >= 39 per cell)
HEAD_ITEMS = 10_000  # at least this many items of largest norm are scanned exactly
HEAD_SHARE = 0.01
SEED = 1234


@dataclass(frozen=True)
class RetrievalSettings:
    min_items: int = 50_000  # an index for catalogues at least this large; 0: never
    scan_share: float = DEFAULT_SCAN_SHARE

    def wants_index(self, model: object) -> bool:
        return self.min_items > 0 and isinstance(model, DotProductModel) and model.n_items >= self.min_items


class ApproximateIndex:
    """The largest-norm items scanned exactly, IVF over the rest (see the module's docstring)."""

    def __init__(self, vectors: Vectors, scan_share: float = DEFAULT_SCAN_SHARE, head_items: int | None = None) -> None:
        items = np.ascontiguousarray(vectors, dtype=np.float32)
        self.n_items = len(items)
        head_size = head_items if head_items is not None else max(HEAD_ITEMS, int(HEAD_SHARE * self.n_items))
        by_norm = np.argsort(-np.linalg.norm(items, axis=1), kind="stable")
        self.head: Indices = by_norm[:head_size].astype(np.int64)
        self.head_vectors = np.ascontiguousarray(items[self.head])
        self.tail: Indices = by_norm[head_size:].astype(np.int64)
        self.lists = 0
        self.index = None if len(self.tail) == 0 else self._ivf(items[self.tail], scan_share)

    def _ivf(self, vectors: Vectors, scan_share: float) -> Any:
        import faiss  # imported here: only replicas with large catalogues build an index

        completed = _complete_norms(vectors)
        count, dimension = completed.shape
        self.lists = max(1, min(int(4 * math.sqrt(count)), count // 39))
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dimension), dimension, self.lists)
        index.cp.seed = SEED
        sample = completed
        if count > TRAINING_SAMPLE:
            sample = completed[np.sort(np.random.default_rng(SEED).choice(count, TRAINING_SAMPLE, replace=False))]
        index.train(sample)
        index.add(completed)
        index.nprobe = min(self.lists, max(MIN_PROBES, math.ceil(scan_share * self.lists)))
        return index

    def search(self, query: npt.NDArray[np.float32], count: int) -> Indices:
        """Candidates for the ``count`` largest inner products: up to ``count`` from the head
        and as many from the rest (the caller scores them exactly)."""
        head_scores = self.head_vectors @ query
        take = min(count, len(self.head))
        best = np.argpartition(-head_scores, take - 1)[:take] if take < len(self.head) else np.arange(len(self.head))
        found = [self.head[best]]
        if self.index is not None:
            padded = np.zeros((1, len(query) + 1), dtype=np.float32)
            padded[0, :-1] = query
            _, rows = self.index.search(padded, min(count, len(self.tail)))
            rows = rows[0][rows[0] >= 0]
            found.append(self.tail[rows])
        return np.concatenate(found)


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
