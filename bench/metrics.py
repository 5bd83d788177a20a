"""MetricsService ingest and query speed against raw SQLAlchemy, on SQLite and PostgreSQL.

For each database, in one run:
- raw: SQLAlchemy Core executemany of the event rows, 500 per transaction (the baseline);
  event times as a live stream at 1,000 events/s brings them (each batch then adds to a
  few roll-up rows; events one second apart, each its own second, ingest at about 0.55x raw
  in process);
- the service over gRPC (its own process) recording the same number of events in
  RecordEvents batches of 500, and through StreamEvents in batches of 500;
- GetArmStats latency (p50/p99 over repeated calls, from an independent client) once the
  store holds 10^6 and then 10^7 events spread over the last 24 hours, for the windows a
  dashboard and the tuner ask for: the last 24 h, the last hour, and everything. The events
  are loaded through the store in process (so the roll-ups are kept as in service), which
  is faster than over gRPC and changes nothing the query reads. Then the cost of retention:
  a compaction of the older 12 hours (raw events deleted by time).
Each measurement starts from an empty database. Prints JSON with the ratios to raw.

    .venv/bin/python -m bench.metrics [--events 100000] [--stats-events 1000000 10000000]
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc

from bench.common import percentiles_ms, print_json, start_child_service
from rectune.domain.events import EventKind, FeedbackEvent
from rectune.v1 import common_pb2, metrics_pb2, metrics_pb2_grpc
from services.common.storage import make_engine
from services.common.wait_healthy import wait_serving
from services.metrics.core.database import migrate
from services.metrics.core.store import EVENTS, MetricsStore
from tests.postgres import create_database, throwaway_cluster

BATCH = 500
LOAD_BATCH = 5_000
DAY = 86_400
# Ingest batches carry the times of a live stream: 1,000 events/s (the production app)
# over the last LIVE_EVENTS / LIVE_RATE seconds.
LIVE_RATE = 1_000.0
LIVE_EVENTS = 3_600_000
STATS_CALLS = 30
ARMS = 5
KINDS = [common_pb2.EVENT_KIND_IMPRESSION] * 9 + [common_pb2.EVENT_KIND_CLICK]
KIND_NAMES = {common_pb2.EVENT_KIND_IMPRESSION: "impression", common_pb2.EVENT_KIND_CLICK: "click"}


def event_fields(prefix: str, n: int, now: float) -> dict[str, Any]:
    return {
        "event_id": f"{prefix}{n}",
        "decision_id": f"{prefix}d{n // 10}",
        "arm_id": f"arm-{n % ARMS}",
        "user_id": f"u{n % 943}",
        "item_id": f"i{n % 1682}",
        "kind": KINDS[n % len(KINDS)],
        "value": 1.0,
        "time": now - (LIVE_EVENTS - n % LIVE_EVENTS) / LIVE_RATE,
    }


def proto_batches(prefix: str, count: int, now: float) -> list[list[common_pb2.Event]]:
    batches = []
    for start in range(0, count, BATCH):
        batch = []
        for n in range(start, min(start + BATCH, count)):
            fields = event_fields(prefix, n, now)
            event = common_pb2.Event(**{k: v for k, v in fields.items() if k != "time"})
            event.time.FromNanoseconds(int(fields["time"] * 1e9))
            batch.append(event)
        batches.append(batch)
    return batches


def row_batches(prefix: str, count: int, now: float) -> list[list[dict[str, Any]]]:
    batches = []
    for start in range(0, count, BATCH):
        batch = []
        for n in range(start, min(start + BATCH, count)):
            fields = event_fields(prefix, n, now)
            time_us = int(fields.pop("time") * 1_000_000)
            batch.append({**fields, "kind": KIND_NAMES[fields["kind"]], "custom_name": "", "time_us": time_us})
        batches.append(batch)
    return batches


def raw_insert(url: str, batches: list[list[dict[str, Any]]]) -> float:
    """Events/s of plain executemany, one transaction per batch, on a migrated empty database."""
    engine = make_engine(url)
    migrate(engine)
    started = time.perf_counter()
    for batch in batches:
        with engine.begin() as connection:
            connection.execute(EVENTS.insert(), batch)
    elapsed = time.perf_counter() - started
    engine.dispose()
    return sum(len(b) for b in batches) / elapsed


@contextlib.contextmanager
def metrics_service(url: str) -> Iterator[metrics_pb2_grpc.MetricsServiceStub]:
    process, address = start_child_service("metrics", "--database-url", url, "--retention-hours", "0")
    try:
        assert wait_serving([address], 120)[address] == "SERVING"
        with grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
            yield metrics_pb2_grpc.MetricsServiceStub(channel)
    finally:
        process.terminate()
        process.wait()


def timed(work: Callable[[], object], events: int) -> float:
    started = time.perf_counter()
    work()
    return events / (time.perf_counter() - started)


def load_events(url: str, count: int, now: float) -> None:
    """``count`` events spread evenly over the 24 hours before ``now``, through the store."""
    engine = make_engine(url)
    migrate(engine)
    store = MetricsStore(engine)
    kinds = {common_pb2.EVENT_KIND_IMPRESSION: EventKind.IMPRESSION, common_pb2.EVENT_KIND_CLICK: EventKind.CLICK}
    for start in range(0, count, LOAD_BATCH):
        batch = []
        for n in range(start, min(start + LOAD_BATCH, count)):
            fields = event_fields("m", n, now)
            at = now - DAY * (n + 0.5) / count
            batch.append(
                FeedbackEvent(
                    fields["event_id"], fields["decision_id"], fields["arm_id"], fields["user_id"],
                    fields["item_id"], kinds[fields["kind"]], "", 1.0, at,
                )
            )  # fmt: skip
        store.record_events(batch, received_at=now)
    engine.dispose()


def stats_latency(stub: metrics_pb2_grpc.MetricsServiceStub, window: common_pb2.TimeWindow | None) -> dict[str, Any]:
    request = metrics_pb2.GetArmStatsRequest() if window is None else metrics_pb2.GetArmStatsRequest(window=window)
    response = stub.GetArmStats(request, timeout=120)  # warm-up
    latencies = []
    for _ in range(STATS_CALLS):
        started = time.perf_counter()
        response = stub.GetArmStats(request, timeout=120)
        latencies.append(time.perf_counter() - started)
    counted = sum(s.impressions + s.clicks for s in response.stats)
    return {"events_counted": counted, "latency": percentiles_ms(latencies)}


def last(seconds: float) -> common_pb2.TimeWindow:
    """The window a dashboard asks for: from ``seconds`` ago (not a whole second) to unbounded."""
    window = common_pb2.TimeWindow()
    window.start.FromNanoseconds(int((time.time() - seconds) * 1e9))
    return window


def stats_at(url: str, count: int) -> dict[str, Any]:
    started = time.perf_counter()
    load_events(url, count, time.time())
    loaded = time.perf_counter() - started
    with metrics_service(url) as stub:
        windows = {"last_24h": last(DAY + 60), "last_hour": last(3600), "everything": None}
        found = {name: stats_latency(stub, window) for name, window in windows.items()}
    return {"events": count, "load_events_per_s": round(count / loaded), **found, "retention": compaction(url)}


def compaction(url: str) -> dict[str, Any]:
    """What retention costs: compacting the older half of the 24 hours (raw events are
    deleted by time; the hour roll-ups stay)."""
    engine = make_engine(url)
    started = time.perf_counter()
    dropped = MetricsStore(engine).compact(time.time() - DAY / 2)
    seconds = time.perf_counter() - started
    engine.dispose()
    return {"events_dropped": dropped, "seconds": round(seconds, 2), "events_dropped_per_s": round(dropped / seconds)}


def measure(fresh_url: Callable[[str], str], events: int, stats_events: list[int]) -> dict[str, Any]:
    now = time.time()
    raw = raw_insert(fresh_url("raw"), row_batches("r", events, now))
    with metrics_service(fresh_url("batch")) as stub:
        # Requests are built before the clock starts, as the raw rows are.
        batch_requests = [metrics_pb2.RecordEventsRequest(events=b) for b in proto_batches("b", events, now)]
        batch_rate = timed(lambda: [stub.RecordEvents(r, timeout=60) for r in batch_requests], events)
    with metrics_service(fresh_url("stream")) as stub:
        requests = [metrics_pb2.StreamEventsRequest(events=b) for b in proto_batches("s", events, now)]
        stream_rate = timed(lambda: stub.StreamEvents(iter(requests), timeout=600), events)
    return {
        "raw_executemany_events_per_s": round(raw),
        "service_batch500_events_per_s": round(batch_rate),
        "service_stream_events_per_s": round(stream_rate),
        "ratio_batch_to_raw": round(batch_rate / raw, 3),
        "ratio_stream_to_raw": round(stream_rate / raw, 3),
        "get_arm_stats": [stats_at(fresh_url(f"stats{count}"), count) for count in stats_events],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000, help="events per ingest measurement")
    parser.add_argument(
        "--stats-events",
        type=int,
        nargs="+",
        default=[1_000_000, 10_000_000],
        help="events in the store for GetArmStats",
    )
    args = parser.parse_args()
    results: dict[str, Any] = {"benchmark": "metrics", "batch_size": BATCH, "events": args.events}
    with tempfile.TemporaryDirectory() as folder:
        results["sqlite"] = measure(lambda name: f"sqlite:///{Path(folder) / name}.db", args.events, args.stats_events)
    with throwaway_cluster() as admin_url:
        results["postgresql"] = measure(lambda name: create_database(admin_url, name), args.events, args.stats_events)
    results["acceptance"] = {"batch_to_raw_min": 0.5, "get_arm_stats_p99_ms_max": 50}
    print_json(results)


if __name__ == "__main__":
    main()
