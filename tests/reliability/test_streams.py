"""Streams are bounded and never starve the rest (issue #20, item 9), on a real
MetricsService: WatchArmStats and StreamEvents beyond max_streams (together) are refused with
RESOURCE_EXHAUSTED,
unary calls and health keep answering while the streams are open, a cancelled stream frees
its slot even with an hour-long min_interval, and stopping ends every stream at once rather
than waiting out the grace period."""

from __future__ import annotations

import threading
import time
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rectune.v1 import metrics_pb2
from tests.rpc import error_of

pytestmark = pytest.mark.integration

HOUR = Duration(seconds=3600)


def open_watch(stub, min_interval: Duration = HOUR):
    """A started WatchArmStats stream (its first push read) and the call, to cancel it."""
    call = stub.WatchArmStats(metrics_pb2.WatchArmStatsRequest(min_interval=min_interval), timeout=60)
    next(call)
    return call


def wait_until(condition, seconds: float = 10.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_streams_beyond_the_bound_are_refused_and_the_rest_keeps_answering(start_service) -> None:
    metrics = start_service("metrics", max_streams=2, max_workers=4)
    first, second = open_watch(metrics.stub), open_watch(metrics.stub)
    assert error_of(lambda: open_watch(metrics.stub)) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "WatchArmStats: 2 streams are open, the most this server keeps (max_streams); retry later or poll GetArmStats",
    )
    # With both streams open (each asleep for an hour), unary calls and health still get a thread.
    assert list(metrics.stub.GetArmStats(metrics_pb2.GetArmStatsRequest(), timeout=5).stats) == []
    health = health_pb2_grpc.HealthStub(metrics.channel)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
    # Cancelled, a stream frees its slot although its next push is an hour away.
    first.cancel()
    assert wait_until(lambda: _opens(metrics.stub))
    second.cancel()


def test_idle_event_streams_count_against_the_same_bound(start_service) -> None:
    """A StreamEvents client that opens a stream and sends nothing holds a thread as a watch
    does: two of them fill a bound of 2, the next stream of either kind is refused, unary
    calls still answer, and a stream that sends and ends frees its slot."""
    metrics = start_service("metrics", max_streams=2, max_workers=4)
    idle = [threading.Event(), threading.Event()]
    futures = [_idle_stream(metrics.stub, done) for done in idle]
    refusal = _fill(metrics.stub, futures, idle)
    assert refusal == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "StreamEvents: 2 streams are open, the most this server keeps (max_streams); "
        "retry later or send batches with RecordEvents",
    )
    assert error_of(lambda: next(iter(open_watch(metrics.stub))))[0] is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert list(metrics.stub.GetArmStats(metrics_pb2.GetArmStatsRequest(), timeout=5).stats) == []
    idle[0].set()
    assert futures[0].result(timeout=10).batches == 0
    assert wait_until(lambda: _probe(metrics.stub) is None)
    idle[1].set()
    futures[1].result(timeout=10)


def _idle_stream(stub: Any, done: threading.Event) -> Any:
    return stub.StreamEvents.future(_waiting_batches(done), timeout=30)


def _probe(stub: Any) -> tuple[grpc.StatusCode, str] | None:
    """None when an empty StreamEvents gets a slot (it ends at once, freeing it), else its error."""
    try:
        stub.StreamEvents(iter(()), timeout=5)
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return None


def _fill(stub: Any, futures: list[Any], idle: list[threading.Event]) -> tuple[grpc.StatusCode, str]:
    """Until both idle streams hold their slots: one refused because a probe held a slot for
    that moment is opened again. Returns the probe's refusal."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for index, future in enumerate(futures):
            if future.done():
                futures[index] = _idle_stream(stub, idle[index])
        time.sleep(0.1)
        refusal = _probe(stub)
        if refusal is not None and not any(future.done() for future in futures):
            return refusal
    raise AssertionError("the idle streams did not both get a slot")


def _waiting_batches(done: threading.Event):
    """A request stream that sends nothing until ``done``, then ends."""
    done.wait(30)
    return
    yield  # a generator: grpc reads it lazily, in its own thread


def _opens(stub) -> bool:
    try:
        open_watch(stub).cancel()
    except grpc.RpcError as error:
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
        return False
    return True


def test_stopping_ends_open_streams_at_once_instead_of_cancelling_them_after_the_grace(start_service) -> None:
    metrics = start_service("metrics", max_streams=3)
    calls = [open_watch(metrics.stub) for _ in range(3)]
    endings: list[str] = []

    def drain(call) -> None:
        try:
            for _ in call:
                pass
            endings.append("ended")
        except grpc.RpcError as error:
            endings.append(error.code().name)

    readers = [threading.Thread(target=drain, args=(call,)) for call in calls]
    for reader in readers:
        reader.start()
    metrics.service.stop(30.0)  # a long grace: the streams must not need it
    for reader in readers:
        reader.join(timeout=30)
    assert endings == ["ended", "ended", "ended"]


def test_the_stream_bound_must_leave_threads_for_unary_calls() -> None:
    from services.common.config import SettingsError
    from services.metrics.__main__ import MetricsSettings

    with pytest.raises(SettingsError, match=r"--max-streams: must be between 1 and --max-workers - 1 \(3\)"):
        MetricsSettings(port=0, max_workers=4, max_streams=4)
