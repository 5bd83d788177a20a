"""tuner.selection: a tuned configuration replaces the default only when it beats it beyond
the validation noise; among close finalists, the one best in most resamples wins."""

from __future__ import annotations

import numpy as np
import pytest

from rectune.domain.comparison import compare_paired
from tuner.selection import Choice, choose

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
    assert (choice.key, choice.kept_default, choice.default_key) == ("default", True, "default")
    assert choice.mean == choice.default_mean == pytest.approx(float(base.mean()), abs=1e-12)
    assert choice.probability_better < 0.9 and "only" in choice.reason


def test_the_best_default_is_the_reference_and_nothing_tuned_keeps_it() -> None:
    b = scores(0.2, 2)
    choice = choose({"a": scores(0.1, 1), "b": b}, ["a", "b"])
    mean = float(b.mean())
    assert choice == Choice("b", True, mean, "b", mean, 0.0, "nothing tuned")


def test_a_candidate_that_only_ties_the_default_never_replaces_it() -> None:
    base = scores(0.3, 4)
    choice = choose({"d": base, "same": base.copy()}, ["d"], confidence=0.5)
    assert (choice.key, choice.probability_better) == ("d", 0.0)


def test_the_winner_is_compared_with_the_default_not_with_the_runner_up() -> None:
    """Two finalists close to each other, both far above the default: the default is replaced
    (the winner beats the runner-up in only some resamples, the default in all)."""
    base = scores(0.3, 5)
    rng = np.random.default_rng(7)
    first = base + 0.05 + rng.normal(0.0, 0.05, USERS)
    second = base + 0.05 + rng.normal(0.0, 0.05, USERS)
    choice = choose({"d": base, "first": first, "second": second}, ["d"])
    assert (choice.kept_default, choice.probability_better) == (False, 1.0)
    assert choice.key in ("first", "second")


def borderline() -> dict[str, np.ndarray]:
    """A candidate whose per-user gains over the default are +0.1 and -0.1 in equal numbers:
    no better on average, so it beats the default in about half of the resamples."""
    base = scores(0.5, 3)
    signs = np.where(np.arange(USERS) % 2 == 0, 1.0, -1.0)
    return {"d": base, "x": base + 0.1 * np.random.default_rng(4).permutation(signs)}


def test_the_choice_is_the_same_for_the_same_seed_and_the_resamples_differ_for_another() -> None:
    candidates = borderline()
    first = choose(candidates, ["d"], seed=4)
    assert first == choose(candidates, ["d"], seed=4)
    assert choose(candidates, ["d"]) == choose(candidates, ["d"], seed=0)  # seed 0 by default
    others = {choose(candidates, ["d"], seed=seed).probability_better for seed in (5, 6, 7)}
    assert first.probability_better not in others and len(others) == 3


def test_a_candidate_no_better_on_average_beats_the_default_in_about_half_of_the_resamples() -> None:
    choice = choose(borderline(), ["d"])
    # The resampled mean difference is symmetric about 0: P(> 0) is 1/2 up to resampling
    # noise (about 0.016 for 1,000 resamples) and the odd tie.
    assert abs(choice.probability_better - 0.5) < 0.06
    assert (choice.key, choice.kept_default) == ("d", True)
    assert (
        choice.reason
        == f"the best finalist beats the best default in only {choice.probability_better:.0%} of 1000 resamples"
    )


def test_the_confidence_is_the_share_of_resamples_needed_and_reaching_it_is_enough() -> None:
    candidates = borderline()
    needed = choose(candidates, ["d"]).probability_better
    reached = choose(candidates, ["d"], confidence=needed)
    assert (reached.key, reached.kept_default, reached.probability_better) == ("x", False, needed)
    assert choose(candidates, ["d"], confidence=needed + 0.001).key == "d"


def test_the_resample_count_sets_the_resolution_of_the_probability() -> None:
    choice = choose(borderline(), ["d"], resamples=8)
    assert choice.probability_better * 8 == round(choice.probability_better * 8)
    assert choice.reason.endswith(" of 8 resamples")


def test_only_the_best_finalists_by_mean_compete_in_the_resamples() -> None:
    base = scores(0.5, 5)
    noisy = base + np.random.default_rng(6).normal(0.0, 0.6, USERS)
    noisy += 0.0275 - (noisy - base).mean()  # fourth by mean, but often the best of a resample
    candidates = {"d": base, "a": base + 0.03, "b": base + 0.029, "c": base + 0.028, "noisy": noisy}
    three = choose(candidates, ["d"], finalists=3)
    assert choose(candidates, ["d"]) == three  # three finalists by default
    assert three == choose({key: candidates[key] for key in ("d", "a", "b", "c")}, ["d"], finalists=3)
    assert three.reason.startswith("best of 3 finalists in 1000 of 1000 resamples")
    four = choose(candidates, ["d"], finalists=4)
    wins = int(four.reason.split(" in ")[1].split(" of ")[0])
    assert four.reason.startswith("best of 4 finalists") and 300 < wins < 1000  # noisy took the rest
    assert choose(candidates, ["d"], finalists=1).reason.startswith("best of 1 finalists in 1000 of 1000")


def test_the_reference_is_the_best_default_and_the_choice_reports_both_means() -> None:
    low, high = scores(0.1, 1), scores(0.3, 2)
    choice = choose({"low": low, "high": high, "tuned": high + 0.05}, ["low", "high"])
    assert (choice.key, choice.default_key) == ("tuned", "high")
    assert choice.mean == pytest.approx(float((high + 0.05).mean()), abs=1e-12)
    assert choice.default_mean == pytest.approx(float(high.mean()), abs=1e-12)


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
