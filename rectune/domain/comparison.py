"""Comparing two configurations on the same users, so that holdout noise does not decide.

Both are scored user by user on one holdout (paired); the users are resampled with
replacement, and what counts is how often the candidate clears the bar in the resamples,
not whether its mean happened to. The tuner's choice after a search (tuner.selection) and
its screen before an arm goes live (ScoringService's EvaluateConfiguration with a baseline)
use these resamples and the same confidence rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

RESAMPLES = 1000
CONFIDENCE = 0.9  # share of resamples a candidate must win before it replaces or joins a baseline
# The largest bar a comparison takes (candidate >= ratio x baseline): beyond this it is a typo
# (the tuner's screen uses about 0.8 to 1). ScoringService and the tuner's settings check it.
MAX_BASELINE_RATIO = 10.0


def resampled_users(users: int, resamples: int = RESAMPLES, seed: int = 0) -> npt.NDArray[np.int64]:
    """(resamples, users) indices of users drawn with replacement; seeded, so a comparison repeats."""
    return np.random.default_rng(seed).integers(0, users, size=(resamples, users))


@dataclass(frozen=True)
class PairedComparison:
    ratio: float  # the bar: the candidate's mean at least this times the baseline's
    probability_clears: float  # share of resamples in which the candidate clears the bar
    mean_difference: float  # candidate minus baseline, over all users
    interval: tuple[float, float]  # 95% bootstrap interval of that difference
    resamples: int


def compare_paired(
    candidate: npt.NDArray[np.float64],
    baseline: npt.NDArray[np.float64],
    ratio: float = 1.0,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> PairedComparison:
    """``candidate`` and ``baseline``: one score per user, the same users in the same order."""
    if candidate.shape != baseline.shape or candidate.ndim != 1:
        raise ValueError(f"paired scores must be two equal 1-d arrays, got {candidate.shape} and {baseline.shape}")
    if len(candidate) == 0:
        return PairedComparison(ratio, 0.0, 0.0, (0.0, 0.0), 0)
    picks = resampled_users(len(candidate), resamples, seed)
    candidate_means, baseline_means = candidate[picks].mean(axis=1), baseline[picks].mean(axis=1)
    differences = candidate_means - baseline_means
    low, high = np.percentile(differences, [2.5, 97.5])
    return PairedComparison(
        ratio,
        float((candidate_means >= ratio * baseline_means).mean()),
        float(candidate.mean() - baseline.mean()),
        (float(low), float(high)),
        resamples,
    )
