"""ScoringService roles (issue #30): a serving replica (`--role serve`) never fits; it ranks
with the models a training replica (`--role train`) fitted and stored in the database they
share. Two real processes, each loading MovieLens 100K; PolicyService sends new arms' fits to
the trainer and Recommend's RankItems to the server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from demo.suite import free_port
from rectune.v1 import common_pb2, policy_pb2, scoring_pb2, scoring_pb2_grpc
from tests.integration.test_policy_service import configuration, put, recommend
from tests.integration.test_replicas import Replica, serve_all
from tests.rpc import error_of

pytestmark = pytest.mark.integration


@pytest.fixture
def scoring(tmp_path: Path) -> Iterator[dict[str, Replica]]:
    """A serving and a training replica sharing one database."""
    database = f"sqlite:///{tmp_path / 'scoring.db'}"
    port, metrics_port = free_port(), free_port()
    replicas = {
        role: Replica(host, port, metrics_port) for role, host in (("serve", "127.0.0.2"), ("train", "127.0.0.3"))
    }
    try:
        flags = [("--role", role, "--database-url", database) for role in replicas]
        serve_all(list(replicas.values()), tmp_path, *flags)
        yield replicas
    finally:
        for replica in replicas.values():
            replica.stop()


def stub(replica: Replica) -> scoring_pb2_grpc.ScoringServiceStub:
    return scoring_pb2_grpc.ScoringServiceStub(grpc.insecure_channel(replica.address))


def ranked(replica: Replica, message: common_pb2.Configuration, user_id: str = "196") -> list[str]:
    request = scoring_pb2.RankItemsRequest(configuration=message, user_id=user_id, k=10)
    return [item.item_id for item in stub(replica).RankItems(request, timeout=60).items]


def test_a_serving_replica_ranks_with_the_trainers_models_and_never_fits(start_service, scoring) -> None:
    server, trainer = scoring["serve"], scoring["train"]
    metrics = start_service("metrics")
    policy = start_service(
        "policy", scoring_address=server.address, scoring_train_address=trainer.address, metrics_address=metrics.address
    )
    put(policy.stub, "popular", "popularity", state=policy_pb2.ARM_STATE_CHAMPION)
    als = configuration("als", factors=16, iterations=3)
    hybrid = configuration("hybrid", w_item_knn=0.7, w_als=0.3)
    put(policy.stub, "als", "als", factors=16, iterations=3)  # fitted by the trainer, stored
    put(policy.stub, "hybrid", "hybrid", w_item_knn=0.7, w_als=0.3)
    responses = [recommend(policy.stub, f"r{n}", user_id=str(1 + n)) for n in range(30)]
    assert not [r.degraded_reason for r in responses if r.degraded]
    assert {r.arm_id for r in responses} >= {"als", "hybrid"}
    # The server's lists are the trainer's: the same models, loaded from the store. Hybrid's
    # stored model names the live data it reads; the server's own takes its place.
    for message in (als, hybrid):
        for user_id in ("196", "42"):
            assert ranked(server, message, user_id) == ranked(trainer, message, user_id)


def test_a_serving_replica_refuses_work_that_fits(scoring) -> None:
    server = stub(scoring["serve"])
    unfitted = configuration("als", factors=24, iterations=2)
    fit = scoring_pb2.FitConfigurationRequest(configuration=unfitted, wait=True)
    assert error_of(lambda: server.FitConfiguration(fit, timeout=30)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "FitConfiguration: this replica only serves (--role serve); send it to a training replica",
    )
    evaluate = scoring_pb2.EvaluateConfigurationRequest(configuration=unfitted, k=10)
    assert error_of(lambda: server.EvaluateConfiguration(evaluate, timeout=30)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "EvaluateConfiguration: this replica only serves (--role serve); send it to a training replica",
    )
    rank = scoring_pb2.RankItemsRequest(configuration=unfitted, user_id="196", k=5)
    code, message = error_of(lambda: server.RankItems(rank, timeout=30))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert message.endswith(
        "has no stored model yet; this replica only serves (--role serve) and loads what a training replica fits "
        "(FitConfiguration there)"
    )
    # What trains nothing it fits itself: popularity ranks at once.
    assert len(ranked(scoring["serve"], configuration("popularity"))) == 10
