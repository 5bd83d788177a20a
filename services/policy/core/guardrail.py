"""Guardrail: pause an arm once it is probably worse than the champion by more than delta."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rectune.domain.arms import ArmState
from services.policy.core.bandits import ArmBelief
from services.policy.core.model import Arm, BanditSettings, belief_of

# Every pause a guardrail makes carries this reason prefix (the gauges and alerts find them by it).
GUARDRAIL_REASON_PREFIX = "guardrail: "


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
            f"{GUARDRAIL_REASON_PREFIX}P(CTR < champion CTR - {self.delta:g}) = {worse:.3f} > {self.threshold:g} "
            f"after {arm.impressions:.0f} impressions"
        )


def arms_to_pause(
    arms: Sequence[Arm], step: int, settings: BanditSettings, rng: np.random.Generator
) -> list[tuple[str, str]]:
    """The active arms that are probably worse than the champion, each with the reason."""
    if not settings.guardrail.enabled:
        return []
    champions = [belief_of(arm, settings, step) for arm in arms if arm.state is ArmState.CHAMPION]
    if not champions:
        return []
    rule = settings.guardrail
    guardrail = Guardrail(rule.delta, rule.threshold, rule.min_impressions)
    paused = []
    for arm in arms:
        if arm.state is not ArmState.ACTIVE:
            continue
        reason = guardrail.verdict(belief_of(arm, settings, step), champions[0], rng)
        if reason is not None:
            paused.append((arm.arm_id, reason))
    return paused
