"""SQLAlchemy engines for every service that stores state: SQLite (WAL) or PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url

from services.common.storage_guard import guard


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: readers do not block the writer; NORMAL is durable across process crashes in WAL mode.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


IN_MEMORY_REFUSED = "an in-memory SQLite database is not shared by threads; give a file"


def in_memory_sqlite(url: str) -> bool:
    """Each connection to such a database is a database of its own, so a service's threads
    (requests, writers, pollers) would each see a different, empty one."""
    return url.startswith("sqlite") and make_url(url).database in (None, "", ":memory:")


def make_engine(url: str) -> Engine:
    if in_memory_sqlite(url):
        raise ValueError(f"{IN_MEMORY_REFUSED}, got {url!r}")
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)
    guard(engine)  # storage faults answer UNAVAILABLE, never an acknowledged write that is lost
    return engine
