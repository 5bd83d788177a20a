"""Sustained load on the whole serving path, for an hour by default (issue #20): errors and
memory over time.

ScoringService (MovieLens 100K), MetricsService and PolicyService each run in their own
process with fresh SQLite files; three arms (popularity champion, item_knn, als). First the
maximum is measured: ``--clients`` threads send Recommend, each answer followed by an
impression's click for one in ten, as fast as they go, for ``--probe-seconds``. Then the
same mix runs open-loop at ``--load`` (0.5) times that rate for ``--seconds``. Every call
has a deadline; any error is counted by status. Each service's resident memory (RSS, from
/proc) is sampled every ``--sample-seconds``; growth is the last sample over the sample at
the end of the warm-up (``--warmup-seconds``). At the end every click acknowledged must be
in MetricsService. Prints JSON.

    .venv/bin/python -m bench.soak [--seconds 3600] [--load 0.5]     (make soak)
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc

from bench.common import DATA, memory_of, print_json, start_child_service
from rectune.v1 import common_pb2, metrics_pb2, metrics_pb2_grpc, policy_pb2, policy_pb2_grpc

ARMS = [
    ("popularity", policy_pb2.ARM_STATE_CHAMPION),
    ("item_knn", policy_pb2.ARM_STATE_ACTIVE),
    ("als", policy_pb2.ARM_STATE_ACTIVE),
]
CALL_SECONDS = 5.0
CLICK_EVERY = 10  # one request in ten gets a click


def rss_mib(pid: int) -> float:
    return memory_of(pid) / (1024 * 1024)


class Load:
    """Recommend (and a click for one in ten) from numbered requests; counts outcomes."""

    def __init__(self, policy: policy_pb2_grpc.PolicyServiceStub) -> None:
        self.policy = policy
        self.lock = threading.Lock()
        self.outcomes: Counter[str] = Counter()
        self.clicks_acknowledged = 0

    def one(self, n: int) -> None:
        try:
            request = policy_pb2.RecommendRequest(request_id=f"r{n}", user_id=str(1 + n % 943), k=10)
            answer = self.policy.Recommend(request, timeout=CALL_SECONDS)
            clicked = n % CLICK_EVERY == 0 and len(answer.items) > 0
            if clicked:
                feedback = policy_pb2.RecordFeedbackRequest(
                    event_id=f"c{n}",
                    decision_id=answer.decision_id,
                    item_id=answer.items[0].item_id,
                    kind=common_pb2.EVENT_KIND_CLICK,
                )
                self.policy.RecordFeedback(feedback, timeout=CALL_SECONDS)
            with self.lock:
                self.outcomes["OK"] += 1
                self.clicks_acknowledged += clicked
        except grpc.RpcError as error:
            with self.lock:
                self.outcomes[error.code().name] += 1


def closed_loop(load: Load, clients: int, seconds: float, first: int) -> tuple[float, int]:
    """As fast as ``clients`` threads go: requests per second, and the next request number."""
    counter = iter(range(first, 10**12))
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client() -> None:
        while time.monotonic() < deadline:
            with lock:
                n = next(counter)
            load.one(n)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with lock:
        last = next(counter)
    return (last - first) / (time.monotonic() - started), last


def open_loop(load: Load, rate: float, seconds: float, first: int, clients: int, tick: Any) -> int:
    """``rate`` requests per second for ``seconds``, whatever the answers' latency (up to the
    clients' capacity); ``tick`` is called about once a second. Returns the next request number."""
    pending: list[int] = []
    wake = threading.Condition()
    stop = threading.Event()

    def worker() -> None:
        while True:
            with wake:
                while not pending and not stop.is_set():
                    wake.wait(0.5)
                if not pending:
                    return
                n = pending.pop()
            load.one(n)

    workers = [threading.Thread(target=worker) for _ in range(clients)]
    for thread in workers:
        thread.start()
    started, sent, n = time.monotonic(), 0, first
    next_tick = started + 1.0
    while (now := time.monotonic()) < started + seconds:
        due = int((now - started) * rate)
        with wake:
            while sent < due:
                pending.append(n)
                n, sent = n + 1, sent + 1
            wake.notify_all()
        if now >= next_tick:
            tick()
            next_tick += 1.0
        time.sleep(0.01)
    stop.set()
    with wake:
        wake.notify_all()
    for thread in workers:
        thread.join()
    return n


def clicks_in_metrics(metrics: metrics_pb2_grpc.MetricsServiceStub) -> int:
    stats = metrics.GetArmStats(metrics_pb2.GetArmStatsRequest(), timeout=30).stats
    return sum(s.clicks for s in stats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3600.0, help="length of the sustained load")
    parser.add_argument("--load", type=float, default=0.5, help="share of the measured maximum to send")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--probe-seconds", type=float, default=30.0)
    parser.add_argument("--warmup-seconds", type=float, default=300.0)
    parser.add_argument("--sample-seconds", type=float, default=60.0)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="rectune-soak-"))
    children = []
    try:
        scoring, scoring_address = start_child_service(
            "scoring",
            f"--dataset={DATA}",
            "--embedding-address=127.0.0.1:9",
            f"--database-url=sqlite:///{folder / 'scoring.db'}",
        )
        metrics, metrics_address = start_child_service("metrics", f"--database-url=sqlite:///{folder / 'metrics.db'}")
        policy, policy_address = start_child_service(
            "policy",
            f"--scoring-address={scoring_address}",
            f"--metrics-address={metrics_address}",
            f"--database-url=sqlite:///{folder / 'policy.db'}",
        )
        children = [("scoring", scoring), ("metrics", metrics), ("policy", policy)]
        result = soak(args, policy_address, metrics_address, children)
    finally:
        for _, child in children:
            child.terminate()
            child.wait(timeout=30)
    print_json(result)


def soak(args: argparse.Namespace, policy_address: str, metrics_address: str, children: list[Any]) -> dict[str, Any]:
    policy_channel, metrics_channel = grpc.insecure_channel(policy_address), grpc.insecure_channel(metrics_address)
    policy = policy_pb2_grpc.PolicyServiceStub(policy_channel)
    for strategy, state in ARMS:
        arm = policy_pb2.PutArmRequest(
            arm_id=strategy,
            configuration=common_pb2.Configuration(strategy=strategy),
            origin=policy_pb2.ARM_ORIGIN_MANUAL,
            initial_state=state,
        )
        policy.PutArm(arm, timeout=300)  # fits the arm's model
    probe = Load(policy)
    maximum, first = closed_loop(probe, args.clients, args.probe_seconds, 0)
    rate = args.load * maximum
    load = Load(policy)
    samples: list[dict[str, Any]] = []
    started = time.monotonic()
    last_sample = [float("-inf")]

    def tick() -> None:
        elapsed = time.monotonic() - started
        if elapsed - last_sample[0] >= args.sample_seconds:
            last_sample[0] = elapsed
            rss = {name: round(rss_mib(child.pid), 1) for name, child in children}
            samples.append({"seconds": round(elapsed), "rss_mib": rss, "requests": sum(load.outcomes.values())})

    open_loop(load, rate, args.seconds, first, args.clients * 4, tick)
    tick_final = {name: round(rss_mib(child.pid), 1) for name, child in children}
    warm = next((s for s in samples if s["seconds"] >= args.warmup_seconds), samples[0] if samples else None)
    growth = {
        name: round(tick_final[name] / warm["rss_mib"][name], 3) if warm and warm["rss_mib"][name] else None
        for name in tick_final
    }
    metrics = metrics_pb2_grpc.MetricsServiceStub(metrics_channel)
    deadline = time.monotonic() + 120
    acknowledged = probe.clicks_acknowledged + load.clicks_acknowledged
    while clicks_in_metrics(metrics) < acknowledged and time.monotonic() < deadline:
        time.sleep(1)  # the policy's outbox forwards them every second
    result = {
        "benchmark": "soak",
        "seconds": args.seconds,
        "measured_maximum_requests_per_second": round(maximum, 1),
        "load": args.load,
        "target_requests_per_second": round(rate, 1),
        "achieved_requests_per_second": round(sum(load.outcomes.values()) / args.seconds, 1),
        "outcomes": dict(load.outcomes),
        "errors": sum(v for k, v in load.outcomes.items() if k != "OK"),
        "rss_mib_after_warmup": warm["rss_mib"] if warm else None,
        "rss_mib_at_end": tick_final,
        "rss_growth_after_warmup": growth,
        "clicks_acknowledged": acknowledged,
        "clicks_in_metrics": clicks_in_metrics(metrics),
        "samples": samples,
    }
    policy_channel.close()
    metrics_channel.close()
    return result


if __name__ == "__main__":
    main()
