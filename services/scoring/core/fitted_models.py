"""The fitted models a replica serves, and what it knows of each: the byte-bounded cache, the
model store shared with restarts and other replicas, the approximate index of a large
catalogue's dot-product model, how often each was served since its fit, and its refits'
failures (for freshness and for choosing which due model to refit first)."""

from __future__ import annotations

import threading
import time
from collections import Counter

import structlog

from services.scoring.core.fitting import Fitted, FittedCache
from services.scoring.core.freshness import Freshness
from services.scoring.core.model_store import ModelStore
from services.scoring.core.retrieval import ApproximateIndex, RetrievalSettings
from services.scoring.core.strategies.base import DotProductModel

log = structlog.get_logger(__name__)


class FittedModels:
    def __init__(self, cache_bytes: int, retrieval: RetrievalSettings, store: ModelStore | None) -> None:
        self.cache = FittedCache(cache_bytes)
        self.store = store  # None: every replica fits for itself
        self.retrieval = retrieval
        # Approximate indexes by configuration hash, each with the fitted model it indexes (a
        # refit's model replaces both together).
        self._indexes: dict[str, tuple[Fitted, ApproximateIndex]] = {}
        self._indexes_lock = threading.Lock()
        self._served: Counter[str] = Counter()  # RankItems answered, by configuration hash
        # The served count when each model was fitted: refits go to the model most served
        # since its own fit, so that one always-due, always-busy model cannot starve the rest.
        self._served_at_fit: dict[str, int] = {}
        self._served_lock = threading.Lock()
        self._refit_failures: Counter[str] = Counter()
        self._failed_at: dict[str, int] = {}  # hash -> interactions in the data its last refit failed on
        self._failures_lock = threading.Lock()

    def get(self, key: str) -> Fitted | None:
        return self.cache.get(key)

    def entries(self) -> list[Fitted]:
        return self.cache.entries()

    def add(self, fitted: Fitted) -> None:
        """A model just fitted here: indexed, cached, and its served count starts again."""
        self._index(fitted)
        self.cache.put(fitted)
        key = fitted.configuration.hash
        with self._served_lock:
            self._served_at_fit[key] = self._served[key]

    def load(self, key: str, n_items: int, after_watermark: int = -1) -> Fitted | None:
        """The newest stored model fitted on more than ``after_watermark`` interactions, indexed
        and cached; None when there is none (or no store)."""
        if self.store is None:
            return None
        stored = self.store.newest(key, n_items, after_watermark)
        if stored is not None:
            self._index(stored)
            self.cache.put(stored)
            log.info("model_loaded", configuration_hash=key, watermark=stored.watermark)
        return stored

    def _index(self, fitted: Fitted) -> None:
        """Build the approximate index of a large catalogue's dot-product model (at fit or load
        time, before the model serves), and drop those of models no longer cached."""
        model = fitted.model
        if not self.retrieval.wants_index(model):
            return
        assert isinstance(model, DotProductModel)
        started = time.perf_counter()
        index = ApproximateIndex(model.item_vectors(), self.retrieval.scan_share)
        cached = {id(entry) for entry in self.cache.entries()}
        with self._indexes_lock:
            self._indexes = {k: v for k, v in self._indexes.items() if id(v[0]) in cached}
            self._indexes[fitted.configuration.hash] = (fitted, index)
        log.info(
            "index_built",
            configuration_hash=fitted.configuration.hash,
            items=index.n_items,
            cells=index.lists,
            seconds=round(time.perf_counter() - started, 2),
        )

    def index_of(self, fitted: Fitted) -> ApproximateIndex | None:
        """The index built for exactly this fitted model, if any."""
        entry = self._indexes.get(fitted.configuration.hash)
        return entry[1] if entry is not None and entry[0] is fitted else None

    # -- what each model served, and its refits ---------------------------------------------------

    def count_served(self, key: str) -> None:
        with self._served_lock:
            self._served[key] += 1

    def served_since_fit(self, key: str) -> int:
        with self._served_lock:
            return self._served[key] - self._served_at_fit.get(key, 0)

    def refit_failed(self, key: str, interactions: int) -> None:
        with self._failures_lock:
            self._refit_failures[key] += 1
            self._failed_at[key] = interactions

    def refit_succeeded(self, key: str) -> None:
        with self._failures_lock:
            self._failed_at.pop(key, None)

    def failed_on(self, key: str, interactions: int) -> bool:
        """Whether the last refit of ``key`` failed on exactly this much data (wait for more)."""
        with self._failures_lock:
            return self._failed_at.get(key) == interactions

    def freshness(self, fitted: Fitted, interactions_now: int, now: float) -> Freshness:
        key = fitted.configuration.hash
        with self._served_lock, self._failures_lock:
            served, failures = self._served[key], self._refit_failures[key]
        return Freshness(
            configuration_hash=key,
            strategy=fitted.configuration.strategy,
            fitted_at=fitted.fitted_at,
            interactions_at_fit=fitted.watermark,
            interactions_since_fit=max(0, interactions_now - fitted.watermark),
            age_seconds=max(0.0, now - fitted.fitted_at),
            refits=fitted.refits,
            refit_failures=failures,
            served=served,
        )
