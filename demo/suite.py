"""Start the four services as child processes on loopback, and stop every one of them.

Used by the demo. Each child is a real ``python -m services.<name>`` with its log under
the run folder; ``stop`` sends SIGTERM (the services drain), then kills what is left, so
no process outlives the suite.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from services.common.wait_healthy import wait_serving

START_ORDER = ("metrics", "embedding", "scoring", "policy")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_or_free(preferred: int) -> int:
    """The preferred port when nothing listens on it, else a free one."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port()
    return preferred


def service_flags(name: str, ports: dict[str, int], run_dir: Path) -> list[str]:
    """What each service needs: its siblings' addresses, its database under the run folder."""
    address = {peer: f"127.0.0.1:{port}" for peer, port in ports.items()}
    database = ["--database-url", f"sqlite:///{run_dir.resolve() / f'{name}.db'}"]
    if name == "metrics":
        return database
    if name == "scoring":
        return ["--embedding-address", address["embedding"], *database]
    if name == "policy":
        return ["--scoring-address", address["scoring"], "--metrics-address", address["metrics"], *database]
    return []


@dataclass
class LocalSuite:
    run_dir: Path
    # Flags added to a service's command line, by service name.
    extra_flags: dict[str, list[str]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _logs: list[IO[bytes]] = field(default_factory=list)

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def start(self, health_timeout_seconds: float = 180.0) -> dict[str, str]:
        """Start every service; returns each one's health status once all serve or time is up."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.ports = {name: free_port() for name in START_ORDER}
        for name in START_ORDER:
            command = [sys.executable, "-m", f"services.{name}", "--port", str(self.ports[name])]
            flags = service_flags(name, self.ports, self.run_dir) + self.extra_flags.get(name, [])
            self._spawn(name, command + flags)
        # A service that exited (Ctrl-C reaches the services too) ends the wait at once.
        return wait_serving(
            [self.address(name) for name in START_ORDER],
            health_timeout_seconds,
            give_up=lambda: any(process.poll() is not None for process in self.processes.values()),
        )

    def start_tuner(self, flags: list[str]) -> None:
        """``tuner run`` against the running services, its audit table under the run folder."""
        self._spawn("tuner", [sys.executable, "-m", "tuner", "run", *self._tuner_flags(), *flags])

    def start_dashboard(self, port: int) -> str:
        """``rectune dashboard`` over the running services and the tuner's audit table; its URL."""
        command = [sys.executable, "-m", "operators", *self._tuner_flags(), "dashboard", "--port", str(port)]
        self._spawn("dashboard", command)
        return f"http://127.0.0.1:{port}/"

    def _tuner_flags(self) -> list[str]:
        """The services' addresses and the audit table under the run folder, as the tuner
        and the dashboard take them."""
        peers = [f"--{name}-address={self.address(name)}" for name in ("policy", "scoring", "metrics")]
        return [*peers, f"--database-url={self.audit_url()}"]

    def audit_url(self) -> str:
        """The tuner's audit table, under the run folder."""
        return f"sqlite:///{self.run_dir.resolve() / 'tuner.db'}"

    def _spawn(self, name: str, command: list[str]) -> None:
        """A child with JSON logs into ``<name>.log`` under the run folder."""
        log = (self.run_dir / f"{name}.log").open("wb")
        self._logs.append(log)
        env = {**os.environ, "RECTUNE_LOG_FORMAT": "json"}
        self.processes[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)

    def stop(self, grace_seconds: float = 15.0) -> None:
        """SIGTERM every child, wait for the drain, kill any that did not exit."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=grace_seconds)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in self._logs:
            log.close()

    def __enter__(self) -> LocalSuite:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
