"""Models fitted offline, remembered by the training data they saw and their configuration.

A screen fits each configuration on the training part of a holdout split that is the same
from one screen to the next while the data does not change; a blend's members are
configurations screened before it. Remembering those fits lets a blend reuse its members'
models, and a configuration screened twice (at two user fractions of one training budget)
fit once. Only frozen fits (no live data) are remembered: a serving fit reads the growing
store and is cached by FittedModels instead. The memory held is bounded; the least recently
used model goes first, and a model larger than the whole bound is never kept.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping

from rectune.domain.configuration import ParamValue
from services.scoring.core.data import TrainingData
from services.scoring.core.strategies.base import FittedModel, Strategy

DEFAULT_MEMO_BYTES = 512 * 2**20


def fingerprint(data: TrainingData) -> str:
    """A digest of everything a fit reads from ``data``: equal digests, equal training sets."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{data.n_users},{data.n_items},{len(data.users)}".encode())
    digest.update("\x1f".join(data.item_ids).encode())
    for column in (data.users, data.items, data.values, data.times):
        digest.update(column.tobytes())
    return digest.hexdigest()


class FitMemo:
    def __init__(self, max_bytes: int = DEFAULT_MEMO_BYTES) -> None:
        self.max_bytes = max_bytes
        self._models: OrderedDict[tuple[str, str], tuple[FittedModel, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def fit(self, strategy: Strategy, data: TrainingData, params: Mapping[str, ParamValue]) -> FittedModel:
        """The frozen model of ``strategy`` at ``params`` on ``data``: remembered, or fitted now."""
        key = (fingerprint(data), json.dumps({"strategy": strategy.space.strategy, **params}, sort_keys=True))
        with self._lock:
            remembered = self._models.get(key)
            if remembered is not None:
                self._models.move_to_end(key)
                self.hits += 1
                return remembered[0]
            self.misses += 1
        # Fitted outside the lock: two threads asking for the same model at once both fit it.
        model = strategy.fit(data, params, None)
        self._remember(key, model)
        return model

    def _remember(self, key: tuple[str, str], model: FittedModel) -> None:
        size = model.nbytes()
        if size > self.max_bytes:
            return
        with self._lock:
            if key in self._models:
                return
            self._models[key] = (model, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, evicted) = self._models.popitem(last=False)
                self._bytes -= evicted

    def __len__(self) -> int:
        return len(self._models)
