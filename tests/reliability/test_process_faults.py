"""Faults of whole processes (issue #20): PolicyService or MetricsService killed with SIGKILL
and restarted on its database, ScoringService stopped and started again, while decisions
and clicks flow.
Each service runs in its own process. After recovery MetricsService holds exactly what
PolicyService acknowledged: one impression per decision answered, one click per click
acknowledged, no more and no fewer."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import grpc
import pytest

from bench.common import DATA, start_child_service
from rectune.v1 import common_pb2, metrics_pb2, metrics_pb2_grpc, policy_pb2, policy_pb2_grpc

pytestmark = pytest.mark.integration


class Traffic:
    """Recommend then click, one request at a time; counts what was acknowledged."""

    def __init__(self) -> None:
        self.decisions = 0
        self.clicks = 0
        self.failed = 0

    def send(self, policy: policy_pb2_grpc.PolicyServiceStub, first: int, count: int) -> None:
        for n in range(first, first + count):
            try:
                request = policy_pb2.RecommendRequest(request_id=f"r{n}", user_id=str(1 + n % 900), k=5)
                decision = policy.Recommend(request, timeout=5)
                self.decisions += 1
                click = policy_pb2.RecordFeedbackRequest(
                    event_id=f"c{n}", decision_id=decision.decision_id, kind=common_pb2.EVENT_KIND_CLICK
                )
                policy.RecordFeedback(click, timeout=5)
                self.clicks += 1
            except grpc.RpcError:
                self.failed += 1


def counted(metrics: metrics_pb2_grpc.MetricsServiceStub) -> tuple[int, int]:
    stats = metrics.GetArmStats(metrics_pb2.GetArmStatsRequest(), timeout=10).stats
    return sum(s.impressions for s in stats), sum(s.clicks for s in stats)


def settled(metrics: metrics_pb2_grpc.MetricsServiceStub, expected: tuple[int, int], seconds: float = 60.0):
    deadline = time.monotonic() + seconds
    while counted(metrics) != expected and time.monotonic() < deadline:
        time.sleep(0.5)
    return counted(metrics)


@pytest.fixture
def processes(tmp_path: Path):
    started = []

    def start(name: str, *flags: str):
        child, address = start_child_service(name, *flags)
        started.append(child)
        return child, address

    yield start
    for child in started:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)


def put_champion(policy: policy_pb2_grpc.PolicyServiceStub) -> None:
    arm = policy_pb2.PutArmRequest(
        arm_id="pop",
        configuration=common_pb2.Configuration(strategy="popularity"),
        origin=policy_pb2.ARM_ORIGIN_CONTROL,
        initial_state=policy_pb2.ARM_STATE_CHAMPION,
    )
    policy.PutArm(arm, timeout=120)


def test_a_killed_policy_loses_nothing_it_acknowledged(processes, tmp_path: Path) -> None:
    _, scoring = processes("scoring", f"--dataset={DATA}", "--embedding-address=127.0.0.1:9")
    _, metrics_address = processes("metrics", f"--database-url=sqlite:///{tmp_path / 'metrics.db'}")
    policy_flags = (
        f"--scoring-address={scoring}",
        f"--metrics-address={metrics_address}",
        f"--database-url=sqlite:///{tmp_path / 'policy.db'}",
        "--outbox-interval-seconds=5",  # rows wait in the outbox when the kill comes
    )
    first, address = processes("policy", *policy_flags)
    channel = grpc.insecure_channel(address)
    put_champion(policy_pb2_grpc.PolicyServiceStub(channel))
    traffic = Traffic()
    traffic.send(policy_pb2_grpc.PolicyServiceStub(channel), 0, 60)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    channel.close()
    _, address = processes("policy", *policy_flags)
    with grpc.insecure_channel(address) as channel:
        traffic.send(policy_pb2_grpc.PolicyServiceStub(channel), 60, 60)
    assert (traffic.decisions, traffic.clicks, traffic.failed) == (120, 120, 0)
    with grpc.insecure_channel(metrics_address) as channel:
        assert settled(metrics_pb2_grpc.MetricsServiceStub(channel), (120, 120)) == (120, 120)


@pytest.mark.parametrize(
    ("peer", "stop"),
    [
        ("scoring", signal.SIGTERM),  # answered from the fallback (degraded) meanwhile
        ("metrics", signal.SIGKILL),  # the policy's outbox holds what it acknowledged
    ],
)
def test_a_peer_down_and_back_loses_no_decision_or_click(processes, tmp_path: Path, peer: str, stop: int) -> None:
    """ScoringService stopped, or MetricsService killed, while the policy keeps answering;
    then started again on its port and its database."""
    flags = {
        "scoring": (f"--dataset={DATA}", "--embedding-address=127.0.0.1:9"),
        "metrics": (f"--database-url=sqlite:///{tmp_path / 'metrics.db'}",),
    }
    children = {name: processes(name, *flags[name]) for name in ("scoring", "metrics")}
    _, address = processes(
        "policy",
        f"--scoring-address={children['scoring'][1]}",
        f"--metrics-address={children['metrics'][1]}",
        f"--database-url=sqlite:///{tmp_path / 'policy.db'}",
    )
    traffic = Traffic()
    with grpc.insecure_channel(address) as channel:
        policy = policy_pb2_grpc.PolicyServiceStub(channel)
        put_champion(policy)
        traffic.send(policy, 0, 40)
        child, peer_address = children[peer]
        child.send_signal(stop)
        child.wait(timeout=30)
        traffic.send(policy, 40, 40)  # acknowledged while the peer is gone
        processes(peer, *flags[peer], f"--port={peer_address.rsplit(':', 1)[1]}")
        traffic.send(policy, 80, 40)
    assert (traffic.decisions, traffic.clicks, traffic.failed) == (120, 120, 0)
    with grpc.insecure_channel(children["metrics"][1]) as channel:
        assert settled(metrics_pb2_grpc.MetricsServiceStub(channel), (120, 120)) == (120, 120)
