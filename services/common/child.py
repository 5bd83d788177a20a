"""A rectune service in a child process on a free loopback port: for tools that need a
service for a while (``rectune study``, the benchmarks) rather than a deployment."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Collection
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def on_cpus(cpus: Collection[int]) -> list[str]:
    """The command prefix that confines a program to ``cpus`` (none when empty)."""
    if not cpus:
        return []
    taskset = shutil.which("taskset")
    if taskset is None:
        raise RuntimeError("confining a child service to CPUs needs util-linux's taskset on PATH")
    return [taskset, "--cpu-list", ",".join(str(cpu) for cpu in sorted(cpus))]


def start_child_service(module: str, *flags: str, cpus: Collection[int] = ()) -> tuple[subprocess.Popen[str], str]:
    """``python -m <module> --port 0 <flags>``; returns the process once it listens, and its address.
    Its JSON log lines are read (and dropped) so that a full pipe never blocks it. ``cpus``, when
    given, are the only CPUs it and all its threads may run on (util-linux's taskset)."""
    process = subprocess.Popen(
        [*on_cpus(cpus), sys.executable, "-m", module, "--port", "0", *flags],
        cwd=ROOT,
        env={**os.environ, "RECTUNE_LOG_FORMAT": "json"},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a library's own print
        if record.get("event") == "listening":
            threading.Thread(target=process.stdout.read, daemon=True).start()
            return process, f"127.0.0.1:{record['port']}"
    raise RuntimeError(f"{module} exited with status {process.wait()} before listening")
