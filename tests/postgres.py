"""A throw-away PostgreSQL cluster for tests: initdb in a temp dir, a free loopback port, removed after.

Uses the installed ``initdb`` and ``pg_ctl``. PostgreSQL refuses to run as root, so when
the tests run as root (as CI does) the cluster runs as the ``postgres`` system user.
If the cluster cannot start, the error says why; nothing is skipped.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _as_cluster_owner() -> list[str]:
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    if runuser is None:
        raise RuntimeError("running as root, PostgreSQL needs another user, and runuser is not installed")
    return [runuser, "-u", "postgres", "--"]


def _run(command: list[str], what: str, log: Path | None = None) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        server_log = log.read_text() if log is not None and log.exists() else ""
        raise RuntimeError(f"PostgreSQL {what} failed ({' '.join(command)}):\n{result.stderr}\n{server_log}")


@contextmanager
def throwaway_cluster() -> Iterator[str]:
    """Yields an admin SQLAlchemy URL (database ``postgres``) of a fresh cluster."""
    for tool in ("initdb", "pg_ctl"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not on PATH: the PostgreSQL tests need the PostgreSQL 15 binaries")
    owner = _as_cluster_owner()
    root = Path(tempfile.mkdtemp(prefix="rectune-pg-"))
    data, log = root / "data", root / "server.log"
    if owner:
        shutil.chown(root, user="postgres", group="postgres")
    port = _free_port()
    try:
        _run([*owner, "initdb", "-D", str(data), "-U", "rectune", "--auth=trust", "-E", "UTF8", "--no-sync"], "initdb")
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        _run(
            [*owner, "pg_ctl", "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", options, "start"], "start", log
        )
        try:
            yield f"postgresql+psycopg://rectune@127.0.0.1:{port}/postgres"
        finally:
            _run([*owner, "pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop"], "stop", log)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def create_database(admin_url: str, name: str) -> str:
    """A new empty database in the cluster; returns its URL."""
    engine = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"
