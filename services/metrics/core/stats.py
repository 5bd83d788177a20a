"""Per-arm statistics: rates with Wilson score intervals, reward moments, probability best.

Reward per impression is r = w_click * clicked + w_conversion * converted, counting at
most one click and one conversion per impression, and a conversion only after a click
(so an impression that converted also clicked). Under that reading the moments follow
from the counts alone, which keeps them exact when they are read from roll-ups.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Two-sided 95%: the standard normal quantile at 0.975.
Z_95 = 1.959963984540054


@dataclass(frozen=True)
class ArmCounts:
    arm_id: str
    impressions: int
    clicks: int
    conversions: int


@dataclass(frozen=True)
class Interval:
    lower: float
    upper: float
    confidence: float


@dataclass(frozen=True)
class RewardWeights:
    click: float = 1.0
    conversion: float = 0.0


@dataclass(frozen=True)
class ArmStats:
    counts: ArmCounts
    ctr: float
    ctr_interval: Interval
    conversion_rate: float
    conversion_rate_interval: Interval
    reward_mean: float
    reward_variance: float
    probability_best: float


def wilson_interval(successes: int, trials: int, z: float = Z_95, confidence: float = 0.95) -> Interval:
    """Wilson score interval of a binomial proportion; [0, 1] when there are no trials."""
    if trials <= 0:
        return Interval(0.0, 1.0, confidence)
    successes = min(max(successes, 0), trials)
    p = successes / trials
    z2 = z * z
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / (1 + z2 / trials)
    return Interval(max(0.0, centre - half), min(1.0, centre + half), confidence)


def reward_moments(counts: ArmCounts, weights: RewardWeights) -> tuple[float, float]:
    """Mean and variance of the per-impression reward (see the module docstring)."""
    n = counts.impressions
    if n <= 0:
        return 0.0, 0.0
    clicks = min(counts.clicks, n)
    conversions = min(counts.conversions, clicks)
    wc, wv = weights.click, weights.conversion
    mean = (wc * clicks + wv * conversions) / n
    second = (wc * wc * clicks + (wv * wv + 2 * wc * wv) * conversions) / n
    return mean, max(second - mean * mean, 0.0)


def probability_best(counts: Sequence[ArmCounts], samples: int, seed: int) -> list[float]:
    """P(arm has the highest CTR) under Beta(1 + clicks, 1 + misses) posteriors, by Monte Carlo."""
    if not counts:
        return []
    rng = np.random.default_rng(seed)
    alpha = np.array([1 + min(c.clicks, c.impressions) for c in counts], dtype=np.float64)
    beta = np.array([1 + max(c.impressions - c.clicks, 0) for c in counts], dtype=np.float64)
    draws = rng.beta(alpha, beta, size=(samples, len(counts)))
    wins = np.bincount(draws.argmax(axis=1), minlength=len(counts))
    return (wins / samples).tolist()  # type: ignore[no-any-return]


def arm_stats(counts: Sequence[ArmCounts], weights: RewardWeights, samples: int, seed: int) -> list[ArmStats]:
    best = probability_best(counts, samples, seed)
    result = []
    for arm, p_best in zip(counts, best, strict=True):
        n = arm.impressions
        mean, variance = reward_moments(arm, weights)
        result.append(
            ArmStats(
                counts=arm,
                ctr=min(arm.clicks, n) / n if n else 0.0,
                ctr_interval=wilson_interval(arm.clicks, n),
                conversion_rate=min(arm.conversions, n) / n if n else 0.0,
                conversion_rate_interval=wilson_interval(arm.conversions, n),
                reward_mean=mean,
                reward_variance=variance,
                probability_best=p_best,
            )
        )
    return result
