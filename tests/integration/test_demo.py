"""`make demo`'s program end to end in its short mode, and Ctrl-C: no process outlives it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.integration


def start_demo(folder: Path, minutes: float) -> subprocess.Popen[str]:
    """The demo with its output in ``folder/demo.out``: a pipe nobody reads while the test
    watches the processes would fill and stop the demo in the middle of a print."""
    env = {**os.environ, "DEMO_MINUTES": str(minutes), "DEMO_RATE": "20", "DEMO_SEED": "3"}
    with (folder / "demo.out").open("w") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "demo"],
            cwd=folder,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group, as a terminal's foreground job
        )


def finished(process: subprocess.Popen[str], folder: Path, timeout: float) -> str:
    process.wait(timeout=timeout)
    return (folder / "demo.out").read_text()


def watch_children(process: subprocess.Popen[str], until: float, seen: set[int]) -> None:
    """Collect the pids of the demo's child processes until ``until`` or its exit."""
    parent = psutil.Process(process.pid)
    while time.monotonic() < until and process.poll() is None:
        try:
            seen.update(child.pid for child in parent.children(recursive=True))
        except psutil.NoSuchProcess:
            return
        time.sleep(0.2)


def alive(pids: set[int]) -> list[int]:
    return [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]


def test_short_demo_writes_a_report_from_metrics_and_leaves_no_process(tmp_path: Path) -> None:
    process = start_demo(tmp_path, minutes=0.1)
    children: set[int] = set()
    watch_children(process, time.monotonic() + 240, children)
    output = finished(process, tmp_path, 240)
    assert process.returncode == 0, output
    assert len(children) >= 5  # the four services and the tuner
    assert alive(children) == []
    (report,) = (tmp_path / "reports").glob("demo-*/report.md")
    text = report.read_text()
    assert "they agree." in text
    assert "### What the tuner screened (its audit table)" in text
    assert "### The tuner's best arm against the hand-written ones (live traffic)" in text
    assert "| bandit (MetricsService) |" in text and "| champion alone (counterfactual, simulator) |" in text
    assert {p.name for p in report.parent.glob("*.png")} == {"ctr.png", "share.png", "cumulative.png"}


def test_ctrl_c_stops_every_service(tmp_path: Path) -> None:
    process = start_demo(tmp_path, minutes=5)
    children: set[int] = set()
    deadline = time.monotonic() + 240
    while len(children) < 4 and time.monotonic() < deadline and process.poll() is None:
        watch_children(process, time.monotonic() + 1, children)
    watch_children(process, time.monotonic() + 5, children)  # the services are up and serving
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
    output = finished(process, tmp_path, 120)
    assert len(children) >= 4, output
    assert process.returncode == 130, output
    assert alive(children) == []
