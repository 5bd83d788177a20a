"""The shared runtime on a real server: error mapping, deadlines, retries, health, draining."""

from __future__ import annotations

import socket
import threading
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from rectune.v1 import common_pb2, metrics_pb2, metrics_pb2_grpc, policy_pb2, policy_pb2_grpc
from services.common.clients import ClientOptions, make_channel
from services.common.contracts import METRICS_SERVICE, POLICY_SERVICE
from services.common.server import RunningService, ServiceRegistration, start_service
from services.common.settings import ServerSettings
from tests.integration.standins import StandInPolicyServicer, start_standins
from tests.rpc import rpc_error

pytestmark = pytest.mark.integration


@pytest.fixture
def standins() -> Iterator[tuple[RunningService, StandInPolicyServicer, grpc.Channel]]:
    service, servicer = start_standins(ServerSettings(port=0, grace_seconds=5.0))
    channel = grpc.insecure_channel(f"127.0.0.1:{service.port}")
    yield service, servicer, channel
    channel.close()
    service.stop(0)


def test_validation_error_is_invalid_argument_naming_the_field(standins) -> None:
    _, _, channel = standins
    stub = policy_pb2_grpc.PolicyServiceStub(channel)
    error = rpc_error(lambda: stub.Recommend(policy_pb2.RecommendRequest(user_id="u", k=0)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "k: must be >= 1, got 0"


def test_unexpected_exception_is_internal_without_traceback(standins) -> None:
    _, _, channel = standins
    stub = policy_pb2_grpc.PolicyServiceStub(channel)
    error = rpc_error(lambda: stub.Recommend(policy_pb2.RecommendRequest(user_id="boom", k=1)))
    assert error.code() == grpc.StatusCode.INTERNAL
    details = error.details() or ""
    assert details.startswith("internal error (reference ")
    for leaked in ("Traceback", "secret", "RuntimeError", "File "):
        assert leaked not in details


def test_not_found_names_the_field(standins) -> None:
    _, _, channel = standins
    stub = policy_pb2_grpc.PolicyServiceStub(channel)
    error = rpc_error(lambda: stub.SetArmState(policy_pb2.SetArmStateRequest(arm_id="nope")))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "arm_id: no arm 'nope'"


def test_status_chosen_by_the_handler_is_kept(standins) -> None:
    _, _, channel = standins
    stub = policy_pb2_grpc.PolicyServiceStub(channel)
    error = rpc_error(lambda: stub.GetPolicySettings(policy_pb2.GetPolicySettingsRequest()))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == "chosen by the handler"


def test_error_in_server_stream_is_mapped_after_the_first_message(standins) -> None:
    _, _, channel = standins
    stub = metrics_pb2_grpc.MetricsServiceStub(channel)
    stream = stub.WatchArmStats(metrics_pb2.WatchArmStatsRequest(arm_ids=["bad"]))
    assert next(stream) == metrics_pb2.WatchArmStatsResponse()
    error = rpc_error(lambda: next(stream))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "arm_ids[0]: unknown arm 'bad'"
    hidden = stub.WatchArmStats(metrics_pb2.WatchArmStatsRequest())
    next(hidden)
    error = rpc_error(lambda: next(hidden))
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "hidden" not in (error.details() or "")


def test_error_while_reading_a_client_stream_is_mapped(standins) -> None:
    _, _, channel = standins
    stub = metrics_pb2_grpc.MetricsServiceStub(channel)
    batches = [
        metrics_pb2.StreamEventsRequest(events=[common_pb2.Event(event_id="e1")]),
        metrics_pb2.StreamEventsRequest(),
    ]
    error = rpc_error(lambda: stub.StreamEvents(iter(batches)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "batches[1].events: must not be empty"


def test_a_method_the_servicer_lacks_is_unimplemented_naming_it(standins) -> None:
    _, _, channel = standins
    stub = policy_pb2_grpc.PolicyServiceStub(channel)
    error = rpc_error(lambda: stub.UpdatePolicySettings(policy_pb2.UpdatePolicySettingsRequest()))
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED
    assert error.details() == "/rectune.v1.PolicyService/UpdatePolicySettings is not implemented yet"


def test_client_channel_applies_a_default_deadline(standins) -> None:
    service, servicer, _ = standins
    servicer.slow_seconds = 2.0
    channel = make_channel(f"127.0.0.1:{service.port}", ClientOptions(deadline_seconds=0.2))
    stub = policy_pb2_grpc.PolicyServiceStub(channel)
    error = rpc_error(lambda: stub.Recommend(policy_pb2.RecommendRequest(user_id="slow", k=1)))
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    channel.close()


def test_idempotent_rpc_is_retried_on_unavailable_and_others_are_not(standins) -> None:
    service, servicer, _ = standins
    channel = make_channel(f"127.0.0.1:{service.port}", ClientOptions(deadline_seconds=5.0))
    stub = policy_pb2_grpc.PolicyServiceStub(channel)
    assert stub.ListArms(policy_pb2.ListArmsRequest()) == policy_pb2.ListArmsResponse()
    assert servicer.calls["ListArms"] == servicer.unavailable_before_success + 1
    error = rpc_error(lambda: stub.PutArm(policy_pb2.PutArmRequest()))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert servicer.calls["PutArm"] == 1
    channel.close()


def health_check(channel: grpc.Channel, service: str = "") -> str:
    response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def test_health_is_not_serving_until_the_service_says_ready() -> None:
    registration = ServiceRegistration(
        POLICY_SERVICE,
        policy_pb2_grpc.add_PolicyServiceServicer_to_server,
        StandInPolicyServicer(),  # type: ignore[abstract]  # the stubs mark every RPC abstract; a stand-in serves only those its test calls
    )
    service = start_service("not-ready", [registration], ServerSettings(port=0))
    with grpc.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        assert health_check(channel) == "NOT_SERVING"
        assert health_check(channel, POLICY_SERVICE) == "NOT_SERVING"
        service.health.set_serving()
        assert health_check(channel) == "SERVING"
        assert health_check(channel, POLICY_SERVICE) == "SERVING"
        error = rpc_error(lambda: health_check(channel, "rectune.v1.NoSuchService"))
        assert error.code() == grpc.StatusCode.NOT_FOUND
    service.stop(0)


def test_reflection_lists_the_served_services(standins) -> None:
    _, _, channel = standins
    names = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {POLICY_SERVICE, METRICS_SERVICE, "grpc.health.v1.Health"} <= names


def test_stop_drains_in_flight_calls_and_refuses_new_ones(standins) -> None:
    service, servicer, channel = standins
    servicer.slow_seconds = 1.0
    stub = policy_pb2_grpc.PolicyServiceStub(channel)
    in_flight = stub.Recommend.future(policy_pb2.RecommendRequest(user_id="slow", k=1), timeout=10)
    while servicer.calls.get("Recommend", 0) < 1:
        threading.Event().wait(0.01)
    stopper = threading.Thread(target=service.stop, kwargs={"grace_seconds": 5.0})
    stopper.start()
    assert in_flight.result().decision_id == "d1"
    stopper.join()
    error = rpc_error(lambda: stub.Recommend(policy_pb2.RecommendRequest(user_id="u", k=1), timeout=2))
    assert error.code() == grpc.StatusCode.UNAVAILABLE


def test_calls_still_running_after_the_grace_period_are_cancelled(standins) -> None:
    service, servicer, channel = standins
    servicer.slow_seconds = 5.0
    stub = policy_pb2_grpc.PolicyServiceStub(channel)
    in_flight = stub.Recommend.future(policy_pb2.RecommendRequest(user_id="slow", k=1), timeout=10)
    while servicer.calls.get("Recommend", 0) < 1:
        threading.Event().wait(0.01)
    service.stop(grace_seconds=0.2)
    error = rpc_error(in_flight.result)
    assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


def test_prometheus_endpoint_counts_rpcs_by_status_code() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        metrics_port = probe.getsockname()[1]
    service, _ = start_standins(ServerSettings(port=0, prometheus_port=metrics_port))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            stub = policy_pb2_grpc.PolicyServiceStub(channel)
            stub.Recommend(policy_pb2.RecommendRequest(user_id="u", k=1))
            rpc_error(lambda: stub.Recommend(policy_pb2.RecommendRequest(user_id="u", k=0)))
            rpc_error(lambda: stub.Recommend(policy_pb2.RecommendRequest(user_id="u", k=0)))
        body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    finally:
        service.stop(0)
    method = 'method="/rectune.v1.PolicyService/Recommend"'
    assert f'rectune_rpc_requests_total{{code="OK",{method}}} 1.0' in body
    assert f'rectune_rpc_requests_total{{code="INVALID_ARGUMENT",{method}}} 2.0' in body
    assert f"rectune_rpc_duration_seconds_count{{{method}}} 3.0" in body
