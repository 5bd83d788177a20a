"""Approximate top-k for the strategies whose scores are dot products (als, content, two_tower).

Exact ranking scores every item: O(items x dimension) per request, about 10 ms at 100,000
items here and growing linearly. Above ``ann_min_items`` (ScoringLimits) a model of these
strategies gets an index, built when it is fitted or loaded, and a request asks the index for
its best candidates instead, leaving out the items the request excludes (the user's history
and ``exclude_item_ids``) while it searches: the exact scan of the head gives them -inf, and
faiss skips them in its cells through a search-time ID selector. So a heavy user with 10^5
seen items costs what anyone costs (over-fetching past every seen item cost 28.8x the echo's
p99 for the 300 most active users at 10^6 items). In the rare case the scanned cells hold
fewer than k items left, the caller ranks exactly. The candidates are scored exactly (the
same dot product as the exact path) and ordered as the exact path orders: score, then item
index.

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
# Past one excluded item per this many in the catalogue, a bitmap of the catalogue (n / 8
# bytes) is cheaper to build than a set of the ids, and duplicates cost nothing.
BITMAP_BREAK_EVEN = 64


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
        # Each item's row in the head, -1 for the rest: excluded items are found in O(excluded).
        self.head_row = np.full(self.n_items, -1, dtype=np.int32)
        self.head_row[self.head] = np.arange(len(self.head))
        tail: Indices = by_norm[head_size:].astype(np.int64)
        self.tail_size = len(tail)
        self.lists = 0
        self.index = None if len(tail) == 0 else self._ivf(items[tail], tail, scan_share)

    def _ivf(self, vectors: Vectors, ids: Indices, scan_share: float) -> Any:
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
        index.add_with_ids(completed, ids)  # the item indices, so that a selector can name them
        index.nprobe = min(self.lists, max(MIN_PROBES, math.ceil(scan_share * self.lists)))
        return index

    def search(self, query: npt.NDArray[np.float32], count: int, excluded: Indices) -> Indices:
        """Candidates for the ``count`` largest inner products among the items not excluded
        (positions in the indexed catalogue): up to ``count`` from the head and as many from
        the rest (the caller scores them)."""
        head_banned, selector = self._exclusions(excluded)
        found = [self._best_of_head(query, count, head_banned)]
        if self.index is not None:
            found.append(self._search_tail(self.index, query, count, selector))
        return np.concatenate(found)

    def _exclusions(self, excluded: Indices) -> tuple[npt.NDArray[np.bool_], _Selector | None]:
        """The head's excluded rows, and faiss's selector of the rest: by a bitmap of the
        catalogue past one excluded item in BITMAP_BREAK_EVEN (a heavy user's long history:
        duplicates cost nothing, and faiss tests a bit per candidate), else by a set of ids."""
        if len(excluded) * BITMAP_BREAK_EVEN > self.n_items:
            banned = np.zeros(self.n_items, dtype=bool)
            banned[excluded] = True
            return banned[self.head], None if self.index is None else faiss_selector_of_bitmap(banned)
        rows = self.head_row[excluded]
        head_banned = np.zeros(len(self.head), dtype=bool)
        head_banned[rows[rows >= 0]] = True
        return head_banned, None if self.index is None or not len(excluded) else faiss_selector_of_ids(excluded)

    def _best_of_head(self, query: npt.NDArray[np.float32], count: int, banned: npt.NDArray[np.bool_]) -> Indices:
        scores = self.head_vectors @ query
        scores[banned] = -np.inf
        take = min(count, len(self.head))
        best = np.argpartition(-scores, take - 1)[:take] if take < len(self.head) else np.arange(len(self.head))
        best = best[np.isfinite(scores[best])]
        found: Indices = self.head[best]
        return found

    def _search_tail(
        self, index: Any, query: npt.NDArray[np.float32], count: int, selector: _Selector | None
    ) -> Indices:
        import faiss

        padded = np.zeros((1, len(query) + 1), dtype=np.float32)
        padded[0, :-1] = query
        parameters = faiss.SearchParametersIVF()
        parameters.nprobe = index.nprobe
        if selector is not None:
            parameters.sel = selector.allowed
        _, ids = index.search(padded, min(count, self.tail_size), params=parameters)
        found: Indices = ids[0][ids[0] >= 0]
        return found


@dataclass(frozen=True)
class _Selector:
    """faiss's selector of the items allowed, with what it points into: faiss keeps only
    pointers, so the arrays and the inner selector must live as long as the search."""

    allowed: Any
    parts: tuple[Any, ...]


def faiss_selector_of_ids(excluded: Indices) -> _Selector:
    import faiss

    ids = np.ascontiguousarray(excluded, dtype=np.int64)
    banned = faiss.IDSelectorBatch(ids)
    return _Selector(faiss.IDSelectorNot(banned), (ids, banned))


def faiss_selector_of_bitmap(banned: npt.NDArray[np.bool_]) -> _Selector:
    import faiss

    bits = np.packbits(banned, bitorder="little")  # faiss reads bit (id & 7) of byte id >> 3
    inner = faiss.IDSelectorBitmap(len(banned), faiss.swig_ptr(bits))
    return _Selector(faiss.IDSelectorNot(inner), (bits, inner))


def _complete_norms(items: Vectors) -> Vectors:
    norms = np.linalg.norm(items, axis=1)
    extra = np.sqrt(np.maximum(float(norms.max(initial=0.0)) ** 2 - norms**2, 0.0)).astype(np.float32)
    return np.ascontiguousarray(np.hstack([items, extra[:, None]]), dtype=np.float32)


def approximate_top_k(
    index: ApproximateIndex, model: DotProductModel, context: ScoringContext, k: int, excluded: Indices
) -> tuple[Indices, npt.NDArray[np.float64]] | None:
    """The k best items by the index (none excluded) with their exact scores, best first;
    None when the model has no query or the scanned cells hold fewer than k items left
    (the caller ranks exactly)."""
    query = model.query(context)
    if query is None:
        return None
    kept = index.search(query, k, excluded)
    if len(kept) < k:
        return None
    vectors = model.item_vectors()
    scores = (vectors[kept] @ query).astype(np.float64) * model.score_scale
    order = np.lexsort((kept, -scores))[:k]
    return kept[order], scores[order]
