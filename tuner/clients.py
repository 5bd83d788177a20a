"""The controller's Backend over gRPC: PolicyService (arms), MetricsService (live stats),
ScoringService (search space, offline screen). Thin: convert, call, convert."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import grpc

from rectune.domain.arms import ArmOrigin, ArmState
from rectune.domain.configuration import Configuration
from rectune.domain.data import DataShape
from rectune.domain.fidelity import FULL, Fidelity
from rectune.domain.space import SearchSpace
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
from services.common.clients import FIT_DEADLINE_SECONDS, Channels, ClientOptions, call_peer
from services.common.prototime import seconds, timestamp
from tuner.controller import Action, ArmStats, ArmView, BackendError
from tuner.screen import Screen

T = TypeVar("T")


def _backend_error(method: str, exc: grpc.RpcError) -> BackendError:
    return BackendError(f"{method}: {exc.code().name}: {exc.details()}")


def _call(method: str, call: Callable[[], T]) -> T:
    return call_peer(method, call, _backend_error)


class GrpcBackend:
    def __init__(self, policy_address: str, scoring_address: str, metrics_address: str, options: ClientOptions):
        self._channels = Channels()
        self.policy = policy_pb2_grpc.PolicyServiceStub(self._channels.open("policy", policy_address, options))
        self.scoring = scoring_pb2_grpc.ScoringServiceStub(self._channels.open("scoring", scoring_address, options))
        self.metrics = metrics_pb2_grpc.MetricsServiceStub(self._channels.open("metrics", metrics_address, options))
        self.screens = ScoringScreens(self.scoring)

    def close(self) -> None:
        self._channels.close()

    def arms(self) -> list[ArmView]:
        arms = _call("PolicyService.ListArms", lambda: self.policy.ListArms(policy_pb2.ListArmsRequest()).arms)
        by_arm = self._stats(metrics_pb2.GetArmStatsRequest(arm_ids=[a.arm_id for a in arms]))
        return [
            ArmView(
                arm.arm_id,
                shared.configuration(arm.configuration),
                arm.configuration_hash,
                shared.ORIGINS[arm.origin],
                shared.STATES[arm.state],
                by_arm.get(arm.arm_id, ArmStats()),
                seconds(arm.created_at),
            )
            for arm in arms
        ]

    def stats_since(self, start: float) -> dict[str, ArmStats]:
        window = common_pb2.TimeWindow(start=timestamp(start))
        return self._stats(metrics_pb2.GetArmStatsRequest(window=window))

    def _stats(self, request: metrics_pb2.GetArmStatsRequest) -> dict[str, ArmStats]:
        stats = _call("MetricsService.GetArmStats", lambda: self.metrics.GetArmStats(request).stats)
        return {s.arm_id: ArmStats(s.impressions, s.ctr, s.probability_best) for s in stats}

    def describe(self) -> tuple[SearchSpace, DataShape]:
        return self.screens.describe()

    def evaluate(
        self,
        configuration: Configuration,
        k: int,
        baseline: Configuration | None = None,
        ratio: float = 1.0,
        fidelity: Fidelity = FULL,
    ) -> Screen:
        return self.screens.evaluate(configuration, k, baseline, ratio, fidelity)

    def register(self, action: Action) -> None:
        assert action.configuration is not None, "register actions carry their configuration"
        request = policy_pb2.PutArmRequest(
            arm_id=action.arm_id,
            configuration=shared.configuration_message(action.configuration),
            origin=shared.ORIGIN_VALUES[action.origin or ArmOrigin.MANUAL],
            exposure_cap=action.exposure_cap,
            initial_state=policy_pb2.ARM_STATE_ACTIVE,
            reason=action.reason,
        )
        _call("PolicyService.PutArm", lambda: self.policy.PutArm(request, timeout=FIT_DEADLINE_SECONDS))

    def set_state(self, arm_id: str, state: ArmState, reason: str) -> None:
        request = policy_pb2.SetArmStateRequest(arm_id=arm_id, state=shared.STATE_VALUES[state], reason=reason)
        _call("PolicyService.SetArmState", lambda: self.policy.SetArmState(request))


class ScoringScreens:
    """ScoringService's search space and offline screens: all that a search needs (``rectune
    study`` uses it alone)."""

    def __init__(self, scoring: scoring_pb2_grpc.ScoringServiceStub) -> None:
        self.scoring = scoring

    def describe(self) -> tuple[SearchSpace, DataShape]:
        request = scoring_pb2.DescribeSearchSpaceRequest()
        answer = _call("ScoringService.DescribeSearchSpace", lambda: self.scoring.DescribeSearchSpace(request))
        return SearchSpace(tuple(map(shared.strategy_space, answer.strategies))), shared.data_shape(answer.data_shape)

    def evaluate(
        self,
        configuration: Configuration,
        k: int,
        baseline: Configuration | None = None,
        ratio: float = 1.0,
        fidelity: Fidelity = FULL,
    ) -> Screen:
        request = scoring_pb2.EvaluateConfigurationRequest(
            configuration=shared.configuration_message(configuration),
            k=k,
            baseline_ratio=ratio,
            fidelity=scoring_pb2.Fidelity(
                training_budget=fidelity.training_budget, user_fraction=fidelity.user_fraction
            ),
        )
        if baseline is not None:
            request.baseline.CopyFrom(shared.configuration_message(baseline))
        answer = _call(
            "ScoringService.EvaluateConfiguration",
            lambda: self.scoring.EvaluateConfiguration(request, timeout=FIT_DEADLINE_SECONDS),
        )
        clears = answer.comparison.probability_clears if answer.HasField("comparison") else None
        # A service older than the fidelity field answers without it: it evaluated in full.
        used = Fidelity(answer.fidelity.training_budget or 1.0, answer.fidelity.user_fraction or 1.0)
        return Screen(
            answer.configuration_hash,
            answer.metrics.ndcg,
            answer.metrics.recall,
            clears,
            used,
            answer.duration.ToTimedelta().total_seconds(),
        )
