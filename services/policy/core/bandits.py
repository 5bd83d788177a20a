"""Bandit algorithms over arms, as selection distributions.

Every algorithm first produces the probability of choosing each eligible arm for this
request; exposure caps and the champion's minimum share are then applied to that
distribution exactly, and the arm is drawn from the result. The chosen arm's final
probability is the propensity logged with the decision: exact for epsilon-greedy and
UCB1, a Monte-Carlo estimate for Thompson sampling (the sample count is returned).

Beliefs are kept as impressions n and reward sum R per arm, so that delayed feedback
fits in: an impression counts a trial when the decision is made, a click adds its reward
later. The Beta posterior is Beta(1 + R, 1 + n - R).
"""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from rectune.domain.arms import Algorithm
from rectune.domain.errors import InvalidArgument

Probabilities = npt.NDArray[np.float64]

# Draws per Recommend (samples x live arms, float64): each setting alone is bounded, so
# their product is too (16 MB), not an allocation that grows with the arms an operator adds.
MAX_PROPENSITY_DRAWS = 2_000_000


@dataclass(frozen=True)
class ArmBelief:
    arm_id: str
    impressions: float  # possibly discounted
    reward: float  # possibly discounted; 0 <= reward <= impressions
    cap: float  # maximum share of traffic in (0, 1]; the champion has 1
    champion: bool = False

    @property
    def alpha(self) -> float:
        # Several clicks on one list count as one success: a success rate stays <= 1.
        return 1.0 + min(self.reward, self.impressions)

    @property
    def beta(self) -> float:
        return 1.0 + max(self.impressions - self.reward, 0.0)

    @property
    def mean(self) -> float:
        return self.reward / self.impressions if self.impressions > 0 else 0.0


@dataclass(frozen=True)
class Selection:
    probabilities: Probabilities  # final, after caps
    samples: int  # Monte-Carlo samples behind the probabilities; 0 when exact

    @functools.cached_property
    def _cumulative(self) -> list[float]:
        return [float(total) for total in np.cumsum(self.probabilities)]

    def arm_at(self, uniform: float) -> int:
        """The arm whose share of [0, 1) holds ``uniform``: a uniform draw picks each arm with its probability."""
        cumulative = self._cumulative
        return min(bisect.bisect_right(cumulative, uniform * cumulative[-1]), len(cumulative) - 1)


class Bandit(Protocol):
    @property
    def name(self) -> str: ...

    def distribution(self, arms: Sequence[ArmBelief], rng: np.random.Generator) -> tuple[Probabilities, int]:
        """Probability of choosing each arm before caps, and the Monte-Carlo samples used (0 = exact)."""
        ...


@dataclass(frozen=True)
class ThompsonSampling:
    """Beta-Bernoulli Thompson sampling; P(arm has the highest draw) by Monte Carlo.

    Discounted Thompson sampling is the same over discounted beliefs (see
    ``BanditSettings.kept``).
    The prior is centred on the pooled rate of all arms with ``prior_strength`` pseudo
    impressions: with a flat Beta(1, 1), an arm whose evidence has been discounted away
    would look like a 50% arm and take a large share of traffic when rates are a few
    percent."""

    samples: int = 1000  # lowered with many arms to stay within MAX_PROPENSITY_DRAWS (the decision says so)
    prior_strength: float = 20.0
    name: str = "thompson"

    def distribution(self, arms: Sequence[ArmBelief], rng: np.random.Generator) -> tuple[Probabilities, int]:
        impressions = sum(a.impressions for a in arms)
        pooled = sum(a.reward for a in arms) / impressions if impressions > 0 else 0.5
        prior_alpha, prior_beta = pooled * self.prior_strength, (1 - pooled) * self.prior_strength
        alpha = np.array([a.alpha + prior_alpha for a in arms])
        beta = np.array([a.beta + prior_beta for a in arms])
        samples = max(1, min(self.samples, MAX_PROPENSITY_DRAWS // max(1, len(arms))))
        draws = rng.beta(alpha, beta, size=(samples, len(arms)))
        wins = np.bincount(draws.argmax(axis=1), minlength=len(arms)).astype(np.float64)
        return wins / samples, samples


@dataclass(frozen=True)
class EpsilonGreedy:
    epsilon: float = 0.1
    name: str = "epsilon_greedy"

    def distribution(self, arms: Sequence[ArmBelief], rng: np.random.Generator) -> tuple[Probabilities, int]:
        means = np.array([a.mean for a in arms])
        best = np.flatnonzero(means == means.max())
        p = np.full(len(arms), self.epsilon / len(arms))
        p[best] += (1 - self.epsilon) / len(best)
        return p, 0


@dataclass(frozen=True)
class Ucb1:
    c: float = 1.0
    name: str = "ucb1"

    def distribution(self, arms: Sequence[ArmBelief], rng: np.random.Generator) -> tuple[Probabilities, int]:
        unplayed = [i for i, a in enumerate(arms) if a.impressions <= 0]
        p = np.zeros(len(arms))
        if unplayed:
            p[unplayed] = 1.0 / len(unplayed)
            return p, 0
        total = sum(a.impressions for a in arms)
        bounds = np.array([a.mean + self.c * math.sqrt(2 * math.log(total) / a.impressions) for a in arms])
        best = np.flatnonzero(bounds == bounds.max())
        p[best] = 1.0 / len(best)
        return p, 0


def apply_caps(p: Probabilities, arms: Sequence[ArmBelief], champion_min_share: float) -> Probabilities:
    """Clip each arm to its cap and hand the excess to the others (in proportion to their
    mass, or evenly where they have none) until no cap is exceeded; then lift the champion
    to its minimum share, taking from the others in proportion."""
    p = np.asarray(p, dtype=np.float64).copy()
    caps = np.array([1.0 if a.champion else a.cap for a in arms])
    for _ in range(len(arms) + 1):
        over = p > caps + 1e-12
        if not over.any():
            break
        excess = float((p[over] - caps[over]).sum())
        p[over] = caps[over]
        room = ~over & (p < caps)
        if not room.any():
            break
        weights = p[room] if p[room].sum() > 0 else np.ones(room.sum())
        p[room] += excess * weights / weights.sum()
    champion = [i for i, a in enumerate(arms) if a.champion]
    if champion and p[champion[0]] < champion_min_share:
        others = np.ones(len(arms), dtype=bool)
        others[champion[0]] = False
        need = champion_min_share - p[champion[0]]
        taken = p[others].sum()
        if taken > 0:
            p[others] *= max(taken - need, 0.0) / taken
        p[champion[0]] = 1.0 - p[others].sum()
    normalised: Probabilities = p / p.sum()
    return normalised


def selection(
    algorithm: Bandit, arms: Sequence[ArmBelief], champion_min_share: float, rng: np.random.Generator
) -> Selection:
    """The distribution an arm is drawn from, after caps and the champion's share."""
    if not arms:
        raise InvalidArgument("arms", "no arm is serving: register a champion first")
    raw, samples = algorithm.distribution(arms, rng)
    return Selection(apply_caps(raw, arms, champion_min_share), samples)


def draw(chosen_from: Selection, rng: np.random.Generator) -> int:
    return chosen_from.arm_at(float(rng.random()))


def select(
    algorithm: Bandit, arms: Sequence[ArmBelief], champion_min_share: float, rng: np.random.Generator
) -> tuple[int, Selection]:
    """Draw an arm; returns its index and the distribution it was drawn from."""
    chosen_from = selection(algorithm, arms, champion_min_share, rng)
    return draw(chosen_from, rng), chosen_from


def bandit_for(algorithm: Algorithm, epsilon: float, ucb_c: float, samples: int) -> Bandit:
    """The bandit that implements ``algorithm`` (discounting is in the beliefs it is given)."""
    if algorithm in (Algorithm.THOMPSON, Algorithm.DISCOUNTED_THOMPSON):
        return ThompsonSampling(samples=samples, name=algorithm.value)
    if algorithm is Algorithm.EPSILON_GREEDY:
        return EpsilonGreedy(epsilon)
    return Ucb1(ucb_c)
