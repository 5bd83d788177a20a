"""Bandit algorithms on simulated Bernoulli traffic (fixed seeds), caps, propensities, guardrail."""

from __future__ import annotations

import numpy as np
import pytest

from services.policy.core.bandits import (
    MAX_PROPENSITY_DRAWS,
    ArmBelief,
    EpsilonGreedy,
    ThompsonSampling,
    Ucb1,
    apply_caps,
    select,
)
from services.policy.core.guardrail import Guardrail

DEFAULT_DISCOUNT = 0.9997  # the policy settings' default discount factor


def simulate(
    algorithm, rates_by_phase: list[tuple[int, list[float]]], seed: int, discount: float = 1.0, caps=None
) -> list[int]:
    """Requests with immediate Bernoulli rewards; returns the arm chosen for each request."""
    rng = np.random.default_rng(seed)
    arms = len(rates_by_phase[0][1])
    caps = caps or [1.0] * arms
    impressions, rewards = np.zeros(arms), np.zeros(arms)
    chosen = []
    for requests, rates in rates_by_phase:
        for _ in range(requests):
            impressions *= discount
            rewards *= discount
            beliefs = [ArmBelief(str(i), impressions[i], rewards[i], caps[i], champion=(i == 0)) for i in range(arms)]
            arm, _ = select(algorithm, beliefs, 0.0, rng)
            impressions[arm] += 1
            rewards[arm] += rng.random() < rates[arm]
            chosen.append(arm)
    return chosen


def test_thompson_sampling_sends_the_last_half_to_the_best_arm() -> None:
    rates = [0.02, 0.03, 0.035, 0.04, 0.05]
    chosen = np.array(simulate(ThompsonSampling(samples=64), [(50_000, rates)], seed=1))
    share_best = np.mean(chosen[25_000:] == 4)
    assert share_best >= 0.8, share_best


def test_discounted_thompson_follows_a_change_of_best_arm_within_5000_requests() -> None:
    # The best arm changes from arm 0 (5%) to arm 4 (8%, from 2%) after 10,000 requests.
    before = [0.05, 0.04, 0.03, 0.02, 0.02]
    after = [0.02, 0.04, 0.03, 0.02, 0.08]
    chosen = np.array(
        simulate(
            ThompsonSampling(samples=64, name="discounted_thompson"),
            [(10_000, before), (5_000, after)],
            seed=11,
            discount=DEFAULT_DISCOUNT,
        )
    )
    share_new_best = np.mean(chosen[-1000:] == 4)  # requests 4,001 to 5,000 after the change
    assert share_new_best >= 0.8, share_new_best


def test_exposure_caps_hold_over_20000_requests() -> None:
    caps = [1.0, 0.05, 0.1, 0.2]
    rates = [0.03, 0.06, 0.06, 0.06]  # the capped arms are better: they push against their caps
    chosen = np.array(simulate(ThompsonSampling(samples=64), [(20_000, rates)], seed=3, caps=caps))
    for arm, cap in enumerate(caps[1:], start=1):
        share = np.mean(chosen == arm)
        tolerance = 3 * np.sqrt(cap * (1 - cap) / len(chosen))
        assert share <= cap + tolerance, (arm, share, cap)


def beliefs(*caps: float) -> list[ArmBelief]:
    return [ArmBelief(str(i), 0, 0, cap, champion=(i == 0)) for i, cap in enumerate(caps)]


def test_caps_redistribute_excess_mass_exactly() -> None:
    p = apply_caps(np.array([0.1, 0.7, 0.2]), beliefs(1.0, 0.2, 0.5), champion_min_share=0.0)
    # arm 1 gives 0.5 away in proportion (1/3, 2/3); arm 2 then exceeds its cap and passes 1/30 on to arm 0.
    assert p.tolist() == pytest.approx([0.3, 0.2, 0.5])
    p = apply_caps(np.array([0.0, 1.0, 0.0]), beliefs(1.0, 0.1, 0.1), champion_min_share=0.0)
    assert p.tolist() == pytest.approx([0.8, 0.1, 0.1])


def test_the_champion_keeps_its_minimum_share() -> None:
    p = apply_caps(np.array([0.05, 0.5, 0.45]), beliefs(1.0, 1.0, 1.0), champion_min_share=0.2)
    assert p[0] == pytest.approx(0.2)
    assert p[1] / p[2] == pytest.approx(0.5 / 0.45)


def test_exact_propensities_of_epsilon_greedy_and_ucb1() -> None:
    rng = np.random.default_rng(0)
    arms = [ArmBelief("a", 100, 5, 1.0, True), ArmBelief("b", 100, 9, 1.0), ArmBelief("c", 100, 2, 1.0)]
    _, selection = select(EpsilonGreedy(0.3), arms, 0.0, rng)
    assert selection.probabilities.tolist() == pytest.approx([0.1, 0.8, 0.1]) and selection.samples == 0
    _, selection = select(Ucb1(1.0), arms, 0.0, rng)
    assert selection.probabilities.tolist() == [0.0, 1.0, 0.0]
    unplayed = [*arms, ArmBelief("d", 0, 0, 1.0)]
    assert select(Ucb1(1.0), unplayed, 0.0, rng)[0] == 3


def test_thompson_propensity_is_a_monte_carlo_estimate_with_its_sample_count() -> None:
    arms = [ArmBelief("a", 1000, 30, 1.0, True), ArmBelief("b", 1000, 30, 1.0)]
    _, selection = select(ThompsonSampling(samples=20_000), arms, 0.0, np.random.default_rng(5))
    assert selection.samples == 20_000
    assert selection.probabilities.tolist() == pytest.approx([0.5, 0.5], abs=0.02)


def test_guardrail_pauses_a_clearly_worse_arm_only_after_enough_impressions() -> None:
    guardrail = Guardrail(delta=0.005, threshold=0.95, min_impressions=2000)
    rng = np.random.default_rng(0)
    champion = ArmBelief("champ", 5000, 250, 1.0, True)  # 5%
    assert guardrail.verdict(ArmBelief("bad", 1000, 10, 0.2), champion, rng) is None  # too early
    reason = guardrail.verdict(ArmBelief("bad", 3000, 30, 0.2), champion, rng)  # 1%
    assert reason is not None and reason.startswith("guardrail: P(CTR < champion CTR - 0.005) = 1.000 > 0.95")
    assert guardrail.verdict(ArmBelief("fine", 3000, 150, 0.2), champion, rng) is None


def test_thompson_draws_are_bounded_by_samples_times_arms() -> None:
    """100,000 samples (the largest setting) over 1,000 arms would be 10^8 draws (800 MB) per
    Recommend: the samples are lowered to keep within MAX_PROPENSITY_DRAWS, and say so."""
    arms = [ArmBelief(f"a{n}", 100.0, float(n % 7), 1.0, champion=(n == 0)) for n in range(1000)]
    probabilities, samples = ThompsonSampling(samples=100_000).distribution(arms, np.random.default_rng(1))
    assert samples == MAX_PROPENSITY_DRAWS // 1000 == 2000
    assert probabilities.sum() == pytest.approx(1.0)
    _, few = ThompsonSampling(samples=100_000).distribution(arms[:5], np.random.default_rng(1))
    assert few == 100_000  # as set where the product is within the bound
