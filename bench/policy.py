"""PolicyService throughput next to an echo call, with 8 concurrent clients, in one run.

- Recommend QPS and p50/p99 (a) with the real ScoringService (MovieLens, three arms) and
  (b) with a scoring stand-in that answers at once, inside the policy's process
  (bench/policy_standin.py): it isolates the policy's own cost (arm selection, the decision
  committed to SQLite before the answer), and the same on a throw-away PostgreSQL cluster
  (the production store); (b2), for reference, the same stand-in behind its
  own gRPC server, which adds a network round trip per request to the policy's work;
- next to each, the echo: the standard health Check on the same policy server, in rounds
  alternating with the Recommend rounds;
- RecordFeedback events/s (one click per decision).
The policy runs in its own process with a fresh database; MetricsService is not
started (events wait in the outbox, which is part of what is measured). Prints JSON.

    .venv/bin/python -m bench.policy [--requests 4000] [--clients 8]
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.common import DATA, logs_to_stderr, percentiles_ms, print_json, run_clients, start_child_service
from rectune.v1 import common_pb2, policy_pb2, policy_pb2_grpc, scoring_pb2, scoring_pb2_grpc
from services.common.contracts import SCORING_SERVICE
from services.common.server import ServiceRegistration, start_service
from services.common.settings import ServerSettings
from services.common.wait_healthy import wait_serving
from tests.postgres import create_database, throwaway_cluster

ROUNDS = 4
UNUSED_ADDRESS = "127.0.0.1:9"  # nothing listens: MetricsService is not started, events wait in the outbox
ARMS = [
    ("popularity", policy_pb2.ARM_STATE_CHAMPION),
    ("item_knn", policy_pb2.ARM_STATE_ACTIVE),
    ("als", policy_pb2.ARM_STATE_ACTIVE),
]


class InstantScoring(scoring_pb2_grpc.ScoringServiceServicer):
    """A scoring stand-in for the benchmark only, behind its own gRPC server: fixed lists, answered at once."""

    def FitConfiguration(self, request: Any, context: Any) -> scoring_pb2.FitConfigurationResponse:
        return scoring_pb2.FitConfigurationResponse(
            configuration_hash=request.configuration.strategy, state=scoring_pb2.FIT_STATE_READY
        )

    def RankItems(self, request: Any, context: Any) -> scoring_pb2.RankItemsResponse:
        items = [
            common_pb2.ScoredItem(item_id=str(i), score=1.0 / i, probability=0.5, rank=i)
            for i in range(1, request.k + 1)
        ]
        return scoring_pb2.RankItemsResponse(items=items)


def numbered_from(first: int, call: Callable[[int], object]) -> Callable[[int], object]:
    """The call with its numbers shifted to start at ``first``."""
    return lambda n: call(first + n)


def alternate(
    clients: int, requests: int, measured: Callable[[int], object], baseline: Callable[[int], object]
) -> tuple[tuple[float, list[float]], tuple[float, list[float]]]:
    """Both workloads in ROUNDS alternating rounds (calls numbered 0..requests-1 for each), so
    that a noisy spell on this shared machine falls on both; (calls/s, latencies) for each."""
    seconds = [0.0, 0.0]
    latencies: list[list[float]] = [[], []]
    per_round = requests // ROUNDS
    for round_number in range(ROUNDS):
        first = round_number * per_round
        count = per_round if round_number < ROUNDS - 1 else requests - first
        for index, call in enumerate((measured, baseline)):
            rate, round_latencies = run_clients(clients, count, numbered_from(first, call))
            seconds[index] += count / rate
            latencies[index] += round_latencies
    return (requests / seconds[0], latencies[0]), (requests / seconds[1], latencies[1])


def measure(
    scoring_address: str, requests: int, clients: int, database_url: str, name: str, module: str = ""
) -> dict[str, Any]:
    process, address = start_child_service(
        "policy",
        "--scoring-address",
        scoring_address,
        "--metrics-address",
        UNUSED_ADDRESS,
        "--database-url",
        database_url,
        "--max-workers",
        "16",
        module=module,
    )
    try:
        assert wait_serving([address], 120)[address] == "SERVING"
        with grpc.insecure_channel(address) as channel:
            stub = policy_pb2_grpc.PolicyServiceStub(channel)
            for strategy, state in ARMS:
                stub.PutArm(
                    policy_pb2.PutArmRequest(
                        arm_id=strategy,
                        configuration=common_pb2.Configuration(strategy=strategy),
                        origin=policy_pb2.ARM_ORIGIN_MANUAL,
                        initial_state=state,
                        exposure_cap=0.4,
                    ),
                    timeout=600,
                )
            decisions: list[str] = [""] * requests

            def recommend(n: int) -> None:
                response = stub.Recommend(
                    policy_pb2.RecommendRequest(request_id=f"{name}-{n}", user_id=str(n % 943 + 1), k=10), timeout=30
                )
                decisions[n] = response.decision_id

            health = health_pb2_grpc.HealthStub(channel)
            (qps, latencies), (echo_qps, echo_latencies) = alternate(
                clients,
                requests,
                recommend,
                lambda n: health.Check(health_pb2.HealthCheckRequest(), timeout=10),
            )
            feedback_rate, _ = run_clients(
                clients,
                requests,
                lambda n: stub.RecordFeedback(
                    policy_pb2.RecordFeedbackRequest(
                        event_id=f"click-{n}", decision_id=decisions[n], kind=common_pb2.EVENT_KIND_CLICK
                    ),
                    timeout=30,
                ),
            )
    finally:
        process.terminate()
        process.wait()
    return {
        "recommend_qps": round(qps, 1),
        "recommend_latency": percentiles_ms(latencies),
        "echo_qps": round(echo_qps, 1),
        "echo_latency": percentiles_ms(echo_latencies),
        "recommend_to_echo_qps": round(qps / echo_qps, 3),
        "feedback_events_per_s": round(feedback_rate, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    logs_to_stderr()
    result: dict[str, Any] = {"benchmark": "policy", "clients": args.clients, "requests": args.requests}
    with tempfile.TemporaryDirectory() as folder:
        result["b_scoring_standin"] = measure(
            UNUSED_ADDRESS,
            args.requests,
            args.clients,
            f"sqlite:///{folder}/standin.db",
            "standin",
            module="bench.policy_standin",
        )
        with throwaway_cluster() as admin_url:
            result["b_scoring_standin_postgresql"] = measure(
                UNUSED_ADDRESS,
                args.requests,
                args.clients,
                create_database(admin_url, "policy_bench"),
                "standin-pg",
                module="bench.policy_standin",
            )
        standin = start_service(
            "scoring-standin",
            [
                ServiceRegistration(
                    SCORING_SERVICE,
                    scoring_pb2_grpc.add_ScoringServiceServicer_to_server,
                    InstantScoring(),  # type: ignore[abstract]  # the stubs mark every RPC abstract; a stand-in serves only those the bench calls
                )
            ],
            ServerSettings(port=0),
        )
        standin.health.set_serving()
        try:
            result["b2_scoring_standin_over_grpc"] = measure(
                f"127.0.0.1:{standin.port}", args.requests, args.clients, f"sqlite:///{folder}/grpc.db", "standin-grpc"
            )
        finally:
            standin.stop(0)
        scoring, scoring_address = start_child_service(
            "scoring",
            "--embedding-address",
            UNUSED_ADDRESS,
            "--dataset",
            str(DATA),
            "--database-url",
            f"sqlite:///{folder}/scoring.db",
        )
        try:
            assert wait_serving([scoring_address], 120)[scoring_address] == "SERVING"
            result["a_real_scoring"] = measure(
                scoring_address, args.requests, args.clients, f"sqlite:///{folder}/real.db", "real"
            )
        finally:
            scoring.terminate()
            scoring.wait()
    result["acceptance"] = {"b_recommend_to_echo_qps_min": 0.5}
    print_json(result)


if __name__ == "__main__":
    main()
