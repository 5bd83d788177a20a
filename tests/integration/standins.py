"""Stand-in servicers for testing the runtime around handlers (interceptors, shutdown, clients).

They are NOT the real services: each raises or sleeps on purpose so that the error
mapping, auth, deadlines, retries and draining can be observed on a real gRPC server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc

from rectune.domain.errors import InvalidArgument, NotFound, Unavailable
from rectune.v1 import metrics_pb2, metrics_pb2_grpc, policy_pb2, policy_pb2_grpc
from services.common.contracts import METRICS_SERVICE, POLICY_SERVICE
from services.common.server import RunningService, ServiceRegistration, start_service
from services.common.settings import ServerSettings


class StandInPolicyServicer(policy_pb2_grpc.PolicyServiceServicer):
    """Each RPC exercises one path of the runtime."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()
        self.slow_seconds = 1.0
        self.unavailable_before_success = 2

    def _count(self, name: str) -> int:
        with self._lock:
            self.calls[name] = self.calls.get(name, 0) + 1
            return self.calls[name]

    def Recommend(self, request: policy_pb2.RecommendRequest, context: Any) -> policy_pb2.RecommendResponse:
        self._count("Recommend")
        if request.k <= 0:
            raise InvalidArgument("k", f"must be >= 1, got {request.k}")
        if request.user_id == "boom":
            raise RuntimeError("secret internal detail /etc/passwd")
        if request.user_id == "slow":
            time.sleep(self.slow_seconds)
        return policy_pb2.RecommendResponse(decision_id="d1", arm_id="a1")

    def SetArmState(self, request: policy_pb2.SetArmStateRequest, context: Any) -> policy_pb2.SetArmStateResponse:
        self._count("SetArmState")
        raise NotFound("arm_id", f"no arm {request.arm_id!r}")

    def ListArms(self, request: policy_pb2.ListArmsRequest, context: Any) -> policy_pb2.ListArmsResponse:
        # Idempotent: the channel's retry policy retries it on UNAVAILABLE.
        if self._count("ListArms") <= self.unavailable_before_success:
            raise Unavailable("warming up")
        return policy_pb2.ListArmsResponse()

    def PutArm(self, request: policy_pb2.PutArmRequest, context: Any) -> policy_pb2.PutArmResponse:
        # Not idempotent: must not be retried.
        self._count("PutArm")
        raise Unavailable("store down")

    def GetPolicySettings(
        self, request: policy_pb2.GetPolicySettingsRequest, context: Any
    ) -> policy_pb2.GetPolicySettingsResponse:
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, "chosen by the handler")
        raise AssertionError("unreachable")


class StandInMetricsServicer(metrics_pb2_grpc.MetricsServiceServicer):
    """Streaming paths: errors raised mid-stream and while reading a client stream."""

    def WatchArmStats(
        self, request: metrics_pb2.WatchArmStatsRequest, context: Any
    ) -> Iterator[metrics_pb2.WatchArmStatsResponse]:
        yield metrics_pb2.WatchArmStatsResponse()
        if request.arm_ids == ["bad"]:
            raise InvalidArgument("arm_ids[0]", "unknown arm 'bad'")
        raise ValueError("hidden detail")

    def StreamEvents(self, request_iterator: Any, context: Any) -> metrics_pb2.StreamEventsResponse:
        for index, batch in enumerate(request_iterator):
            if not batch.events:
                raise InvalidArgument(f"batches[{index}].events", "must not be empty")
        return metrics_pb2.StreamEventsResponse()


def start_standins(
    settings: ServerSettings, admin_methods: tuple[str, ...] = ()
) -> tuple[RunningService, StandInPolicyServicer]:
    policy = StandInPolicyServicer()  # type: ignore[abstract]  # the stubs mark every RPC abstract; a stand-in serves only those its test calls
    registrations = [
        ServiceRegistration(POLICY_SERVICE, policy_pb2_grpc.add_PolicyServiceServicer_to_server, policy),
        ServiceRegistration(
            METRICS_SERVICE,
            metrics_pb2_grpc.add_MetricsServiceServicer_to_server,
            StandInMetricsServicer(),  # type: ignore[abstract]  # the stubs mark every RPC abstract; a stand-in serves only those its test calls
        ),
    ]
    service = start_service("standins", registrations, settings, admin_methods)
    service.health.set_serving()
    return service, policy
