"""Nothing acknowledged is refused downstream, and one bad value never blocks the rest
(issue #20, items 1, 2, 5 and 10), on real servers: PolicyService with real ScoringService
(MovieLens) and MetricsService on loopback.

Each test sends what an independent client sent when these broke: before the shared rules
PolicyService acknowledged each of these values and MetricsService then refused it, so the
outbox dropped it (or, for a time past 2^40 s, retried it for ever and held up the rest).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from rectune.domain.events import EventKind, FeedbackEvent
from rectune.v1 import common_pb2, metrics_pb2, policy_pb2, scoring_pb2
from services.common.storage import make_engine
from services.policy.core.feedback import outbox_rows
from services.policy.core.store import PolicyStore
from services.policy.gauges import OutboxGauges
from tests.conftest import MOVIELENS
from tests.rpc import error_of

pytestmark = pytest.mark.integration

LONG = "x" * 200
YEAR = 365 * 86400


@pytest.fixture
def suite(start_service, tmp_path):
    scoring = start_service("scoring", dataset=str(MOVIELENS))
    metrics = start_service("metrics")
    database = f"sqlite:///{tmp_path / 'policy.db'}"
    policy = start_service(
        "policy",
        scoring_address=scoring.address,
        metrics_address=metrics.address,
        database_url=database,
        outbox_interval_seconds=0.2,
        belief_cache_seconds=0.0,
        seed=3,
    )
    champion = policy_pb2.PutArmRequest(
        arm_id="pop",
        configuration=common_pb2.Configuration(strategy="popularity"),
        origin=policy_pb2.ARM_ORIGIN_CONTROL,
        initial_state=policy_pb2.ARM_STATE_CHAMPION,
    )
    policy.stub.PutArm(champion, timeout=60)
    return scoring, metrics, policy, database


def wait_for(condition: Callable[[], bool], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def feedback(event_id: str, decision_id: str, **fields) -> policy_pb2.RecordFeedbackRequest:
    return policy_pb2.RecordFeedbackRequest(
        event_id=event_id, decision_id=decision_id, kind=common_pb2.EVENT_KIND_CLICK, **fields
    )


def clicks_counted(metrics, arm_id: str = "pop") -> int:
    stats = metrics.stub.GetArmStats(metrics_pb2.GetArmStatsRequest(arm_ids=[arm_id]), timeout=10).stats
    return stats[0].clicks if stats else 0


def test_the_policy_refuses_ids_that_metrics_would_refuse(suite) -> None:
    _, _, policy, _ = suite
    stub = policy.stub
    too_long = "at most 128 characters, got 200"
    recommend = policy_pb2.RecommendRequest
    assert error_of(lambda: stub.Recommend(recommend(request_id="r", user_id=LONG, k=3), timeout=10)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        f"user_id: {too_long}",
    )
    assert error_of(lambda: stub.Recommend(recommend(request_id=LONG, user_id="1", k=3), timeout=10)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        f"request_id: {too_long}",
    )
    decision = stub.Recommend(recommend(request_id="r1", user_id="1", k=3), timeout=10)
    for name in ("event_id", "item_id"):
        request = feedback("e1", decision.decision_id)
        setattr(request, name, LONG)
        assert error_of(partial(stub.RecordFeedback, request, timeout=10)) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{name}: {too_long}",
        )
    custom = policy_pb2.RecordFeedbackRequest(
        event_id="e2", decision_id=decision.decision_id, kind=common_pb2.EVENT_KIND_CUSTOM, custom_name=LONG
    )
    assert error_of(lambda: stub.RecordFeedback(custom, timeout=10)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        f"custom_name: {too_long}",
    )
    arm = policy_pb2.PutArmRequest(
        arm_id=LONG,
        configuration=common_pb2.Configuration(strategy="item_knn"),
        origin=policy_pb2.ARM_ORIGIN_MANUAL,
        initial_state=policy_pb2.ARM_STATE_ACTIVE,
    )
    assert error_of(lambda: stub.PutArm(arm, timeout=60)) == (grpc.StatusCode.INVALID_ARGUMENT, f"arm_id: {too_long}")


def test_a_click_dated_far_ahead_is_refused_and_later_clicks_still_arrive(suite) -> None:
    _, metrics, policy, _ = suite
    stub = policy.stub
    decision = stub.Recommend(policy_pb2.RecommendRequest(request_id="r1", user_id="1", k=3), timeout=10)
    for seconds in (int(time.time()) + YEAR, 1_099_511_627_776):
        late = feedback("e-far", decision.decision_id)
        late.time.seconds = seconds
        code, message = error_of(partial(stub.RecordFeedback, late, timeout=10))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert message.startswith("time: is ") and message.endswith("s in the future; at most 300 s is allowed")
    for n in range(5):
        stub.RecordFeedback(feedback(f"e{n}", decision.decision_id), timeout=10)
    wait_for(lambda: clicks_counted(metrics) == 5)


def test_scoring_refuses_interactions_dated_ahead_of_its_clock(suite) -> None:
    scoring, _, _, _ = suite
    ahead = common_pb2.Interaction(user_id="1", item_id="50", value=1.0)
    ahead.time.seconds = int(time.time()) + YEAR
    request = scoring_pb2.AddInteractionsRequest(interactions=[ahead])
    code, message = error_of(lambda: scoring.stub.AddInteractions(request, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message.startswith("interactions[0].time: is ") and message.endswith("at most 300 s is allowed")


def test_a_refused_outbox_row_becomes_a_dead_letter_and_the_rest_flow(suite) -> None:
    _, metrics, policy, database = suite
    stub = policy.stub
    decision = stub.Recommend(policy_pb2.RecommendRequest(request_id="r1", user_id="1", k=3), timeout=10)
    store = PolicyStore(make_engine(database))
    # A row acknowledged before the shared rules existed: a click dated a year ahead.
    poison = FeedbackEvent(
        "e-poison", decision.decision_id, "pop", "1", "", EventKind.CLICK, "", 1.0, time.time() + YEAR
    )
    with store.unit_of_work() as work:
        work.enqueue_many(outbox_rows(poison))
    for n in range(5):
        stub.RecordFeedback(feedback(f"e{n}", decision.decision_id), timeout=10)
    wait_for(lambda: clicks_counted(metrics) == 5 and store.dead_letter_count() == 1)
    assert store.backlog() == 0
    (dead,) = store.dead_letters()
    assert dead.letter.kind == "event" and dead.letter.payload["event_id"] == "e-poison"
    assert dead.letter.reason.startswith("events[0].time: is ")
    gauges = {family.name: family.samples[0].value for family in OutboxGauges(store).collect()}
    assert gauges == {
        "rectune_policy_outbox_backlog": 0.0,
        "rectune_policy_outbox_oldest_age_seconds": 0.0,
        "rectune_policy_outbox_dead_letters": 1.0,
    }
    # Replayed, it is refused again (nothing changed) and comes back: it never blocks the rest.
    assert store.replay_dead_letters() == 1
    stub.RecordFeedback(feedback("e-after", decision.decision_id), timeout=10)
    wait_for(lambda: clicks_counted(metrics) == 6 and store.dead_letter_count() == 1)


def test_an_error_quotes_a_short_prefix_of_a_huge_value(suite) -> None:
    scoring, _, policy, _ = suite
    huge = "s" * 1_000_000
    request = scoring_pb2.RankItemsRequest(configuration=common_pb2.Configuration(strategy=huge), user_id="1", k=3)
    code, message = error_of(lambda: scoring.stub.RankItems(request, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message.startswith("configuration.strategy: unknown strategy 'sssss") and len(message) < 300
    arm = policy_pb2.PutArmRequest(
        arm_id="big",
        configuration=common_pb2.Configuration(strategy=huge),
        origin=policy_pb2.ARM_ORIGIN_MANUAL,
        initial_state=policy_pb2.ARM_STATE_ACTIVE,
    )
    code, message = error_of(lambda: policy.stub.PutArm(arm, timeout=60))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and len(message) < 300


def test_metrics_refuses_a_time_before_1970_and_its_series_keep_working(suite) -> None:
    _, metrics, _, _ = suite
    event = common_pb2.Event(event_id="old", decision_id="d", arm_id="pop", kind=common_pb2.EVENT_KIND_CLICK)
    event.time.seconds = -(2**40)
    request = metrics_pb2.RecordEventsRequest(events=[event])
    assert error_of(lambda: metrics.stub.RecordEvents(request, timeout=10)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "events[0].time: must not be before 1970 (unix seconds), got -1099511627776",
    )
    # The refused event left nothing behind that blocks the next: valid events are recorded and
    # counted in the series.
    now = int(time.time())
    good = [
        common_pb2.Event(event_id=f"ok-{kind}", decision_id="d", arm_id="pop", kind=kind)
        for kind in (common_pb2.EVENT_KIND_IMPRESSION, common_pb2.EVENT_KIND_CLICK)
    ]
    for event in good:
        event.time.seconds = now
    assert metrics.stub.RecordEvents(metrics_pb2.RecordEventsRequest(events=good), timeout=10).accepted == 2
    series = metrics_pb2.GetTimeSeriesRequest(bucket=Duration(seconds=3600), arm_ids=["pop"])
    (pop,) = metrics.stub.GetTimeSeries(series, timeout=10).series
    assert pop.arm_id == "pop"
    assert (sum(b.impressions for b in pop.buckets), sum(b.clicks for b in pop.buckets)) == (1, 1)


def test_an_item_text_over_the_encoders_limit_is_refused_and_blocks_nothing(start_service) -> None:
    """Issue #20, item 4: such an item was stored with its vector pending, and from then on
    every UpsertItems answered UNAVAILABLE."""
    embedding = start_service("embedding")
    scoring = start_service("scoring", embedding_address=embedding.address)
    huge = scoring_pb2.Item(item_id="huge", text="word " * 4000)  # 20,000 bytes
    request = scoring_pb2.UpsertItemsRequest(items=[huge])
    assert error_of(lambda: scoring.stub.UpsertItems(request, timeout=60)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "items[0].text: at most 16384 bytes of UTF-8, got 20000",
    )
    ordinary = [scoring_pb2.Item(item_id=f"film-{n}", text=f"An ordinary film {n}") for n in range(3)]
    answer = scoring.stub.UpsertItems(scoring_pb2.UpsertItemsRequest(items=ordinary), timeout=60)
    assert (answer.upserted, answer.embedded) == (3, 3)


def test_a_request_id_reused_for_another_request_is_refused(suite) -> None:
    """Issue #20, item 7: a retry gets the same decision; another request under the same id
    is refused, naming what differs, instead of silently getting someone else's list."""
    _, _, policy, _ = suite
    stub = policy.stub
    first = stub.Recommend(policy_pb2.RecommendRequest(request_id="r1", user_id="1", k=3), timeout=10)
    retry = stub.Recommend(policy_pb2.RecommendRequest(request_id="r1", user_id="1", k=3), timeout=10)
    assert retry.decision_id == first.decision_id
    other = policy_pb2.RecommendRequest(request_id="r1", user_id="2", k=3)
    assert error_of(lambda: stub.Recommend(other, timeout=10)) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "request_id: was used before for a request with another user_id",
    )


def test_an_apps_impression_of_a_decision_is_counted_once(suite) -> None:
    """Issue #20, item 7: the decision counts its impression; the app's own IMPRESSION events
    for it (sent twice, with their own ids) are the same impression."""
    _, metrics, policy, _ = suite
    stub = policy.stub
    decision = stub.Recommend(policy_pb2.RecommendRequest(request_id="r1", user_id="1", k=3), timeout=10)
    for event_id in ("app-imp-1", "app-imp-2"):
        request = policy_pb2.RecordFeedbackRequest(
            event_id=event_id, decision_id=decision.decision_id, kind=common_pb2.EVENT_KIND_IMPRESSION
        )
        stub.RecordFeedback(request, timeout=10)
    stub.RecordFeedback(feedback("c1", decision.decision_id), timeout=10)
    # A later decision and click leave the outbox after everything above: once its click is
    # counted, whatever the app's impressions could have added has arrived too.
    later = stub.Recommend(policy_pb2.RecommendRequest(request_id="r2", user_id="2", k=3), timeout=10)
    stub.RecordFeedback(feedback("c2", later.decision_id), timeout=10)
    wait_for(lambda: clicks_counted(metrics) == 2)
    stats = metrics.stub.GetArmStats(metrics_pb2.GetArmStatsRequest(arm_ids=["pop"]), timeout=10).stats[0]
    assert (stats.impressions, stats.clicks) == (2, 2)


def test_one_click_today_does_not_outrank_the_datasets_history_and_a_restart_keeps_the_order(
    start_service, tmp_path
) -> None:
    """Item 5, MovieLens's clock: its interactions end in 1998. Loaded as they are, one click
    today on an item rated once puts it first in a recency-weighted popularity for everyone."""
    database = f"sqlite:///{tmp_path / 'scoring.db'}"
    rare = "1596"  # rated by one user in MovieLens 100K
    popularity = common_pb2.Configuration(strategy="popularity")
    popularity.params["half_life_days"].double_value = 30.0

    def top_ten(scoring) -> list[str]:
        request = scoring_pb2.RankItemsRequest(configuration=popularity, user_id="1", k=10)
        return [item.item_id for item in scoring.stub.RankItems(request, timeout=60).items]

    scoring = start_service("scoring", dataset=str(MOVIELENS), database_url=database)
    click = common_pb2.Interaction(user_id="2", item_id=rare, value=1.0)
    click.time.FromSeconds(int(time.time()))
    scoring.stub.AddInteractions(scoring_pb2.AddInteractionsRequest(interactions=[click]), timeout=30)
    before_restart = top_ten(scoring)
    assert rare not in before_restart and len(before_restart) == 10
    scoring.service.stop(0)
    # At the next start the dataset ends where the journal's interactions begin, as before.
    again = start_service("scoring", dataset=str(MOVIELENS), database_url=database)
    assert top_ten(again) == before_restart
