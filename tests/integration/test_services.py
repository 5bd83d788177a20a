"""Each service starts (in-process and as `python -m services.<name>`), reports health, drains on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from services.common.child import start_child_service
from services.common.contracts import EMBEDDING_SERVICE, METRICS_SERVICE, POLICY_SERVICE, SCORING_SERVICE
from services.common.wait_healthy import wait_serving

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SERVICE_NAMES = {
    "embedding": EMBEDDING_SERVICE,
    "scoring": SCORING_SERVICE,
    "policy": POLICY_SERVICE,
    "metrics": METRICS_SERVICE,
}
PEER_FLAGS: dict[str, list[str]] = {
    "scoring": ["--embedding-address", "127.0.0.1:9"],
    "policy": ["--scoring-address", "127.0.0.1:9", "--metrics-address", "127.0.0.1:9"],
}


def launch(name: str, *flags: str) -> subprocess.Popen[str]:
    env = {**os.environ, "RECTUNE_LOG_FORMAT": "json"}
    return subprocess.Popen(
        [sys.executable, "-m", f"services.{name}", "--port", "0", *flags],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def listening_port(process: subprocess.Popen[str]) -> int:
    assert process.stdout is not None
    for line in process.stdout:
        record = json.loads(line)
        if record.get("event") == "listening":
            return int(record["port"])
    raise AssertionError(f"exited without listening: {process.wait()} {process.stderr.read()}")  # type: ignore[union-attr]


@pytest.mark.parametrize("name", sorted(SERVICE_NAMES))
def test_entrypoint_serves_and_drains_on_sigterm(name: str, tmp_path: Path) -> None:
    flags = PEER_FLAGS.get(name, [])
    if name in ("metrics", "scoring", "policy"):
        flags = [*flags, "--database-url", f"sqlite:///{tmp_path / f'{name}.db'}"]
    process = launch(name, *flags)
    try:
        port = listening_port(process)
        address = f"127.0.0.1:{port}"
        assert wait_serving([address], timeout_seconds=120)[address] == "SERVING"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert process.stdout is not None
        events = [json.loads(line)["event"] for line in process.stdout]
        assert events[-2:] == ["draining", "stopped"]
    finally:
        process.kill()
        process.wait()


def test_entrypoint_fails_fast_without_a_required_address() -> None:
    process = launch("policy", "--metrics-address", "127.0.0.1:9")
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 2
    assert stderr.strip() == (
        "python -m services.policy: --scoring-address (env RECTUNE_SCORING_ADDRESS) is required: "
        "ScoringService replicas that rank (host:port, dns:///name:port or a list of IP endpoints)"
    )


def test_entrypoint_reports_a_port_it_cannot_bind(start_service) -> None:
    taken = start_service("metrics").service.port
    process = subprocess.Popen(
        [sys.executable, "-m", "services.metrics", "--port", str(taken)],
        cwd=ROOT,
        env={**os.environ, "RECTUNE_LOG_FORMAT": "json"},
        stdout=subprocess.PIPE,
        text=True,
    )
    stdout, _ = process.communicate(timeout=30)
    assert process.returncode == 1
    record = json.loads(stdout.strip().splitlines()[-1])
    assert record["event"] == "start_failed"
    assert f"127.0.0.1:{taken}" in record["error"]


def test_a_child_service_confined_to_cpus_runs_every_thread_on_them(tmp_path: Path) -> None:
    """What bench/scaleout gives the serving and training replicas: cores of their own."""
    last_cpu = max(os.sched_getaffinity(0))
    process, address = start_child_service(
        "services.metrics", "--database-url", f"sqlite:///{tmp_path / 'm.db'}", cpus=[last_cpu]
    )
    try:
        assert wait_serving([address], timeout_seconds=60)[address] == "SERVING"  # its gRPC threads are running
        threads = list(Path(f"/proc/{process.pid}/task").iterdir())
        assert len(threads) > 1
        assert {frozenset(os.sched_getaffinity(int(thread.name))) for thread in threads} == {frozenset({last_cpu})}
    finally:
        process.kill()
        process.wait()
