"""Offline evaluation of a configuration on a time-based holdout of the current data: fitted
on the training part only, scored on each user's held-out interactions, and, with a baseline,
compared with it user by user on the same users (rectune.domain.comparison)."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from rectune.domain.comparison import MAX_BASELINE_RATIO, PairedComparison, compare_paired
from rectune.domain.configuration import Configuration
from rectune.domain.errors import FailedPrecondition, InvalidArgument
from rectune.domain.fidelity import FULL, Fidelity, budgeted_count
from services.scoring.core.data import ScoringData
from services.scoring.core.fit_memo import FitMemo
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
    fidelity: Fidelity = FULL  # as used: the training budget rounded to whole epochs or sweeps
    fitted: Configuration | None = None  # the configuration as fitted (its budget parameter scaled)


# Seed of the holdout users' sample at a user fraction below 1: the same users every time.
USER_SAMPLE_SEED = 0


class Evaluator:
    def __init__(
        self, strategies: Mapping[str, Strategy], data: ScoringData, max_k: int, memo: FitMemo | None = None
    ) -> None:
        self.strategies = strategies
        self.data = data
        self.max_k = max_k
        # Frozen fits by training set and configuration: the training part of the split is the
        # same from one screen to the next while the data does not change.
        self.memo = memo if memo is not None else FitMemo()

    def evaluate(
        self,
        configuration: Configuration,
        k: int,
        holdout_fraction: float,
        baseline: Configuration | None = None,
        ratio: float = 1.0,
        fidelity: Fidelity = FULL,
    ) -> Evaluation:
        """Metrics on a time-based holdout; with a baseline, both are scored on the same users
        and compared user by user. At a lower fidelity the configuration trains with a share
        of its budget and a seeded sample of the holdout users is scored (the baseline is
        fitted in full and scored on the same sample)."""
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
        split = sampled_users(time_split(data, holdout_fraction), fidelity.user_fraction)
        fitted, training_budget = budgeted(
            self.strategies[configuration.strategy], configuration, fidelity.training_budget
        )
        metrics, ndcgs = self._evaluate_on(split, fitted, k)
        comparison = None
        if baseline is not None:
            baseline_metrics, baseline_ndcgs = self._evaluate_on(split, baseline, k)
            paired = compare_paired(ndcgs, baseline_ndcgs, ratio)
            comparison = BaselineComparison(baseline.hash, baseline_metrics, paired)
        used = Fidelity(training_budget, fidelity.user_fraction)
        return Evaluation(metrics, comparison, time.perf_counter() - started, used, fitted)

    def _evaluate_on(self, split: Split, configuration: Configuration, k: int) -> tuple[Metrics, np.ndarray]:
        """Fitted on the split's training part alone, frozen (no live data), scored on the rest."""
        model = self.memo.fit(self.strategies[configuration.strategy], split.train, configuration.params)
        return evaluate_users(model, split.train, split.held_out, k)


def sampled_users(split: Split, fraction: float) -> Split:
    """The split with a seeded sample of its holdout users (all of them at 1): at least one."""
    if fraction >= 1.0:
        return split
    users = sorted(split.held_out)
    count = max(1, round(len(users) * fraction))
    kept = np.random.default_rng(USER_SAMPLE_SEED).choice(len(users), size=count, replace=False)
    return Split(split.train, {users[i]: split.held_out[users[i]] for i in sorted(kept.tolist())})


def budgeted(strategy: Strategy, configuration: Configuration, budget: float) -> tuple[Configuration, float]:
    """The configuration with its strategy's budget parameter scaled, and the share used
    (1 for a strategy without one: it is always fitted in full)."""
    name = strategy.budget_param
    if name is None or budget >= 1.0:
        return configuration, 1.0
    full = int(configuration.params[name])
    count = budgeted_count(full, budget)
    return replace(configuration, params={**configuration.params, name: count}), count / full
