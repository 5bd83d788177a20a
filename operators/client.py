"""What operators read and change, over gRPC: the arms with their live statistics and model
freshness, the policy's settings, statistics over a window, the time series, the champion's
rollback. Thin: call, convert to plain records (``asdict`` gives the JSON the CLI and the
dashboard print)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from google.protobuf import field_mask_pb2, json_format

from operators.settings import OperatorSettings
from rectune.domain.arms import ArmOrigin, ArmState
from rectune.domain.configuration import Configuration
from rectune.v1 import (
    common_pb2,
    metrics_pb2,
    metrics_pb2_grpc,
    policy_pb2,
    policy_pb2_grpc,
    scoring_pb2,
    scoring_pb2_grpc,
)
from services.common import convert as shared
from services.common.clients import FIT_DEADLINE_SECONDS, Channels, call_peer
from services.common.prototime import duration, duration_seconds, seconds, timestamp

T = TypeVar("T")


class OperatorError(Exception):
    """A service refused or could not be reached: which call, its status code and its words."""

    def __init__(self, method: str, code: str, details: str) -> None:
        super().__init__(f"{method}: {code}: {details}")
        self.method, self.code, self.details = method, code, details


def _operator_error(method: str, exc: grpc.RpcError) -> OperatorError:
    return OperatorError(method, exc.code().name, exc.details() or "")


def _call(method: str, call: Callable[[], T]) -> T:
    return call_peer(method, call, _operator_error)


@dataclass(frozen=True)
class Stats:
    impressions: int
    clicks: int
    ctr: float
    ctr_low: float
    ctr_high: float
    conversion_rate: float
    probability_best: float
    share: float  # of all impressions in the window


@dataclass(frozen=True)
class FreshnessRow:
    strategy: str
    fitted_at: float
    age_seconds: float
    interactions_at_fit: int
    interactions_since_fit: int
    refits: int
    refit_failures: int


@dataclass(frozen=True)
class ArmRow:
    arm_id: str
    state: str
    origin: str
    configuration: dict[str, Any]
    configuration_hash: str
    exposure_cap: float
    state_reason: str
    created_at: float
    updated_at: float
    stats: Stats | None = None
    freshness: FreshnessRow | None = None  # None until ScoringService has fitted its model


@dataclass(frozen=True)
class Bucket:
    start: float
    impressions: int
    clicks: int


@dataclass(frozen=True)
class Series:
    arm_id: str
    buckets: list[Bucket] = field(default_factory=list)


class OperatorClient:
    def __init__(self, settings: OperatorSettings) -> None:
        reading = settings.reading_options()
        self._channels = Channels()
        self.policy = policy_pb2_grpc.PolicyServiceStub(
            self._channels.open("policy", settings.policy_address, settings.admin_options())
        )
        self.metrics = metrics_pb2_grpc.MetricsServiceStub(
            self._channels.open("metrics", settings.metrics_address, reading)
        )
        self.scoring = scoring_pb2_grpc.ScoringServiceStub(
            self._channels.open("scoring", settings.scoring_address, reading)
        )

    def close(self) -> None:
        self._channels.close()

    # -- reads -----------------------------------------------------------------------------------

    def arms(self, window_seconds: float | None = None) -> list[ArmRow]:
        """Every arm with its statistics (over the window, or all time) and model freshness."""
        listed = self._listed()
        stats = self.stats(window_seconds)
        freshness = self.freshness()
        return [_arm_row(arm, stats.get(arm.arm_id), freshness.get(arm.configuration_hash)) for arm in listed]

    def champion(self) -> str:
        """The champion's arm id ("" before one is registered)."""
        champion = shared.STATE_VALUES[ArmState.CHAMPION]
        return next((arm.arm_id for arm in self._listed() if arm.state == champion), "")

    def _listed(self) -> list[policy_pb2.Arm]:
        return list(_call("PolicyService.ListArms", lambda: self.policy.ListArms(policy_pb2.ListArmsRequest()).arms))

    def stats(self, window_seconds: float | None = None) -> dict[str, Stats]:
        request = metrics_pb2.GetArmStatsRequest(window=_window(window_seconds))
        answer = _call("MetricsService.GetArmStats", lambda: self.metrics.GetArmStats(request))
        total = sum(s.impressions for s in answer.stats)
        return {s.arm_id: _stats(s, total) for s in answer.stats}

    def freshness(self) -> dict[str, FreshnessRow]:
        """By configuration hash; empty when ScoringService cannot be reached (freshness is an
        extra on the operators' views, never a reason to show nothing)."""
        try:
            models = self.scoring.ListModels(scoring_pb2.ListModelsRequest()).models
        except grpc.RpcError:
            return {}
        return {m.configuration_hash: _freshness(m) for m in models}

    def series(self, window_seconds: float, bucket_seconds: float) -> list[Series]:
        request = metrics_pb2.GetTimeSeriesRequest(window=_window(window_seconds), bucket=duration(bucket_seconds))
        answer = _call("MetricsService.GetTimeSeries", lambda: self.metrics.GetTimeSeries(request))
        return [
            Series(s.arm_id, [Bucket(seconds(b.start), b.impressions, b.clicks) for b in s.buckets])
            for s in answer.series
        ]

    def settings(self) -> dict[str, Any]:
        request = policy_pb2.GetPolicySettingsRequest()
        answer = _call("PolicyService.GetPolicySettings", lambda: self.policy.GetPolicySettings(request))
        return _settings_dict(answer.settings)

    # -- changes (the admin token) ---------------------------------------------------------------

    def put_arm(
        self, arm_id: str, configuration: Configuration, champion: bool, exposure_cap: float, reason: str
    ) -> ArmRow:
        request = policy_pb2.PutArmRequest(
            arm_id=arm_id,
            configuration=shared.configuration_message(configuration),
            origin=shared.ORIGIN_VALUES[ArmOrigin.MANUAL],
            exposure_cap=exposure_cap,
            initial_state=shared.STATE_VALUES[ArmState.CHAMPION if champion else ArmState.ACTIVE],
            reason=reason,
        )
        answer = _call("PolicyService.PutArm", lambda: self.policy.PutArm(request, timeout=FIT_DEADLINE_SECONDS))
        return _arm_row(answer.arm, None, None)

    def set_state(self, arm_id: str, state: ArmState, reason: str) -> ArmRow:
        request = policy_pb2.SetArmStateRequest(arm_id=arm_id, state=shared.STATE_VALUES[state], reason=reason)
        answer = _call("PolicyService.SetArmState", lambda: self.policy.SetArmState(request))
        return _arm_row(answer.arm, None, None)

    def rollback(self, reason: str) -> tuple[ArmRow, str]:
        request = policy_pb2.RollbackChampionRequest(reason=reason)
        answer = _call("PolicyService.RollbackChampion", lambda: self.policy.RollbackChampion(request))
        return _arm_row(answer.arm, None, None), answer.replaced_arm_id

    def update_settings(self, changes: dict[str, Any]) -> dict[str, Any]:
        """``changes``: dotted field paths (``guardrail.enabled``) to values, in the JSON form of
        PolicySettings (durations as "3600s")."""
        message = policy_pb2.PolicySettings()
        try:
            json_format.ParseDict(_nested(changes), message)
        except json_format.ParseError as exc:
            raise OperatorError("PolicySettings", "INVALID_ARGUMENT", str(exc)) from None
        request = policy_pb2.UpdatePolicySettingsRequest(
            settings=message, update_mask=field_mask_pb2.FieldMask(paths=[_snake(path) for path in changes])
        )
        answer = _call("PolicyService.UpdatePolicySettings", lambda: self.policy.UpdatePolicySettings(request))
        return _settings_dict(answer.settings)


def _window(window_seconds: float | None) -> common_pb2.TimeWindow:
    if window_seconds is None:
        return common_pb2.TimeWindow()
    return common_pb2.TimeWindow(start=timestamp(time.time() - window_seconds))


def _arm_row(arm: policy_pb2.Arm, stats: Stats | None, freshness: FreshnessRow | None) -> ArmRow:
    return ArmRow(
        arm_id=arm.arm_id,
        state=shared.STATES[arm.state].value,
        origin=shared.ORIGINS[arm.origin].value,
        configuration=shared.configuration(arm.configuration).as_dict(),
        configuration_hash=arm.configuration_hash,
        exposure_cap=arm.exposure_cap,
        state_reason=arm.state_reason,
        created_at=seconds(arm.created_at),
        updated_at=seconds(arm.updated_at),
        stats=stats,
        freshness=freshness,
    )


def _stats(message: metrics_pb2.ArmStats, total_impressions: int) -> Stats:
    return Stats(
        impressions=message.impressions,
        clicks=message.clicks,
        ctr=message.ctr,
        ctr_low=message.ctr_interval.lower,
        ctr_high=message.ctr_interval.upper,
        conversion_rate=message.conversion_rate,
        probability_best=message.probability_best,
        share=message.impressions / total_impressions if total_impressions else 0.0,
    )


def _freshness(message: scoring_pb2.ModelFreshness) -> FreshnessRow:
    return FreshnessRow(
        strategy=message.strategy,
        fitted_at=seconds(message.fitted_at),
        age_seconds=duration_seconds(message.age),
        interactions_at_fit=message.interactions_at_fit,
        interactions_since_fit=message.interactions_since_fit,
        refits=message.refits,
        refit_failures=message.refit_failures,
    )


def _settings_dict(message: policy_pb2.PolicySettings) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _nested(changes: dict[str, Any]) -> dict[str, Any]:
    """{"guardrail.enabled": False} -> {"guardrail": {"enabled": False}}."""
    nested: dict[str, Any] = {}
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        node = nested
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return nested


def _snake(path: str) -> str:
    return path.replace("-", "_")


def settings_paths(settings: dict[str, Any], prefix: str = "") -> Sequence[str]:
    """Every settable leaf of the settings, dotted (what `rectune settings set` accepts)."""
    paths: list[str] = []
    for name, value in settings.items():
        if isinstance(value, dict):
            paths.extend(settings_paths(value, f"{prefix}{name}."))
        else:
            paths.append(f"{prefix}{name}")
    return paths
