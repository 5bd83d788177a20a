"""Statistics of MetricsService against direct scipy/numpy computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from services.metrics.core.stats import ArmCounts, RewardWeights, probability_best, reward_moments, wilson_interval


def scipy_wilson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval written from its definition, with scipy's normal quantile."""
    z = stats.norm.ppf(1 - (1 - confidence) / 2)
    p = successes / trials
    denominator = 1 + z**2 / trials
    centre = p + z**2 / (2 * trials)
    spread = z * np.sqrt(p * (1 - p) / trials + z**2 / (4 * trials**2))
    return (centre - spread) / denominator, (centre + spread) / denominator


@pytest.mark.parametrize(("successes", "trials"), [(0, 10), (3, 10), (10, 10), (37, 1000), (5000, 10000), (1, 3)])
def test_wilson_interval_matches_scipy(successes: int, trials: int) -> None:
    interval = wilson_interval(successes, trials)
    lower, upper = scipy_wilson(successes, trials)
    assert interval.lower == pytest.approx(max(lower, 0.0), abs=1e-12)
    assert interval.upper == pytest.approx(min(upper, 1.0), abs=1e-12)
    assert interval.confidence == 0.95


def test_wilson_interval_without_trials_is_uninformative() -> None:
    interval = wilson_interval(0, 0)
    assert (interval.lower, interval.upper) == (0.0, 1.0)


def exact_probability_best(counts: list[ArmCounts]) -> list[float]:
    """P(arm i is best) = integral of f_i(x) * prod_{j != i} F_j(x) dx over [0, 1], by quadrature."""
    posteriors = [stats.beta(1 + c.clicks, 1 + c.impressions - c.clicks) for c in counts]
    result = []
    for i, posterior in enumerate(posteriors):
        others = [p for j, p in enumerate(posteriors) if j != i]

        def integrand(x: float, posterior=posterior, others=others) -> float:
            return float(posterior.pdf(x) * math.prod(o.cdf(x) for o in others))

        value, _ = integrate.quad(integrand, 0, 1, limit=200, points=[c.clicks / c.impressions for c in counts])
        result.append(value)
    return result


def test_probability_best_agrees_with_numerical_integration() -> None:
    counts = [ArmCounts("a", 1000, 30, 0), ArmCounts("b", 1000, 36, 0), ArmCounts("c", 800, 28, 0)]
    samples = 200_000
    estimate = probability_best(counts, samples=samples, seed=7)
    exact = exact_probability_best(counts)
    assert sum(exact) == pytest.approx(1.0, abs=1e-6)
    for got, want in zip(estimate, exact, strict=True):
        # Four standard errors of a Monte-Carlo proportion.
        assert got == pytest.approx(want, abs=4 * math.sqrt(want * (1 - want) / samples) + 1e-9)


def test_probability_best_is_reproducible_for_a_seed_and_another_seed_draws_again() -> None:
    counts = [ArmCounts("a", 100, 3, 0), ArmCounts("b", 100, 4, 0)]
    first = probability_best(counts, 1000, seed=1)
    assert first == probability_best(counts, 1000, seed=1)
    others = [probability_best(counts, 1000, seed=seed) for seed in (2, 3, 4)]
    assert all(other != first for other in others)


def test_reward_moments_match_the_per_impression_definition() -> None:
    # 10 impressions: 4 clicked, 1 of those converted. r = 1*clicked + 5*converted.
    rewards = np.array([6.0] + [1.0] * 3 + [0.0] * 6)
    mean, variance = reward_moments(ArmCounts("a", 10, 4, 1), RewardWeights(click=1.0, conversion=5.0))
    assert mean == pytest.approx(rewards.mean())
    assert variance == pytest.approx(rewards.var())
    assert reward_moments(ArmCounts("a", 0, 0, 0), RewardWeights()) == (0.0, 0.0)
