"""How much of a full offline evaluation to spend: the tuner's multi-fidelity screens.

Two axes, each a share in (0, 1]:
- ``training_budget``: of the configuration's own training budget (two_tower's epochs,
  als's iterations; each strategy names the hyperparameter it scales, and a strategy
  without one is always fitted in full);
- ``user_fraction``: of the holdout users scored (a seeded sample, the same users for a
  configuration and its baseline, so the comparison stays paired).

What a screen spent is reported back with these numbers as used (a budget is rounded to
whole epochs or sweeps, at least one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rectune.domain.errors import InvalidArgument


@dataclass(frozen=True)
class Fidelity:
    training_budget: float = 1.0
    user_fraction: float = 1.0

    def __post_init__(self) -> None:
        for name in ("training_budget", "user_fraction"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 < value <= 1.0):
                raise InvalidArgument(f"fidelity.{name}", f"must be in (0, 1], got {value:g}")

    @property
    def full(self) -> bool:
        return self.training_budget == 1.0 and self.user_fraction == 1.0

    def describe(self) -> str:
        if self.full:
            return "full fidelity"
        return f"{self.training_budget:.0%} of the training budget, {self.user_fraction:.0%} of the holdout users"


FULL = Fidelity()


def budgeted_count(full: int, budget: float) -> int:
    """Whole epochs or sweeps for a share of ``full``: at least one, never more than ``full``."""
    return max(1, min(full, round(full * budget)))
