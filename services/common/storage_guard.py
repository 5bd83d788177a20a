"""Storage faults are loud: a write that cannot be made durable is not acknowledged.

Two faults are caught for every engine made by ``make_engine``:
- the database refuses writes (read-only file or directory, full disk, I/O error, a lost
  PostgreSQL connection): the driver's error becomes ``Unavailable`` (retryable), never
  INTERNAL;
- the SQLite file was removed or replaced under the running service: SQLite would go on
  writing to the unlinked file, acknowledging writes that a restart loses. Each connection
  remembers the file it opened (device and inode), and a commit on a connection whose file
  is no longer the one at the path is refused with ``Unavailable`` before it is made.

``StorageWatch`` turns this into health: every second it checks that the store takes a
write, says NOT_SERVING while it does not and SERVING once it does again, and when the
SQLite file was removed it puts it back, copied from the still open (unlinked) database
with SQLite's backup API, so nothing that was acknowledged is lost.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Engine, event, make_url, text
from sqlalchemy.exc import OperationalError

from rectune.domain.errors import Unavailable

log = structlog.get_logger(__name__)

STORAGE_CHECK_SECONDS = 1.0  # how often StorageWatch checks that the store takes a write
FileIdentity = tuple[int, int] | None  # (device, inode); None: no file at the path


def sqlite_path(engine: Engine) -> Path | None:
    if engine.dialect.name != "sqlite":
        return None
    database = make_url(str(engine.url)).database
    return Path(database).resolve() if database else None


def file_identity(path: Path) -> FileIdentity:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


def guard(engine: Engine) -> None:
    """Install the two checks on the engine (see the module docstring)."""
    path = sqlite_path(engine)
    if path is not None:

        def remember_file(dbapi_connection: Any, record: Any) -> None:
            record.info["file"] = file_identity(path)

        def refuse_commit_to_a_lost_file(connection: Any) -> None:
            opened = connection.info.get("file")
            if opened is None or opened != file_identity(path):
                raise Unavailable(f"storage: the database file {path} was removed or replaced; the write was not made")

        event.listen(engine, "connect", remember_file)
        event.listen(engine, "commit", refuse_commit_to_a_lost_file)

    def unavailable_storage(context: Any) -> None:
        if isinstance(context.original_exception, Unavailable):
            return
        storage_fault = isinstance(context.sqlalchemy_exception, OperationalError) or context.is_disconnect
        if storage_fault or _postgres_storage_fault(context.original_exception):
            detail = str(context.original_exception).splitlines()[0][:200]
            raise Unavailable(f"storage: {detail}") from context.original_exception

    event.listen(engine, "handle_error", unavailable_storage)


# PostgreSQL SQLSTATEs of a database that cannot take the write now, whatever the request:
# connection exceptions (08), insufficient resources such as a full disk (53), operator
# intervention such as a shutdown (57), system errors such as I/O (58), and a read-only
# transaction (25006: the database set read-only, or a standby after a failover).
POSTGRES_STORAGE_CLASSES = ("08", "53", "57", "58")
POSTGRES_READ_ONLY = "25006"


def _postgres_storage_fault(error: BaseException | None) -> bool:
    state = str(getattr(error, "sqlstate", "") or "")
    return state == POSTGRES_READ_ONLY or state[:2] in POSTGRES_STORAGE_CLASSES


class StorageWatch:
    """Checks that the store takes a write; NOT_SERVING while it does not (see the module
    docstring). ``check`` runs periodically (services.common.background)."""

    def __init__(self, engine: Engine, set_serving: Callable[[], None], set_not_serving: Callable[[], None]) -> None:
        self.engine = engine
        self.path = sqlite_path(engine)
        self.identity = file_identity(self.path) if self.path else None
        self.set_serving, self.set_not_serving = set_serving, set_not_serving
        self.fault = ""
        self._lock = threading.Lock()

    def check(self) -> bool:
        with self._lock:
            try:
                if self.path is not None and file_identity(self.path) != self.identity:
                    self._restore()
                self._probe_write()
            except Exception as exc:  # any failure: the store is unusable for now
                return self._failed(exc)
            if self.fault:
                log.warning("storage_recovered", after=self.fault)
                self.fault = ""
                self.set_serving()
            return True

    def _probe_write(self) -> None:
        """A write that changes nothing, committed. SQLite takes its write lock for it. On
        PostgreSQL the transaction must be read-write (not a database set read-only, not a
        standby) and is given a transaction id, so that its commit writes to the WAL."""
        with self.engine.begin() as connection:
            if self.engine.dialect.name == "sqlite":
                version = connection.execute(text("PRAGMA user_version")).scalar()
                connection.execute(text(f"PRAGMA user_version = {int(version or 0)}"))
            elif self.engine.dialect.name == "postgresql":
                if connection.execute(text("SHOW transaction_read_only")).scalar() != "off":
                    raise Unavailable("storage: the database is read-only (transaction_read_only is on)")
                connection.execute(text("SELECT pg_current_xact_id()"))
            else:
                connection.execute(text("SELECT 1"))

    def _restore(self) -> None:
        """Put a removed SQLite file back from the still open database, then reopen the pool."""
        assert self.path is not None
        if file_identity(self.path) is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            raw = self.engine.raw_connection()  # a pooled connection: it may hold the unlinked file
            try:
                source = raw.driver_connection
                if not isinstance(source, sqlite3.Connection):
                    raise Unavailable(f"storage: {self.path} is gone and cannot be restored")
                target = sqlite3.connect(self.path)
                try:
                    source.backup(target)
                finally:
                    target.close()
            finally:
                raw.invalidate()
            log.warning("storage_restored", path=str(self.path))
        self.identity = file_identity(self.path)
        self.engine.dispose()  # connections to the old file close as they come back

    def _failed(self, exc: Exception) -> bool:
        message = exc.message if isinstance(exc, Unavailable) else f"{type(exc).__name__}: {exc}"
        if not self.fault:
            log.error("storage_unusable", error=message[:300])
            self.set_not_serving()
        self.fault = message
        return False
