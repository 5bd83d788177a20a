"""Offline evaluation of a configuration on a time-based holdout of the current data: fitted
on the training part only, scored on each user's held-out interactions, and, with a baseline,
compared with it user by user on the same users (rectune.domain.comparison)."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from rectune.domain.comparison import MAX_BASELINE_RATIO, PairedComparison, compare_paired
from rectune.domain.configuration import Configuration
from rectune.domain.errors import FailedPrecondition, InvalidArgument
from services.scoring.core.data import ScoringData
from services.scoring.core.fitting import evaluate_users
from services.scoring.core.ranking import Metrics, Split, time_split
from services.scoring.core.strategies.base import Strategy


@dataclass(frozen=True)
class BaselineComparison:
    baseline_hash: str
    baseline: Metrics
    paired: PairedComparison


@dataclass(frozen=True)
class Evaluation:
    metrics: Metrics
    comparison: BaselineComparison | None  # when a baseline was given
    seconds: float


class Evaluator:
    def __init__(self, strategies: Mapping[str, Strategy], data: ScoringData, max_k: int) -> None:
        self.strategies = strategies
        self.data = data
        self.max_k = max_k

    def evaluate(
        self,
        configuration: Configuration,
        k: int,
        holdout_fraction: float,
        baseline: Configuration | None = None,
        ratio: float = 1.0,
    ) -> Evaluation:
        """Metrics on a time-based holdout; with a baseline, both are scored on the same users
        and compared user by user."""
        started = time.perf_counter()
        if not 1 <= k <= self.max_k:
            raise InvalidArgument("k", f"must be between 1 and {self.max_k}, got {k}")
        if not 0.0 < holdout_fraction < 1.0:
            raise InvalidArgument("holdout_fraction", f"must be between 0 and 1 (exclusive), got {holdout_fraction}")
        if not (math.isfinite(ratio) and 0.0 < ratio <= MAX_BASELINE_RATIO):
            raise InvalidArgument("baseline_ratio", f"must be in (0, {MAX_BASELINE_RATIO:g}], got {ratio:g}")
        data = self.data.snapshot()
        if len(data.users) == 0:
            raise FailedPrecondition("no interactions yet: load a dataset or add interactions first")
        split = time_split(data, holdout_fraction)
        metrics, ndcgs = self._evaluate_on(split, configuration, k)
        comparison = None
        if baseline is not None:
            baseline_metrics, baseline_ndcgs = self._evaluate_on(split, baseline, k)
            paired = compare_paired(ndcgs, baseline_ndcgs, ratio)
            comparison = BaselineComparison(baseline.hash, baseline_metrics, paired)
        return Evaluation(metrics, comparison, time.perf_counter() - started)

    def _evaluate_on(self, split: Split, configuration: Configuration, k: int) -> tuple[Metrics, np.ndarray]:
        """Fitted on the split's training part alone, frozen (no live data), scored on the rest."""
        model = self.strategies[configuration.strategy].fit(split.train, configuration.params, None)
        return evaluate_users(model, split.train, split.held_out, k)
