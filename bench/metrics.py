"""MetricsService ingest and query speed against raw SQLAlchemy, on SQLite and PostgreSQL.

For each database, in one run:
- raw: SQLAlchemy Core executemany of the event rows, 500 per transaction (the baseline);
- the service over gRPC (its own process) recording the same number of events in
  RecordEvents batches of 500, and through StreamEvents in batches of 500;
- GetArmStats latency (p50/p99 over repeated calls) once the store holds 1,000,000 events.
Each measurement starts from an empty database. Prints JSON with the ratios to raw.

    .venv/bin/python -m bench.metrics [--events 100000] [--stats-events 1000000]
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
from rectune.v1 import common_pb2, metrics_pb2, metrics_pb2_grpc
from services.common.storage import make_engine
from services.common.wait_healthy import wait_serving
from services.metrics.core.database import migrate
from services.metrics.core.store import EVENTS
from tests.postgres import create_database, throwaway_cluster

BATCH = 500
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
        "time": now - (n % 3600),
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


def measure(fresh_url: Callable[[str], str], events: int, stats_events: int) -> dict[str, Any]:
    now = time.time()
    raw = raw_insert(fresh_url("raw"), row_batches("r", events, now))
    with metrics_service(fresh_url("batch")) as stub:
        # Requests are built before the clock starts, as the raw rows are.
        batch_requests = [metrics_pb2.RecordEventsRequest(events=b) for b in proto_batches("b", events, now)]
        batch_rate = timed(lambda: [stub.RecordEvents(r, timeout=60) for r in batch_requests], events)
    with metrics_service(fresh_url("stream")) as stub:
        requests = [metrics_pb2.StreamEventsRequest(events=b) for b in proto_batches("s", events, now)]
        stream_rate = timed(lambda: stub.StreamEvents(iter(requests), timeout=600), events)
    stats_url = fresh_url("stats")
    raw_insert(stats_url, row_batches("m", stats_events, now))
    with metrics_service(stats_url) as stub:
        stub.GetArmStats(metrics_pb2.GetArmStatsRequest(), timeout=120)  # warm-up
        latencies = []
        for _ in range(10):
            started = time.perf_counter()
            response = stub.GetArmStats(metrics_pb2.GetArmStatsRequest(), timeout=120)
            latencies.append(time.perf_counter() - started)
        counted = sum(s.impressions + s.clicks for s in response.stats)
    return {
        "raw_executemany_events_per_s": round(raw),
        "service_batch500_events_per_s": round(batch_rate),
        "service_stream_events_per_s": round(stream_rate),
        "ratio_batch_to_raw": round(batch_rate / raw, 3),
        "ratio_stream_to_raw": round(stream_rate / raw, 3),
        "get_arm_stats_events": counted,
        "get_arm_stats_latency": percentiles_ms(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000, help="events per ingest measurement")
    parser.add_argument("--stats-events", type=int, default=1_000_000, help="events in the store for GetArmStats")
    args = parser.parse_args()
    results: dict[str, Any] = {"benchmark": "metrics", "batch_size": BATCH, "events": args.events}
    with tempfile.TemporaryDirectory() as folder:
        results["sqlite"] = measure(lambda name: f"sqlite:///{Path(folder) / name}.db", args.events, args.stats_events)
    with throwaway_cluster() as admin_url:
        results["postgresql"] = measure(lambda name: create_database(admin_url, name), args.events, args.stats_events)
    results["acceptance"] = {"batch_to_raw_min": 0.5}
    print_json(results)


if __name__ == "__main__":
    main()
