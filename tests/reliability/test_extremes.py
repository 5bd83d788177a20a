"""Windows, page tokens and times at the edges of their types (issue #20, item 8), on real
servers: each of these once answered INTERNAL; each must now answer a clear
INVALID_ARGUMENT naming the field and the rule, or an ordinary answer."""

from __future__ import annotations

import base64
import time

import grpc
import numpy as np
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from rectune.v1 import common_pb2, embedding_pb2, embedding_pb2_grpc, metrics_pb2, scoring_pb2
from tests.conftest import MOVIELENS
from tests.rpc import error_of

pytestmark = pytest.mark.integration

LAST_TIMESTAMP = Timestamp(seconds=253402300799, nanos=999999999)  # 9999-12-31T23:59:59.999999999Z


@pytest.fixture
def metrics(start_service):
    service = start_service("metrics")
    event = common_pb2.Event(
        event_id="e1", decision_id="d1", arm_id="a", kind=common_pb2.EVENT_KIND_IMPRESSION, time=Timestamp(seconds=1)
    )
    service.stub.RecordEvents(metrics_pb2.RecordEventsRequest(events=[event]), timeout=10)
    return service


def test_a_window_ending_at_the_last_representable_instant_is_answered(metrics) -> None:
    window = common_pb2.TimeWindow(start=LAST_TIMESTAMP)
    answer = metrics.stub.GetArmStats(metrics_pb2.GetArmStatsRequest(window=window), timeout=10)
    assert list(answer.stats) == []
    window = common_pb2.TimeWindow(start=Timestamp(seconds=0), end=LAST_TIMESTAMP)
    answer = metrics.stub.GetArmStats(metrics_pb2.GetArmStatsRequest(window=window), timeout=10)
    assert [s.arm_id for s in answer.stats] == ["a"]


def test_an_invalid_timestamp_in_a_window_is_refused_by_field(metrics) -> None:
    window = common_pb2.TimeWindow(start=Timestamp(seconds=2**40))  # past year 9999
    assert error_of(lambda: metrics.stub.GetArmStats(metrics_pb2.GetArmStatsRequest(window=window), timeout=10)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "window.start: must be a timestamp between 0001-01-01 and 9999-12-31, got 1099511627776 s",
    )


def test_a_series_over_a_huge_window_is_refused_not_computed(metrics) -> None:
    request = metrics_pb2.GetTimeSeriesRequest(
        window=common_pb2.TimeWindow(start=Timestamp(seconds=-62135596800), end=LAST_TIMESTAMP),  # years 1 to 9999
        bucket=Duration(seconds=1),
    )
    code, details = error_of(lambda: metrics.stub.GetTimeSeries(request, timeout=10))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and details.startswith("bucket: "), details


@pytest.mark.parametrize(
    "token",
    [
        base64.urlsafe_b64encode(b'[1e999, "d1"]').decode(),
        base64.urlsafe_b64encode(b'[123456789012345678901234567890, "d1"]').decode(),
        base64.urlsafe_b64encode(b'[1.5, "d1"]').decode(),
        base64.urlsafe_b64encode(b"[1, 2]").decode(),
        "not base64!",
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
)
def test_a_forged_page_token_is_refused(metrics, token: str) -> None:
    request = metrics_pb2.ExportDecisionsRequest(page_token=token)
    assert error_of(lambda: metrics.stub.ExportDecisions(request, timeout=10)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_token: is not a token this service returned",
    )


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (metrics_pb2.WatchArmStatsRequest(window=Duration(seconds=2**62)), "window"),
        (metrics_pb2.WatchArmStatsRequest(min_interval=Duration(seconds=2**40)), "min_interval"),
        (metrics_pb2.WatchArmStatsRequest(window=Duration(seconds=-5)), "window"),
    ],
)
def test_a_watch_with_an_extreme_window_or_interval_is_refused(metrics, request_, field: str) -> None:
    code, details = error_of(lambda: next(iter(metrics.stub.WatchArmStats(request_, timeout=10))))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and details.startswith(f"{field}: must be "), details


@pytest.mark.parametrize("seconds", [2**40, -(2**40)])
def test_content_ranking_with_a_history_far_from_now_is_refused_by_field(
    start_service, embedding_address, seconds: int
) -> None:
    scoring = start_service("scoring", dataset=str(MOVIELENS), embedding_address=embedding_address)
    history = [common_pb2.Interaction(item_id="50", value=1.0, time=Timestamp(seconds=seconds))]
    request = scoring_pb2.RankItemsRequest(
        configuration=common_pb2.Configuration(strategy="content"), history=history, k=5
    )
    code, details = error_of(lambda: scoring.stub.RankItems(request, timeout=60))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and details.startswith("history[0].time: "), details


def test_encoding_a_user_as_of_year_9999_gives_their_one_items_vector(embedding_address) -> None:
    """The history's one entry is ~8,000 years old as of then: its recency weight underflows
    to zero, and the user is still the (normalised) mean of their one item: that item's vector."""
    channel = grpc.insecure_channel(embedding_address)
    try:
        stub = embedding_pb2_grpc.EmbeddingServiceStub(channel)
        request = embedding_pb2.EncodeUserRequest(
            history=[embedding_pb2.HistoryEntry(item_id="1", text="a film", value=1.0, time=Timestamp(seconds=1))],
            half_life_seconds=86400.0,
            as_of=LAST_TIMESTAMP,
        )
        user = np.array(stub.EncodeUser(request, timeout=60).vector.values)
        texts = embedding_pb2.EmbedTextsRequest(texts=[b"a film"])
        item = np.array(stub.EmbedTexts(texts, timeout=60).vectors[0].values)
        assert user.shape == (384,) and np.isfinite(user).all()
        np.testing.assert_allclose(user, item, atol=1e-6)
    finally:
        channel.close()


def test_an_interaction_value_that_would_overflow_the_fits_is_refused(start_service) -> None:
    """A value of 1e308 is finite, but in the float32 matrix the fits use it is infinite: every
    ALS fit after it failed. It is refused, and ALS keeps fitting."""
    scoring = start_service("scoring", dataset=str(MOVIELENS))
    huge = common_pb2.Interaction(user_id="1", item_id="50", value=1e308, time=Timestamp(seconds=int(time.time())))
    request = scoring_pb2.AddInteractionsRequest(interactions=[huge])
    assert error_of(lambda: scoring.stub.AddInteractions(request, timeout=10)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "interactions[0].value: must be between -1e+06 and 1e+06, got 1e+308",
    )
    als = scoring_pb2.RankItemsRequest(configuration=common_pb2.Configuration(strategy="als"), user_id="1", k=5)
    assert len(scoring.stub.RankItems(als, timeout=120).items) == 5
