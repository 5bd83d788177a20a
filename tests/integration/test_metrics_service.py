"""MetricsService over gRPC on a real server, on SQLite and on PostgreSQL."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from typing import Any

import grpc
import pytest

from rectune.v1 import common_pb2, metrics_pb2
from tests.rpc import error_of

pytestmark = pytest.mark.integration


def now_event(
    event_id: str, kind: common_pb2.EventKind.ValueType, arm: str = "a", decision: str = "d1"
) -> common_pb2.Event:
    message = common_pb2.Event(event_id=event_id, decision_id=decision, arm_id=arm, user_id="u", kind=kind)
    message.time.GetCurrentTime()
    return message


def batch(arm: str, impressions: int, clicks: int, prefix: str = "") -> list[common_pb2.Event]:
    return [
        now_event(f"{prefix}{arm}-i{n}", common_pb2.EVENT_KIND_IMPRESSION, arm, f"{arm}-d{n}")
        for n in range(impressions)
    ] + [now_event(f"{prefix}{arm}-c{n}", common_pb2.EVENT_KIND_CLICK, arm, f"{arm}-d{n}") for n in range(clicks)]


def stats_by_arm(stub) -> dict[str, metrics_pb2.ArmStats]:
    response = stub.GetArmStats(metrics_pb2.GetArmStatsRequest(), timeout=10)
    return {s.arm_id: s for s in response.stats}


def test_record_is_idempotent_and_counts_by_arm(start_service, database_url: str) -> None:
    stub = start_service("metrics", database_url=database_url).stub
    request = metrics_pb2.RecordEventsRequest(events=batch("a", 20, 5) + batch("b", 10, 1))
    first = stub.RecordEvents(request, timeout=10)
    second = stub.RecordEvents(request, timeout=10)
    assert (first.accepted, first.duplicates, second.accepted, second.duplicates) == (36, 0, 0, 36)
    stats = stats_by_arm(stub)
    assert (stats["a"].impressions, stats["a"].clicks, stats["a"].ctr) == (20, 5, 0.25)
    assert stats["a"].ctr_interval.lower < 0.25 < stats["a"].ctr_interval.upper
    assert stats["a"].ctr_interval.confidence == 0.95
    assert stats["a"].probability_best + stats["b"].probability_best == pytest.approx(1.0)


def test_a_bad_event_rejects_the_whole_batch_naming_index_and_field(start_service, database_url: str) -> None:
    stub = start_service("metrics", database_url=database_url).stub
    events = batch("a", 5, 0)
    events[3].value = float("nan")
    assert error_of(lambda: stub.RecordEvents(metrics_pb2.RecordEventsRequest(events=events), timeout=10)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "events[3].value: must be a finite number, got nan",
    )
    assert stats_by_arm(stub) == {}
    events[3].value = 0.0
    events[1].kind = common_pb2.EVENT_KIND_UNSPECIFIED
    assert error_of(lambda: stub.RecordEvents(metrics_pb2.RecordEventsRequest(events=events), timeout=10)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "events[1].kind: must be one of impression, click, conversion, rating, custom",
    )


def test_stream_commits_each_batch_and_names_the_bad_one(start_service, database_url: str) -> None:
    stub = start_service("metrics", database_url=database_url).stub
    batches = [metrics_pb2.StreamEventsRequest(events=batch("a", 3, 1, prefix=f"s{n}-")) for n in range(3)]
    response = stub.StreamEvents(iter(batches), timeout=30)
    assert (response.accepted, response.duplicates, response.batches) == (12, 0, 3)
    broken = [
        metrics_pb2.StreamEventsRequest(events=batch("b", 2, 0)),
        metrics_pb2.StreamEventsRequest(events=[common_pb2.Event(event_id="x")]),
    ]
    assert error_of(lambda: stub.StreamEvents(iter(broken), timeout=30)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "requests[1].events[0].decision_id: must not be empty",
    )
    assert stats_by_arm(stub)["b"].impressions == 2  # the batch before the bad one stays


def test_decisions_export_with_rewards(start_service, database_url: str) -> None:
    stub = start_service("metrics", database_url=database_url).stub
    decisions = []
    for n in range(3):
        decision = metrics_pb2.Decision(decision_id=f"d{n}", arm_id="a", propensity=0.25, item_ids=["i1", "i2"])
        decision.time.FromSeconds(int(time.time()) - 10 + n)
        decisions.append(decision)
    assert stub.RecordDecisions(metrics_pb2.RecordDecisionsRequest(decisions=decisions), timeout=10).accepted == 3
    stub.RecordEvents(
        metrics_pb2.RecordEventsRequest(events=[now_event("c", common_pb2.EVENT_KIND_CLICK, decision="d2")]), timeout=10
    )
    page = stub.ExportDecisions(metrics_pb2.ExportDecisionsRequest(page_size=2), timeout=10)
    rest = stub.ExportDecisions(
        metrics_pb2.ExportDecisionsRequest(page_size=2, page_token=page.next_page_token), timeout=10
    )
    exported = list(page.decisions) + list(rest.decisions)
    assert [d.decision.decision_id for d in exported] == ["d0", "d1", "d2"]
    assert rest.next_page_token == ""
    assert (exported[2].clicks, exported[2].reward, exported[2].decision.propensity) == (1, 1.0, 0.25)
    bad = metrics_pb2.Decision(decision_id="d9", arm_id="a", propensity=0.0)
    assert error_of(lambda: stub.RecordDecisions(metrics_pb2.RecordDecisionsRequest(decisions=[bad]), timeout=10)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "decisions[0].propensity: must be in (0, 1], got 0.0",
    )


def test_time_series_and_watch(start_service, database_url: str) -> None:
    stub = start_service("metrics", database_url=database_url).stub
    stub.RecordEvents(metrics_pb2.RecordEventsRequest(events=batch("a", 4, 1)), timeout=10)
    request = metrics_pb2.GetTimeSeriesRequest()
    request.bucket.FromSeconds(3600)
    (series,) = stub.GetTimeSeries(request, timeout=10).series
    assert (series.arm_id, sum(b.impressions for b in series.buckets)) == ("a", 4)
    watch = metrics_pb2.WatchArmStatsRequest()
    watch.min_interval.FromMilliseconds(100)
    updates = stub.WatchArmStats(watch, timeout=30)
    assert next(updates).stats[0].impressions == 4
    stub.RecordEvents(metrics_pb2.RecordEventsRequest(events=batch("a", 6, 0, prefix="more-")), timeout=10)
    assert next(updates).stats[0].impressions == 10
    updates.cancel()


def test_bad_reads_name_the_field(start_service) -> None:
    stub = start_service("metrics").stub
    request = metrics_pb2.GetArmStatsRequest(arm_ids=["a", ""])
    assert error_of(lambda: stub.GetArmStats(request, timeout=10)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "arm_ids[1]: must not be empty",
    )
    request = metrics_pb2.GetArmStatsRequest(posterior_samples=-1)
    assert error_of(lambda: stub.GetArmStats(request, timeout=10))[0] == grpc.StatusCode.INVALID_ARGUMENT
    series = metrics_pb2.GetTimeSeriesRequest()
    assert error_of(lambda: stub.GetTimeSeries(series, timeout=10)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "bucket: must be between 1 s and 3153600000 s (100 years), got 0",
    )


def test_state_survives_a_restart(start_service, database_url: str) -> None:
    first = start_service("metrics", database_url=database_url)
    first.stub.RecordEvents(metrics_pb2.RecordEventsRequest(events=batch("a", 7, 2)), timeout=10)
    first.service.stop(0)
    second = start_service("metrics", database_url=database_url)
    assert stats_by_arm(second.stub)["a"].impressions == 7
    again = second.stub.RecordEvents(metrics_pb2.RecordEventsRequest(events=batch("a", 7, 2)), timeout=10)
    assert again.duplicates == 9


def test_prometheus_has_per_arm_gauges(start_service) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stub = start_service("metrics", prometheus_port=port).stub
    stub.RecordEvents(metrics_pb2.RecordEventsRequest(events=batch("a", 10, 3)), timeout=10)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'rectune_arm_impressions{arm_id="a"} 10.0' in body
    assert 'rectune_arm_ctr{arm_id="a"} 0.3' in body
    assert 'rectune_arm_probability_best{arm_id="a"} 1.0' in body


def watched_until_cut(stub: Any, seconds: float) -> tuple[int, grpc.StatusCode | None]:
    """Updates a WatchArmStats stream gives within ``seconds`` (an event recorded every 0.5 s),
    and the status it ended with early (None if it lasted). The client ends the stream itself
    after ``seconds`` (a cancel): a deadline would end it on the server too, which then closes
    the connection it drained, and the client may read that close before the deadline's status."""
    watch = metrics_pb2.WatchArmStatsRequest()
    watch.min_interval.FromMilliseconds(100)
    updates = stub.WatchArmStats(watch, timeout=seconds + 30)
    stop = threading.Event()

    def record() -> None:
        for n in range(int(seconds * 2)):
            if stop.wait(0.5):
                return
            stub.RecordEvents(metrics_pb2.RecordEventsRequest(events=batch("a", 1, 0, prefix=f"t{n}-")), timeout=10)

    writer = threading.Thread(target=record)
    ender = threading.Timer(seconds, updates.cancel)
    writer.start()
    ender.start()
    count = 0
    try:
        for _ in updates:
            count += 1
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.CANCELLED:
            return count, error.code()
    finally:
        stop.set()
        ender.cancel()
        writer.join()
    return count, None


def test_a_call_in_flight_outlives_its_connections_maximum_age(start_service) -> None:
    """Connections close at --max-connection-age-seconds so clients see new replicas; a call
    in flight (a screen or fit waited on for minutes, a watch stream) is not cut by it unless
    a grace limit is set (the control)."""
    lasting = start_service("metrics", max_connection_age_seconds=1.0).stub
    count, ended = watched_until_cut(lasting, 4.0)
    assert ended is None and count >= 5
    limited = start_service("metrics", max_connection_age_seconds=1.0, max_connection_age_grace_seconds=1.0).stub
    assert watched_until_cut(limited, 4.0)[1] == grpc.StatusCode.UNAVAILABLE
