"""Guardrail: pause an arm once it is probably worse than the champion by more than delta."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.policy.core.bandits import ArmBelief


@dataclass(frozen=True)
class Guardrail:
    delta: float = 0.005
    threshold: float = 0.95
    min_impressions: int = 1000
    samples: int = 20_000

    def probability_worse(self, arm: ArmBelief, champion: ArmBelief, rng: np.random.Generator) -> float:
        """P(rate(arm) < rate(champion) - delta) under the Beta posteriors (Monte Carlo)."""
        arm_draws = rng.beta(arm.alpha, arm.beta, self.samples)
        champion_draws = rng.beta(champion.alpha, champion.beta, self.samples)
        return float(np.mean(arm_draws < champion_draws - self.delta))

    def verdict(self, arm: ArmBelief, champion: ArmBelief, rng: np.random.Generator) -> str | None:
        """A reason to pause the arm, or None to let it run."""
        if arm.champion or arm.impressions < self.min_impressions:
            return None
        worse = self.probability_worse(arm, champion, rng)
        if worse <= self.threshold:
            return None
        return (
            f"guardrail: P(CTR < champion CTR - {self.delta:g}) = {worse:.3f} > {self.threshold:g} "
            f"after {arm.impressions:.0f} impressions"
        )
