"""Arms of the bandit: their states and origins, the bandit algorithms, and how beliefs decay."""

from __future__ import annotations

import enum
from collections.abc import Sequence


class ArmState(enum.Enum):
    CANDIDATE = "candidate"
    ACTIVE = "active"
    PAUSED = "paused"
    RETIRED = "retired"
    CHAMPION = "champion"


SERVING_STATES = (ArmState.ACTIVE, ArmState.CHAMPION)


class ArmOrigin(enum.Enum):
    CONTROL = "control"
    MANUAL = "manual"
    TUNER_LM = "tuner-lm"
    TUNER_TPE = "tuner-tpe"
    TUNER_RANDOM = "tuner-random"


class Algorithm(enum.Enum):
    """How the policy chooses among arms."""

    THOMPSON = "thompson"
    DISCOUNTED_THOMPSON = "discounted_thompson"
    UCB1 = "ucb1"
    EPSILON_GREEDY = "epsilon_greedy"

    @property
    def discounts(self) -> bool:
        """Whether beliefs decay with every decision (old evidence counts less)."""
        return self is Algorithm.DISCOUNTED_THOMPSON

    @classmethod
    def names(cls) -> list[str]:
        return [a.value for a in cls]


def decay(factor: float, steps: float) -> float:
    """What remains of a belief after ``steps`` decisions of discounting by ``factor`` per
    decision (1 when no steps passed; never amplified for a negative count)."""
    return float(factor ** max(steps, 0))


def decayed_count(steps: Sequence[int], factor: float) -> float:
    """One occurrence per step, as counted at the last of them."""
    return sum(decay(factor, steps[-1] - step) for step in steps)
