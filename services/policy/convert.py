"""Protobuf <-> domain types for PolicyService. Nothing else."""

from __future__ import annotations

from typing import Any

from rectune.v1 import common_pb2, policy_pb2
from services.common.errors import InvalidArgument
from services.common.prototime import duration, seconds, timestamp
from services.policy.clients import configuration_message
from services.policy.core.model import Arm, ArmOrigin, ArmState, Configuration, Decision, PolicySettings
from services.scoring import convert as scoring_convert
from services.scoring.core.data import Interaction

ORIGINS: dict[policy_pb2.ArmOrigin.ValueType, ArmOrigin] = {
    policy_pb2.ARM_ORIGIN_CONTROL: ArmOrigin.CONTROL,
    policy_pb2.ARM_ORIGIN_MANUAL: ArmOrigin.MANUAL,
    policy_pb2.ARM_ORIGIN_TUNER_LM: ArmOrigin.TUNER_LM,
    policy_pb2.ARM_ORIGIN_TUNER_TPE: ArmOrigin.TUNER_TPE,
    policy_pb2.ARM_ORIGIN_TUNER_RANDOM: ArmOrigin.TUNER_RANDOM,
}
STATES: dict[policy_pb2.ArmState.ValueType, ArmState] = {
    policy_pb2.ARM_STATE_CANDIDATE: ArmState.CANDIDATE,
    policy_pb2.ARM_STATE_ACTIVE: ArmState.ACTIVE,
    policy_pb2.ARM_STATE_PAUSED: ArmState.PAUSED,
    policy_pb2.ARM_STATE_RETIRED: ArmState.RETIRED,
    policy_pb2.ARM_STATE_CHAMPION: ArmState.CHAMPION,
}
KINDS: dict[common_pb2.EventKind.ValueType, str] = {
    common_pb2.EVENT_KIND_IMPRESSION: "impression",
    common_pb2.EVENT_KIND_CLICK: "click",
    common_pb2.EVENT_KIND_CONVERSION: "conversion",
    common_pb2.EVENT_KIND_RATING: "rating",
    common_pb2.EVENT_KIND_CUSTOM: "custom",
}


ORIGIN_VALUES = {value: key for key, value in ORIGINS.items()}
STATE_VALUES = {value: key for key, value in STATES.items()}


def origin(value: policy_pb2.ArmOrigin.ValueType) -> ArmOrigin:
    if value not in ORIGINS:
        raise InvalidArgument("origin", "must be one of CONTROL, MANUAL, TUNER_LM, TUNER_TPE, TUNER_RANDOM")
    return ORIGINS[value]


def state(value: policy_pb2.ArmState.ValueType, field_name: str) -> ArmState:
    if value not in STATES:
        raise InvalidArgument(field_name, "must be one of CANDIDATE, ACTIVE, PAUSED, RETIRED, CHAMPION")
    return STATES[value]


def kind(value: common_pb2.EventKind.ValueType) -> str:
    return KINDS.get(value, "")


def configuration(message: common_pb2.Configuration, present: bool) -> Configuration:
    strategy, params = scoring_convert.configuration(message, present)
    return Configuration(strategy, params)


def history(messages: Any) -> list[Interaction]:
    return [Interaction(m.user_id, m.item_id, m.value, seconds(m.time)) for m in messages]


def arm_message(arm: Arm) -> policy_pb2.Arm:
    return policy_pb2.Arm(
        arm_id=arm.arm_id,
        configuration=configuration_message(arm.configuration),
        configuration_hash=arm.configuration_hash,
        origin=ORIGIN_VALUES[arm.origin],
        state=STATE_VALUES[arm.state],
        exposure_cap=arm.exposure_cap,
        created_at=timestamp(arm.created_at),
        updated_at=timestamp(arm.updated_at),
        state_reason=arm.state_reason,
        posterior=policy_pb2.ArmPosterior(
            alpha=1.0 + min(arm.reward, arm.impressions),
            beta=1.0 + max(arm.impressions - arm.reward, 0.0),
            impressions=round(arm.impressions),
            clicks=arm.clicks,
            conversions=arm.conversions,
            reward_sum=arm.reward,
        ),
    )


def recommend_response(decision: Decision) -> policy_pb2.RecommendResponse:
    return policy_pb2.RecommendResponse(
        decision_id=decision.decision_id,
        arm_id=decision.arm_id,
        items=[
            common_pb2.ScoredItem(item_id=i.item_id, score=i.score, probability=i.probability, rank=i.rank)
            for i in decision.items
        ],
        propensity=decision.propensity,
        propensity_samples=decision.propensity_samples,
        degraded=decision.degraded,
        degraded_reason=decision.degraded_reason,
    )


def settings_message(settings: PolicySettings) -> policy_pb2.PolicySettings:
    return policy_pb2.PolicySettings(
        algorithm=settings.algorithm,
        epsilon=settings.epsilon,
        discount=settings.discount,
        ucb_c=settings.ucb_c,
        reward=policy_pb2.RewardSpec(click_weight=settings.click_weight, conversion_weight=settings.conversion_weight),
        champion_min_share=settings.champion_min_share,
        default_exposure_cap=settings.default_exposure_cap,
        reward_window=duration(settings.reward_window_seconds),
        guardrail=policy_pb2.GuardrailSettings(
            enabled=settings.guardrail.enabled,
            delta=settings.guardrail.delta,
            threshold=settings.guardrail.threshold,
            min_impressions=settings.guardrail.min_impressions,
        ),
        propensity_samples=settings.propensity_samples,
        scoring_deadline=duration(settings.scoring_deadline_seconds),
    )


# update_mask path -> (domain field, how to read it from the message)
SETTING_PATHS: dict[str, tuple[str, Any]] = {
    "algorithm": ("algorithm", lambda m: m.algorithm),
    "epsilon": ("epsilon", lambda m: m.epsilon),
    "discount": ("discount", lambda m: m.discount),
    "ucb_c": ("ucb_c", lambda m: m.ucb_c),
    "reward.click_weight": ("click_weight", lambda m: m.reward.click_weight),
    "reward.conversion_weight": ("conversion_weight", lambda m: m.reward.conversion_weight),
    "champion_min_share": ("champion_min_share", lambda m: m.champion_min_share),
    "default_exposure_cap": ("default_exposure_cap", lambda m: m.default_exposure_cap),
    "reward_window": ("reward_window_seconds", lambda m: m.reward_window.ToNanoseconds() / 1e9),
    "guardrail.enabled": ("guardrail.enabled", lambda m: m.guardrail.enabled),
    "guardrail.delta": ("guardrail.delta", lambda m: m.guardrail.delta),
    "guardrail.threshold": ("guardrail.threshold", lambda m: m.guardrail.threshold),
    "guardrail.min_impressions": ("guardrail.min_impressions", lambda m: m.guardrail.min_impressions),
    "propensity_samples": ("propensity_samples", lambda m: m.propensity_samples),
    "scoring_deadline": ("scoring_deadline_seconds", lambda m: m.scoring_deadline.ToNanoseconds() / 1e9),
}


def settings_changes(request: policy_pb2.UpdatePolicySettingsRequest) -> dict[str, Any]:
    """The fields named by update_mask, as domain changes (guardrail ones nested)."""
    if not request.update_mask.paths:
        raise InvalidArgument("update_mask", "must name at least one field, for example 'algorithm'")
    changes: dict[str, Any] = {}
    for index, path in enumerate(request.update_mask.paths):
        if path not in SETTING_PATHS:
            raise InvalidArgument(
                f"update_mask.paths[{index}]", f"unknown field {path!r}; known: {', '.join(SETTING_PATHS)}"
            )
        name, read = SETTING_PATHS[path]
        value = read(request.settings)
        if name.startswith("guardrail."):
            changes.setdefault("guardrail", {})[name.removeprefix("guardrail.")] = value
        else:
            changes[name] = value
    return changes
