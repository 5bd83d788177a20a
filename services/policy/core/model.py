"""PolicyService's own types: arms as the policy keeps them, and the bandit's settings.

The shared words (configurations, arm states and origins, algorithms, decisions) are in
rectune.domain."""

from __future__ import annotations

from dataclasses import dataclass, field

from rectune.domain.arms import Algorithm, ArmOrigin, ArmState, decay
from rectune.domain.configuration import Configuration
from rectune.domain.errors import InvalidArgument
from services.policy.core.bandits import ArmBelief


@dataclass(frozen=True)
class Arm:
    arm_id: str
    configuration: Configuration
    configuration_hash: str
    origin: ArmOrigin
    state: ArmState
    exposure_cap: float
    created_at: float
    updated_at: float
    state_reason: str
    impressions: float = 0.0
    reward: float = 0.0
    clicks: int = 0
    conversions: int = 0
    step: int = 0  # the policy step at which impressions/reward were last discounted


@dataclass
class ArmCounts:
    """What a group of decisions or of feedback adds to one arm."""

    impressions: float = 0.0  # discounted to the step of the change when the algorithm discounts
    reward: float = 0.0
    clicks: int = 0
    conversions: int = 0


@dataclass(frozen=True)
class GuardrailSettings:
    enabled: bool = True
    delta: float = 0.005
    threshold: float = 0.95
    min_impressions: int = 1000


@dataclass(frozen=True)
class BanditSettings:
    """How the policy chooses arms and counts rewards (stored; UpdatePolicySettings changes them)."""

    algorithm: Algorithm = Algorithm.THOMPSON
    epsilon: float = 0.1
    discount: float = 0.9997
    ucb_c: float = 1.0
    click_weight: float = 1.0
    conversion_weight: float = 0.0
    champion_min_share: float = 0.2
    default_exposure_cap: float = 0.2
    reward_window_seconds: float = 86400.0
    guardrail: GuardrailSettings = field(default_factory=GuardrailSettings)
    propensity_samples: int = 1000
    scoring_deadline_seconds: float = 0.25

    @property
    def discount_per_step(self) -> float | None:
        """The factor beliefs decay by per decision; None when the algorithm does not discount."""
        return self.discount if self.algorithm.discounts else None

    def kept(self, steps: float) -> float:
        """The share of a belief kept after ``steps`` decisions (1 when nothing decays)."""
        factor = self.discount_per_step
        return 1.0 if factor is None else decay(factor, steps)

    def check(self) -> None:
        rules = [
            ("epsilon", 0.0 <= self.epsilon <= 1.0, "must be in [0, 1]"),
            ("discount", 0.0 < self.discount <= 1.0, "must be in (0, 1]"),
            ("ucb_c", self.ucb_c >= 0, "must be >= 0"),
            ("reward.click_weight", 0 <= self.click_weight <= 1, "must be in [0, 1]"),
            ("reward.conversion_weight", 0 <= self.conversion_weight <= 1, "must be in [0, 1]"),
            ("champion_min_share", 0.0 <= self.champion_min_share <= 1.0, "must be in [0, 1]"),
            ("default_exposure_cap", 0.0 < self.default_exposure_cap <= 1.0, "must be in (0, 1]"),
            ("reward_window", self.reward_window_seconds > 0, "must be > 0"),
            ("guardrail.delta", 0.0 <= self.guardrail.delta < 1.0, "must be in [0, 1)"),
            ("guardrail.threshold", 0.5 <= self.guardrail.threshold < 1.0, "must be in [0.5, 1)"),
            ("guardrail.min_impressions", self.guardrail.min_impressions >= 0, "must be >= 0"),
            ("propensity_samples", 10 <= self.propensity_samples <= 100_000, "must be between 10 and 100000"),
            ("scoring_deadline", 0.001 <= self.scoring_deadline_seconds <= 60, "must be between 1 ms and 60 s"),
        ]
        for name, ok, rule in rules:
            if not ok:
                raise InvalidArgument(f"settings.{name}", rule)


def algorithm_named(name: str) -> Algorithm:
    """The algorithm a settings update names, or InvalidArgument listing the known ones."""
    try:
        return Algorithm(name)
    except ValueError:
        shown = name if len(name) <= 32 else name[:32] + "..."
        raise InvalidArgument(
            "settings.algorithm", f"must be one of {', '.join(Algorithm.names())}, got {shown!r}"
        ) from None


def belief_of(arm: Arm, settings: BanditSettings, step: int) -> ArmBelief:
    """What the bandit believes of an arm at ``step`` (its counts decayed when the algorithm
    discounts)."""
    kept = settings.kept(step - arm.step)
    return ArmBelief(
        arm.arm_id, arm.impressions * kept, arm.reward * kept, arm.exposure_cap, arm.state is ArmState.CHAMPION
    )
