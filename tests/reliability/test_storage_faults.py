"""A storage fault is loud (issue #20, items 3 and 11): a write that cannot be made durable
answers UNAVAILABLE, health says NOT_SERVING while the store is unusable, and removing the
database's directory under a running service loses nothing that was acknowledged."""

from __future__ import annotations

import shutil
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import create_engine, event, text

from rectune.domain.errors import Unavailable
from rectune.v1 import common_pb2, metrics_pb2
from services.common.storage import make_engine
from services.common.storage_guard import StorageWatch

pytestmark = pytest.mark.integration
SERVING = health_pb2.HealthCheckResponse.SERVING


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


def set_read_only(admin_url: str, database: str, read_only: bool) -> None:
    """The database made read-only (as after a failover to a standby, or by an operator),
    and its open sessions ended so that the service's next connections see it."""
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(
            text(f"ALTER DATABASE {database} SET default_transaction_read_only = {'on' if read_only else 'off'}")
        )
        others = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"
        connection.execute(text(others + " AND pid <> pg_backend_pid()"), {"name": database})
    engine.dispose()


def test_a_read_only_postgresql_database_answers_unavailable_and_loses_nothing(
    start_service, postgres_admin_url
) -> None:
    from tests.postgres import create_database

    url = create_database(postgres_admin_url, "metrics_read_only")
    metrics = start_service("metrics", database_url=url)
    health = health_pb2_grpc.HealthStub(metrics.channel)
    acknowledged, refused, reasons = 0, 0, set()
    for n in range(60):
        if n == 20:
            set_read_only(postgres_admin_url, "metrics_read_only", True)
        if n == 40:
            set_read_only(postgres_admin_url, "metrics_read_only", False)
        try:
            metrics.stub.RecordEvents(impression(n), timeout=10)
            acknowledged += 1
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc.details()
            reasons.add(exc.details() or "")
            refused += 1
            if refused == 1:  # the watch notices within its period
                deadline = time.monotonic() + 10
                while (
                    health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    assert time.monotonic() < deadline, "health stayed SERVING on a read-only database"
                    time.sleep(0.1)
    # Ending the sessions may refuse a write on either side of the switch, as UNAVAILABLE too.
    assert acknowledged >= 30 and refused >= 1 and acknowledged + refused == 60
    assert any("read-only transaction" in reason for reason in reasons), reasons
    assert impressions_counted(metrics) == acknowledged
    deadline = time.monotonic() + 10
    while health.Check(health_pb2.HealthCheckRequest(), timeout=5).status != SERVING:
        assert time.monotonic() < deadline, "health did not come back"
        time.sleep(0.1)
