"""Protobuf <-> domain types for PolicyService. Nothing else."""

from __future__ import annotations

from typing import Any

from rectune.domain.arms import ArmOrigin, ArmState
from rectune.domain.errors import InvalidArgument, quoted
from rectune.domain.events import Decision, EventKind
from rectune.v1 import common_pb2, policy_pb2
from services.common import convert as shared
from services.common.prototime import duration, timestamp
from services.policy.core.model import Arm, BanditSettings


def origin(value: policy_pb2.ArmOrigin.ValueType) -> ArmOrigin:
    if value not in shared.ORIGINS:
        raise InvalidArgument("origin", "must be one of CONTROL, MANUAL, TUNER_LM, TUNER_TPE, TUNER_RANDOM")
    return shared.ORIGINS[value]


def state(value: policy_pb2.ArmState.ValueType, field_name: str) -> ArmState:
    if value not in shared.STATES:
        raise InvalidArgument(field_name, "must be one of CANDIDATE, ACTIVE, PAUSED, RETIRED, CHAMPION")
    return shared.STATES[value]


def kind(value: common_pb2.EventKind.ValueType) -> EventKind | None:
    return shared.EVENT_KINDS.get(value)


def arm_message(arm: Arm) -> policy_pb2.Arm:
    return policy_pb2.Arm(
        arm_id=arm.arm_id,
        configuration=shared.configuration_message(arm.configuration),
        configuration_hash=arm.configuration_hash,
        origin=shared.ORIGIN_VALUES[arm.origin],
        state=shared.STATE_VALUES[arm.state],
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
        items=shared.scored_items(decision.items),
        propensity=decision.propensity,
        propensity_samples=decision.propensity_samples,
        degraded=decision.degraded,
        degraded_reason=decision.degraded_reason,
    )


def settings_message(settings: BanditSettings) -> policy_pb2.PolicySettings:
    return policy_pb2.PolicySettings(
        algorithm=settings.algorithm.value,
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
                f"update_mask.paths[{index}]", f"unknown field {quoted(path)}; known: {', '.join(SETTING_PATHS)}"
            )
        name, read = SETTING_PATHS[path]
        value = read(request.settings)
        if name.startswith("guardrail."):
            changes.setdefault("guardrail", {})[name.removeprefix("guardrail.")] = value
        else:
            changes[name] = value
    return changes
