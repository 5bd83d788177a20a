"""A storage fault is loud (issue #20, items 3 and 11): a write that cannot be made durable
answers UNAVAILABLE, health says NOT_SERVING while the store is unusable, and removing the
database's directory under a running service loses nothing that was acknowledged."""

from __future__ import annotations

import shutil
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import event, text

from rectune.domain.errors import Unavailable
from rectune.v1 import common_pb2, metrics_pb2
from services.common.storage import make_engine
from services.common.storage_guard import StorageWatch

pytestmark = pytest.mark.integration


def impression(n: int) -> metrics_pb2.RecordEventsRequest:
    event_ = common_pb2.Event(event_id=f"e{n}", decision_id=f"d{n}", arm_id="a", kind=common_pb2.EVENT_KIND_IMPRESSION)
    event_.time.GetCurrentTime()
    return metrics_pb2.RecordEventsRequest(events=[event_])


def impressions_counted(metrics) -> int:
    stats = metrics.stub.GetArmStats(metrics_pb2.GetArmStatsRequest(arm_ids=["a"]), timeout=10).stats
    return stats[0].impressions if stats else 0


def test_removing_the_database_directory_loses_nothing_acknowledged(start_service, tmp_path) -> None:
    folder = tmp_path / "metrics-data"
    folder.mkdir()
    url = f"sqlite:///{folder / 'metrics.db'}"
    metrics = start_service("metrics", database_url=url)
    acknowledged, refused = 0, 0
    for n in range(60):
        if n == 20:
            shutil.rmtree(folder)
        try:
            metrics.stub.RecordEvents(impression(n), timeout=10)
            acknowledged += 1
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc.details()
            refused += 1
        time.sleep(0.05)
    assert (folder / "metrics.db").exists()  # put back from the open database
    assert acknowledged >= 20 and acknowledged + refused == 60
    assert impressions_counted(metrics) == acknowledged
    metrics.service.stop(0)
    again = start_service("metrics", database_url=url)  # a restart reads the restored file
    assert impressions_counted(again) == acknowledged


def test_a_store_that_refuses_writes_answers_unavailable_and_health_follows(tmp_path) -> None:
    """The database refusing writes (a read-only file for a non-root user, a full disk) is
    emulated with SQLite's query_only switch, which fails writes the same way."""
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (v INTEGER)"))
    health: list[str] = []
    watch = StorageWatch(engine, lambda: health.append("SERVING"), lambda: health.append("NOT_SERVING"))
    assert watch.check() and health == []

    def read_only(dbapi_connection, _record) -> None:
        dbapi_connection.execute("PRAGMA query_only = 1")

    engine.dispose()
    event.listen(engine, "connect", read_only)
    refused = pytest.raises(Unavailable, match="^storage: attempt to write a readonly database")
    with refused, engine.begin() as connection:
        connection.execute(text("INSERT INTO t VALUES (1)"))
    assert not watch.check() and health == ["NOT_SERVING"]
    event.remove(engine, "connect", read_only)
    engine.dispose()
    assert watch.check() and health == ["NOT_SERVING", "SERVING"]


def test_health_is_not_serving_while_the_store_is_unusable(start_service, tmp_path) -> None:
    folder = tmp_path / "policy-data"
    folder.mkdir()
    policy = start_service("policy", database_url=f"sqlite:///{folder / 'policy.db'}")
    health = health_pb2_grpc.HealthStub(policy.channel)
    serving = health_pb2.HealthCheckResponse.SERVING
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == serving
    shutil.rmtree(folder)
    folder.write_text("a file where the directory was: the database cannot be put back")
    deadline = time.monotonic() + 10
    while health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == serving:
        assert time.monotonic() < deadline, "health stayed SERVING"
        time.sleep(0.1)
    folder.unlink()
    while health.Check(health_pb2.HealthCheckRequest(), timeout=5).status != serving:
        assert time.monotonic() < deadline + 10, "health did not come back"
        time.sleep(0.1)
