"""Several ScoringService processes behind one name (issue #30), as pods behind a headless
Service: every Recommend's RankItems is balanced over the replicas (round_robin), a replica
killed under load costs no request, and a replica that comes up later takes traffic within
the servers' maximum connection age plus 5 s. Real processes (`python -m services.scoring`,
each loading MovieLens 100K) on loopback addresses of their own (127.0.0.2, .3, ...) and one
port, as pods have; a real DNS server on loopback that lists the ready ones under one name,
which PolicyService looks up (gRPC's own resolver); a real PolicyService and MetricsService.
Requests are counted by each replica's own Prometheus counter."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask

from demo.suite import free_port
from rectune.v1 import policy_pb2
from services.common.wait_healthy import wait_serving
from tests.conftest import MOVIELENS, UNUSED_PEER
from tests.dns import LoopbackDns, loopback_dns
from tests.integration.test_policy_service import put, recommend

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# A generous time budget for scoring inside Recommend: four processes share two cores here,
# and what is tested is that a request is never lost, not how fast it is.
SCORING_DEADLINE_SECONDS = 10
NAME = "scoring.rectune.test"
# Short, so that the test of a late replica takes seconds: servers close each connection at
# this age, and the client looks the name up again (at most once a second here).
MAX_CONNECTION_AGE_SECONDS = 3
DNS_INTERVAL_SECONDS = 1


@dataclass
class Replica:
    host: str
    port: int
    metrics_port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, folder: Path, *extra: str) -> None:
        """``python -m services.scoring`` on this replica's address; ``extra`` flags override."""
        flags: dict[str, object] = {
            "--host": self.host,
            "--port": self.port,
            "--prometheus-port": self.metrics_port,
            "--max-connection-age-seconds": MAX_CONNECTION_AGE_SECONDS,
            "--embedding-address": UNUSED_PEER,
            "--dataset": MOVIELENS,
            "--database-url": f"sqlite:///{folder / f'scoring-{self.host}.db'}",
            "--refit-check-seconds": 0,
            "--grace-seconds": 1,
        }
        flags.update(dict(zip(extra[::2], extra[1::2], strict=True)))
        argv = [sys.executable, "-m", "services.scoring", *(str(x) for pair in flags.items() for x in pair)]
        env = {**os.environ, "RECTUNE_LOG_FORMAT": "json"}
        self.process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def rank_items_served(self) -> int:
        """RankItems this replica answered, from its Prometheus counter."""
        with urllib.request.urlopen(f"http://{self.host}:{self.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        pattern = r'^rectune_rpc_requests_total\{[^}]*method="[^"]*RankItems"[^}]*\} ([0-9.e+]+)$'
        return round(sum(float(m) for m in re.findall(pattern, text, re.MULTILINE)))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def ended(self) -> bool:
        return self.process is not None and self.process.poll() is not None


def serve_all(replicas: Sequence[Replica], folder: Path, *extra: tuple[str, ...], seconds: float = 120) -> None:
    """Start the replicas (``extra[i]``: replica i's flags) and wait until every one serves.
    Their loopback addresses are theirs alone: no other process (nor an outgoing connection,
    which leaves from 127.0.0.1) can take their ports meanwhile."""
    for n, replica in enumerate(replicas):
        replica.start(folder, *(extra[n] if n < len(extra) else ()))
    states = wait_serving(
        [replica.address for replica in replicas],
        seconds,
        give_up=lambda: any(replica.ended() for replica in replicas),
    )
    assert set(states.values()) == {"SERVING"}, f"replicas not serving after {seconds:.0f} s: {states}"


@pytest.fixture
def dns() -> Iterator[LoopbackDns]:
    with loopback_dns() as server:
        yield server


@pytest.fixture
def replicas(tmp_path: Path, dns: LoopbackDns) -> Iterator[list[Replica]]:
    """Four replicas on 127.0.0.2-5 and one port; the first three started, serving and listed
    under NAME, the fourth left down."""
    port, metrics_port = free_port(), free_port()
    started = [Replica(f"127.0.0.{2 + n}", port, metrics_port) for n in range(4)]
    try:
        serve_all(started[:3], tmp_path)
        dns.set(NAME, [replica.host for replica in started[:3]])
        yield started
    finally:
        for replica in started:
            replica.stop()


@pytest.fixture
def policy(start_service, replicas: list[Replica], dns: LoopbackDns):
    """A PolicyService whose ScoringService address is NAME at the loopback DNS server, with one arm."""
    metrics = start_service("metrics")
    service = start_service(
        "policy",
        scoring_address=f"dns://127.0.0.1:{dns.port}/{NAME}:{replicas[0].port}",
        client_dns_interval_seconds=DNS_INTERVAL_SECONDS,
        metrics_address=metrics.address,
        outbox_interval_seconds=0.2,
        seed=3,
    )
    settings = policy_pb2.PolicySettings(scoring_deadline=Duration(seconds=SCORING_DEADLINE_SECONDS))
    service.stub.UpdatePolicySettings(
        policy_pb2.UpdatePolicySettingsRequest(settings=settings, update_mask=FieldMask(paths=["scoring_deadline"])),
        timeout=10,
    )
    put(service.stub, "popular", "popularity", state=policy_pb2.ARM_STATE_CHAMPION)
    return service


def served(replicas: list[Replica]) -> list[int]:
    return [replica.rank_items_served() for replica in replicas]


def recommend_many(stub, prefix: str, count: int, threads: int = 4) -> list[policy_pb2.RecommendResponse]:
    users = [str(1 + n % 900) for n in range(count)]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda n: recommend(stub, f"{prefix}-{n}", users[n]), range(count)))


def test_rank_items_spread_evenly_over_three_replicas(policy, replicas: list[Replica]) -> None:
    live = replicas[:3]
    before = served(live)
    responses = recommend_many(policy.stub, "spread", 600)
    assert not [r for r in responses if r.degraded]
    counts = [after - earlier for after, earlier in zip(served(live), before, strict=True)]
    assert sum(counts) == 600
    assert all(150 <= count <= 250 for count in counts), counts  # within 25% of 200 each


def test_a_replica_killed_under_load_costs_no_request(policy, replicas: list[Replica]) -> None:
    victim = replicas[1]
    assert victim.process is not None
    killer = threading.Timer(1.0, lambda: victim.process.send_signal(signal.SIGKILL))  # type: ignore[union-attr]
    killer.start()
    responses = recommend_many(policy.stub, "kill", 400)
    killer.join()
    assert victim.process.wait(timeout=10) == -signal.SIGKILL
    assert [r.degraded_reason for r in responses if r.degraded] == []
    assert all(len(r.items) == 5 for r in responses)


def test_a_replica_started_later_takes_traffic_within_the_maximum_connection_age(
    policy, replicas: list[Replica], dns: LoopbackDns, tmp_path
) -> None:
    recommend_many(policy.stub, "before", 30)
    late = replicas[3]
    late.start(tmp_path)
    assert wait_serving([late.address], timeout_seconds=120)[late.address] == "SERVING"
    lookups_before = dns.a_queries
    dns.set(NAME, [replica.host for replica in replicas])  # ready: the headless Service lists it
    listed_at = time.monotonic()
    round_ = 0
    while late.rank_items_served() == 0:
        waited = time.monotonic() - listed_at
        assert waited < MAX_CONNECTION_AGE_SECONDS + 5, f"the late replica got no RankItems {waited:.1f} s after"
        recommend_many(policy.stub, f"after-{round_}", 8)
        round_ += 1
    assert dns.a_queries > lookups_before  # found by looking the name up again, not by a list it knew
