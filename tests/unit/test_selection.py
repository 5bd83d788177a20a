"""tuner.selection: a tuned configuration replaces the default only when it beats it beyond
the validation noise; among close finalists, the one best in most resamples wins."""

from __future__ import annotations

import numpy as np
import pytest

from rectune.domain.comparison import compare_paired
from tuner.selection import choose

USERS = 900


def scores(mean: float, seed: int, spread: float = 0.3) -> np.ndarray:
    """Per-user scores around ``mean`` (NDCG-like noise, users independent)."""
    return np.clip(np.random.default_rng(seed).normal(mean, spread, USERS), 0.0, 1.0)


def test_a_clearly_better_configuration_replaces_the_default() -> None:
    base = scores(0.20, 1)
    candidates = {"default": base, "better": base + 0.03, "worse": base - 0.01}
    choice = choose(candidates, ["default"])
    assert (choice.key, choice.kept_default) == ("better", False)
    assert choice.probability_better == 1.0 and "beats the best default" in choice.reason


def test_a_lucky_configuration_within_the_noise_does_not_replace_the_default() -> None:
    base = scores(0.20, 1)
    noise = np.random.default_rng(2).normal(0.0, 0.3, USERS)
    lucky = np.clip(base + noise, 0, 1)  # a different configuration, no better on average
    lucky += 0.002 - (lucky.mean() - base.mean())  # ahead by 0.002 on this validation set
    choice = choose({"default": base, "lucky": lucky}, ["default"])
    assert (choice.key, choice.kept_default) == ("default", True)
    assert choice.probability_better < 0.9 and "only" in choice.reason


def test_the_best_default_is_the_reference_and_nothing_tuned_keeps_it() -> None:
    choice = choose({"a": scores(0.1, 1), "b": scores(0.2, 2)}, ["a", "b"])
    assert (choice.key, choice.kept_default, choice.reason) == ("b", True, "nothing tuned")


def test_the_choice_is_the_same_for_the_same_seed() -> None:
    base = scores(0.2, 3)
    candidates = {"d": base, "x": base + 0.01, "y": base + 0.0105, "z": base + 0.002}
    assert choose(candidates, ["d"], seed=4) == choose(candidates, ["d"], seed=4)


def test_a_paired_comparison_counts_the_resamples_that_clear_the_bar() -> None:
    rng = np.random.default_rng(3)
    baseline = rng.uniform(0.0, 1.0, 500)
    clearly_better = compare_paired(baseline + 0.05, baseline)
    assert clearly_better.probability_clears == 1.0 and clearly_better.mean_difference == pytest.approx(0.05)
    assert clearly_better.interval == pytest.approx((0.05, 0.05))
    noisy = compare_paired(baseline + rng.normal(0.0, 0.3, 500), baseline)  # no better on average: a coin flip
    assert 0.05 < noisy.probability_clears < 0.95 and noisy.interval[0] < 0 < noisy.interval[1]
    assert compare_paired(baseline * 0.85, baseline, ratio=0.8).probability_clears == 1.0
    with pytest.raises(ValueError, match="paired scores must be two equal 1-d arrays"):
        compare_paired(baseline, baseline[:-1])
