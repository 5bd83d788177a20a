"""PolicyService domain types: arms, settings, decisions."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from services.common.errors import InvalidArgument
from services.scoring.core.space import ParamValue


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


@dataclass(frozen=True)
class Configuration:
    strategy: str
    params: dict[str, ParamValue]


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
class PolicySettings:
    algorithm: str = "thompson"
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

    def check(self) -> None:
        algorithms = ("thompson", "discounted_thompson", "ucb1", "epsilon_greedy")
        if self.algorithm not in algorithms:
            raise InvalidArgument(
                "settings.algorithm", f"must be one of {', '.join(algorithms)}, got {self.algorithm!r}"
            )
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


@dataclass(frozen=True)
class RecommendedItem:
    item_id: str
    score: float
    probability: float
    rank: int


@dataclass(frozen=True)
class Decision:
    decision_id: str
    request_id: str
    user_id: str
    arm_id: str
    propensity: float
    propensity_samples: int
    items: tuple[RecommendedItem, ...]
    degraded: bool
    degraded_reason: str
    algorithm: str
    context: dict[str, str]
    created_at: float
