"""The MetricsService store and core: one contract suite, run on SQLite and on PostgreSQL."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from rectune.domain.errors import InvalidArgument, ResourceExhausted
from rectune.domain.events import Decision, EventKind, FeedbackEvent, listed
from services.common.storage import make_engine
from services.metrics.core.database import migrate
from services.metrics.core.records import Window
from services.metrics.core.service import MetricsConfig, MetricsCore
from services.metrics.core.stats import RewardWeights
from services.metrics.core.store import MetricsStore

pytestmark = pytest.mark.integration

NOW = 1_750_000_000.0  # a fixed "now" for every test (2025-06-15)
HOUR = 3600.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def core(database_url: str, clock: Clock) -> Iterator[MetricsCore]:
    engine = make_engine(database_url)
    migrate(engine)
    config = MetricsConfig(reward=RewardWeights(1.0, 2.0), posterior_samples=20_000, retention_hours=24)
    yield MetricsCore(MetricsStore(engine), config, clock=clock)
    engine.dispose()


def event(event_id: str, kind: EventKind, arm: str = "a", decision: str = "d1", at: float = NOW - 60) -> FeedbackEvent:
    return FeedbackEvent(event_id, decision, arm, "u1", "i1", kind, "", 0.0, at)


def impressions_and_clicks(arm: str, impressions: int, clicks: int, at: float = NOW - 60) -> list[FeedbackEvent]:
    shown = [event(f"{arm}-imp-{n}", EventKind.IMPRESSION, arm, f"{arm}-d{n}", at) for n in range(impressions)]
    clicked = [event(f"{arm}-clk-{n}", EventKind.CLICK, arm, f"{arm}-d{n}", at) for n in range(clicks)]
    return shown + clicked


def counts(core: MetricsCore, window: Window = Window(), arms: tuple[str, ...] = ()) -> dict[str, tuple[int, int, int]]:
    stats, _ = core.arm_stats(window, list(arms))
    return {s.counts.arm_id: (s.counts.impressions, s.counts.clicks, s.counts.conversions) for s in stats}


def test_recorded_events_are_counted_per_arm(core: MetricsCore) -> None:
    result = core.record_events(impressions_and_clicks("a", 10, 3) + impressions_and_clicks("b", 5, 1))
    assert (result.accepted, result.duplicates) == (19, 0)
    assert counts(core) == {"a": (10, 3, 0), "b": (5, 1, 0)}


def test_the_same_batch_twice_changes_nothing(core: MetricsCore) -> None:
    batch = impressions_and_clicks("a", 4, 2)
    core.record_events(batch)
    again = core.record_events(batch)
    assert (again.accepted, again.duplicates) == (0, 6)
    assert counts(core) == {"a": (4, 2, 0)}


def test_a_repeated_id_inside_one_batch_counts_once(core: MetricsCore) -> None:
    shown = event("e1", EventKind.IMPRESSION)
    result = core.record_events([shown, shown, event("e2", EventKind.CLICK)])
    assert (result.accepted, result.duplicates) == (2, 1)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (lambda e: e._replace(value=float("nan")), "events[2].value: must be a finite number, got nan"),
        (lambda e: e._replace(value=float("inf")), "events[2].value: must be a finite number, got inf"),
        (
            lambda e: e._replace(kind=None),
            "events[2].kind: must be one of impression, click, conversion, rating, custom",
        ),
        (lambda e: e._replace(event_id=""), "events[2].event_id: must not be empty"),
        (lambda e: e._replace(arm_id=""), "events[2].arm_id: must not be empty"),
        (lambda e: e._replace(kind=EventKind.CUSTOM), "events[2].custom_name: must not be empty"),
        (lambda e: e._replace(time=NOW + 3600), "events[2].time: is 3600 s in the future; at most 300 s is allowed"),
    ],
)
def test_a_batch_with_one_bad_event_is_rejected_whole(core: MetricsCore, bad, message: str) -> None:
    batch = impressions_and_clicks("a", 5, 0)
    batch[2] = bad(batch[2])
    with pytest.raises(InvalidArgument) as error:
        core.record_events(batch)
    assert error.value.message == message
    assert counts(core) == {}


def test_an_empty_batch_is_refused(core: MetricsCore) -> None:
    with pytest.raises(InvalidArgument, match="^events: must not be empty$"):
        core.record_events([])


def test_counted_values_default_to_one_and_time_to_now(core: MetricsCore) -> None:
    core.record_events([event("e1", EventKind.IMPRESSION)._replace(time=None)])
    series = core.time_series(Window(NOW - 10, NOW + 10), 10.0, [])
    assert [(b.start, b.impressions) for b in series["a"]] == [(NOW, 1)]


def test_windows_are_half_open_and_arms_can_be_chosen(core: MetricsCore) -> None:
    core.record_events(
        impressions_and_clicks("a", 2, 1, at=NOW - 2 * HOUR) + impressions_and_clicks("b", 3, 0, at=NOW - HOUR)
    )
    assert counts(core, Window(NOW - 2 * HOUR, NOW - HOUR)) == {"a": (2, 1, 0)}
    assert counts(core, Window(NOW - HOUR, None)) == {"b": (3, 0, 0)}
    assert counts(core, Window(), ("b", "zzz")) == {"b": (3, 0, 0), "zzz": (0, 0, 0)}
    with pytest.raises(InvalidArgument, match=r"^window: start \(.*\) must be before end"):
        counts(core, Window(NOW, NOW - 1))


def test_rates_intervals_and_rewards_are_filled(core: MetricsCore) -> None:
    events = impressions_and_clicks("a", 100, 10)
    events.append(event("a-conv-0", EventKind.CONVERSION, "a", "a-d0"))
    core.record_events(events + impressions_and_clicks("b", 100, 2))
    stats, samples = core.arm_stats(Window(), [])
    a, b = stats
    assert samples == 20_000
    assert (a.ctr, a.conversion_rate) == (0.1, 0.01)
    assert a.ctr_interval.lower < 0.1 < a.ctr_interval.upper
    assert a.reward_mean == pytest.approx((10 * 1.0 + 1 * 2.0) / 100)
    assert a.probability_best > 0.95 > b.probability_best
    assert a.probability_best + b.probability_best == pytest.approx(1.0)


def test_posterior_draws_are_bounded_by_arms_times_samples(core: MetricsCore) -> None:
    arms = [f"arm-{n}" for n in range(30_000)]
    with pytest.raises(InvalidArgument) as error:
        core.arm_stats(Window(), arms, posterior_samples=1_000_000)
    assert error.value.message == (
        "posterior_samples: times the 30000 arms must be at most 20,000,000 draws, got 30,000,000,000 "
        "(ask for at most 666 samples, or for fewer arms)"
    )
    stats, samples = core.arm_stats(Window(), arms, posterior_samples=666)
    assert (len(stats), samples) == (30_000, 666)
    _, default = core.arm_stats(Window(), arms)  # the default, lowered to stay within the bound
    assert default == 666
    _, few = core.arm_stats(Window(), arms[:3])
    assert few == 20_000  # the configured default where it fits


def test_time_series_buckets_are_aligned_to_the_epoch(core: MetricsCore) -> None:
    start = (NOW - 3 * HOUR) // HOUR * HOUR
    core.record_events(
        impressions_and_clicks("a", 2, 1, at=start + 10)
        + [event("late", EventKind.IMPRESSION, "a", "x", at=start + 2 * HOUR + 5)]
    )
    series = core.time_series(Window(start, NOW), HOUR, ["a"])
    assert [(b.start, b.impressions, b.clicks, b.reward_sum) for b in series["a"]] == [
        (start, 2, 1, 1.0),
        (start + 2 * HOUR, 1, 0, 0.0),
    ]
    with pytest.raises(InvalidArgument, match=r"^bucket: must be between 1 s and 3153600000 s \(100 years\), got 0.5$"):
        core.time_series(Window(start, NOW), 0.5, [])


def decision(decision_id: str, at: float, arm: str = "a") -> Decision:
    return Decision(
        decision_id, f"r-{decision_id}", "u1", arm, 0.5, 100, listed(["i1", "i2"]), False, "thompson", {"k": "v"}, at
    )


def test_decisions_export_in_pages_with_their_feedback(core: MetricsCore) -> None:
    core.record_decisions([decision(f"d{n}", NOW - 100 + n) for n in range(5)])
    assert core.record_decisions([decision("d0", NOW - 100)]).duplicates == 1
    core.record_events([event("c1", EventKind.CLICK, decision="d1"), event("v1", EventKind.CONVERSION, decision="d1")])
    first, token = core.export_decisions(Window(), [], page_size=2, page_token="")
    second, token2 = core.export_decisions(Window(), [], page_size=2, page_token=token)
    third, token3 = core.export_decisions(Window(), [], page_size=2, page_token=token2)
    assert [d.decision.decision_id for d in first + second + third] == ["d0", "d1", "d2", "d3", "d4"]
    assert token3 == ""
    assert (first[1].clicks, first[1].conversions, core.reward_of(first[1])) == (1, 1, 3.0)
    assert first[0].decision == decision("d0", NOW - 100)
    with pytest.raises(InvalidArgument, match="^page_token: is not a token this service returned$"):
        core.export_decisions(Window(), [], 2, "garbage")


def test_a_page_of_large_decisions_ends_at_its_byte_bound_and_the_next_goes_on(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate(engine)
    core = MetricsCore(MetricsStore(engine), MetricsConfig(max_page_bytes=30_000), clock=lambda: NOW)
    items = listed([f"item-{n:04d}" for n in range(1000)])  # about 13 KB of stored text each
    core.record_decisions(
        [Decision(f"d{n}", "", "u", "a", 0.5, 100, items, False, "thompson", {}, NOW - 100 + n) for n in range(7)]
    )
    pages, token = [], ""
    while True:
        page, token = core.export_decisions(Window(), [], page_size=1000, page_token=token)
        pages.append([logged.decision.decision_id for logged in page])
        if not token:
            break
    assert pages == [["d0", "d1"], ["d2", "d3"], ["d4", "d5"], ["d6"]]
    engine.dispose()


def test_time_series_points_are_bounded_by_buckets_times_arms(core: MetricsCore, monkeypatch) -> None:
    arms = [f"arm-{n}" for n in range(20)]
    with pytest.raises(InvalidArgument) as refused:
        core.time_series(Window(NOW - 10_000, NOW), 1.0, arms)
    assert refused.value.message == (
        "arm_ids: buckets x arms must be at most 100,000, got 10,000 x 20; widen the bucket or ask for fewer arms"
    )
    assert core.time_series(Window(NOW - 10_000, NOW), 2.0, arms) == {}  # 100,000: within the bound
    # Without a window's start or an arm list the bound is kept while reading (made small here).
    monkeypatch.setattr("services.metrics.core.service.MAX_SERIES_POINTS", 5)
    core.record_events([event(f"s{n}", EventKind.IMPRESSION, f"arm-{n % 2}", at=NOW - 10 * n) for n in range(1, 8)])
    with pytest.raises(ResourceExhausted, match=r"^GetTimeSeries: more than 5 buckets of all arms together"):
        core.time_series(Window(None, NOW), 1.0, [])  # 7 buckets
    hourly = core.time_series(Window(None, NOW), HOUR, [])
    assert {arm: [b.impressions for b in buckets] for arm, buckets in hourly.items()} == {"arm-0": [3], "arm-1": [4]}


def test_compaction_keeps_window_queries_and_refuses_compacted_times(core: MetricsCore, clock: Clock) -> None:
    old, recent = NOW - 3 * 24 * HOUR, NOW - HOUR
    core.record_events(impressions_and_clicks("a", 6, 2, at=old) + impressions_and_clicks("b", 3, 1, at=recent))
    before = counts(core)
    series_before = core.time_series(Window(old - HOUR, NOW), HOUR, [])
    assert core.compact() == 8
    assert counts(core) == before
    assert core.time_series(Window(old - HOUR, NOW), HOUR, []) == series_before
    assert core.compact() == 0
    with pytest.raises(InvalidArgument) as error:
        core.record_events([event("new-old", EventKind.CLICK, at=old)])
    assert error.value.message == (
        "events[0].time: is older than the retention horizon (already compacted into hourly aggregates)"
    )
    clock.now += 48 * HOUR  # later compactions add to the same hourly rows
    core.record_events(impressions_and_clicks("c", 1, 0, at=clock.now - 30 * HOUR))
    core.compact()
    assert counts(core) == {**before, "c": (1, 0, 0)}


def test_concurrent_writers_with_overlapping_batches_count_each_event_once(core: MetricsCore) -> None:
    batch = impressions_and_clicks("a", 200, 50)
    errors: list[BaseException] = []

    def write(part: list[FeedbackEvent]) -> None:
        try:
            core.record_events(part)
        except BaseException as exc:
            errors.append(exc)

    parts = [batch[0::2] + batch[:40], batch[1::2] + batch[:40], batch[::-1], batch[100:] + batch[:100]]
    threads = [threading.Thread(target=write, args=(part,)) for part in parts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert counts(core) == {"a": (200, 50, 0)}


def raw_scan(core: MetricsCore) -> list[tuple[str, str, int]]:
    """Every stored raw event as (arm, kind, time in microseconds): what statistics counted
    before roll-ups, to compare them with."""
    from services.metrics.core.store import EVENTS

    with core.store.engine.connect() as connection:
        query = select(EVENTS.c.arm_id, EVENTS.c.kind, EVENTS.c.time_us)
        return [(arm, kind, int(time_us)) for arm, kind, time_us in connection.execute(query)]


def scanned_counts(
    rows: list[tuple[str, str, int]], window: Window, arms: list[str]
) -> dict[str, tuple[int, int, int]]:
    start = None if window.start is None else round(window.start * 1e6)
    end = None if window.end is None else round(window.end * 1e6)
    found: dict[str, list[int]] = {arm: [0, 0, 0] for arm in arms}
    for arm, kind, time_us in rows:
        if (start is None or time_us >= start) and (end is None or time_us < end) and (not arms or arm in arms):
            tally = found.setdefault(arm, [0, 0, 0])
            for position, counted_kind in enumerate(("impression", "click", "conversion")):
                tally[position] += kind == counted_kind
    return {arm: (n[0], n[1], n[2]) for arm, n in found.items()}


def scanned_series(
    rows: list[tuple[str, str, int]], window: Window, bucket: float
) -> dict[str, list[tuple[float, int, int, int]]]:
    width = round(bucket * 1e6)
    start = None if window.start is None else round(window.start * 1e6)
    end = None if window.end is None else round(window.end * 1e6)
    tallies: dict[tuple[str, int], list[int]] = {}
    for arm, kind, time_us in rows:
        if (start is None or time_us >= start) and (end is None or time_us < end):
            tally = tallies.setdefault((arm, time_us // width), [0, 0, 0])
            for position, counted_kind in enumerate(("impression", "click", "conversion")):
                tally[position] += kind == counted_kind
    series: dict[str, list[tuple[float, int, int, int]]] = {}
    for (arm, index), (shown, clicked, converted) in sorted(tallies.items()):
        series.setdefault(arm, []).append((index * width / 1e6, shown, clicked, converted))
    return series


def random_stream(rng: random.Random, batches: int) -> list[list[FeedbackEvent]]:
    """Batches of events over three hours in random order (late events), with ids repeated
    within a batch and across batches, custom events among them."""
    kinds = [EventKind.IMPRESSION] * 6 + [EventKind.CLICK] * 2 + [EventKind.CONVERSION, EventKind.CUSTOM]
    sent: list[FeedbackEvent] = []
    stream = []
    for _ in range(batches):
        batch = []
        for _ in range(rng.randrange(1, 120)):
            if sent and rng.random() < 0.15:
                batch.append(rng.choice(sent))  # a retry: the same event again
                continue
            kind = rng.choice(kinds)
            at = NOW - 3 * HOUR + rng.random() * 3 * HOUR
            made = FeedbackEvent(
                f"e{len(sent)}",
                "d",
                rng.choice("abc"),
                "u",
                "i",
                kind,
                "spend" if kind == EventKind.CUSTOM else "",
                1.0,
                at,
            )
            sent.append(made)
            batch.append(made)
        stream.append(batch)
    return stream


def test_statistics_from_rollups_equal_a_scan_of_the_raw_events(core: MetricsCore) -> None:
    rng = random.Random(31)
    accepted = 0
    for batch in random_stream(rng, 40):
        accepted += core.record_events(batch).accepted
    rows = raw_scan(core)
    assert accepted == len(rows)
    for _ in range(40):
        start = rng.choice([None, NOW - 4 * HOUR + rng.random() * 4 * HOUR])
        end = rng.choice([None, NOW - 3 * HOUR + rng.random() * 3 * HOUR])
        if start is not None and end is not None and start >= end:
            continue
        window, arms = Window(start, end), rng.choice([[], ["a"], ["b", "c", "zz"]])
        assert counts(core, window, tuple(arms)) == scanned_counts(rows, window, arms), window
        bucket = rng.choice([1.0, 7.0, 60.0, 90.0, 1.5, HOUR, 2 * HOUR])
        if start is not None:
            series = core.time_series(window, bucket, [])
            found = {
                arm: [(b.start, b.impressions, b.clicks, b.conversions) for b in got] for arm, got in series.items()
            }
            assert found == scanned_series(rows, window, bucket), (window, bucket)


def test_upgrading_a_database_from_before_rollups_keeps_every_count(database_url: str) -> None:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    from services.metrics.core.database import SCHEMA

    engine = make_engine(database_url)
    config = Config()
    config.set_main_option("script_location", str(SCHEMA.migrations))
    hour_us = int(HOUR * 1e6)
    compacted_hour = int(NOW - 30 * HOUR) // 3600 * hour_us
    with engine.begin() as connection:
        config.attributes.update(connection=connection, metadata=SCHEMA.metadata, version_table=SCHEMA.version_table)
        command.upgrade(config, "0001")
        for n, (arm, kind, at) in enumerate(
            [("a", "impression", NOW - 50), ("a", "click", NOW - 40), ("b", "impression", NOW - 3 * HOUR)]
        ):
            connection.execute(
                text(
                    "INSERT INTO events (event_id, decision_id, arm_id, user_id, item_id, kind, custom_name, "
                    "value, time_us) VALUES (:id, 'd', :arm, 'u', 'i', :kind, '', 1.0, :time_us)"
                ),
                {"id": f"old-{n}", "arm": arm, "kind": kind, "time_us": round(at * 1e6)},
            )
        connection.execute(
            text(
                "INSERT INTO hourly_aggregates (arm_id, hour_us, kind, custom_name, count, value_sum) "
                "VALUES ('a', :hour, 'impression', '', 7, 7.0), ('a', :hour, 'click', '', 2, 2.0)"
            ),
            {"hour": compacted_hour},
        )
        connection.execute(
            text("INSERT INTO compaction_state (id, compacted_before_us) VALUES (1, :horizon)"),
            {"horizon": compacted_hour + hour_us},
        )
    migrate(engine)
    core = MetricsCore(MetricsStore(engine), MetricsConfig(), clock=lambda: NOW)
    assert counts(core) == {"a": (8, 3, 0), "b": (1, 0, 0)}
    assert counts(core, Window(NOW - HOUR, NOW)) == {"a": (1, 1, 0)}
    engine.dispose()
