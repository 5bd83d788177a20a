"""The soak benchmark's machinery, for a few seconds (``make soak`` runs it for an hour and
reports its errors): three services in their own processes under open-loop load at half the
measured maximum. Only what load cannot change is asserted here, since CI's machine is shared:
every acknowledged click reaches MetricsService, and no call fails except by running out of
its deadline or being shed (never INTERNAL, UNKNOWN, UNAVAILABLE or a lost write)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def test_a_short_soak_has_no_errors_and_loses_no_click() -> None:
    flags = ["--seconds", "8", "--probe-seconds", "3", "--warmup-seconds", "2", "--sample-seconds", "2"]
    done = subprocess.run(
        [sys.executable, "-m", "bench.soak", *flags], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert set(result["outcomes"]) <= {"OK", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"}, result["outcomes"]
    assert result["outcomes"]["OK"] > 0 and result["clicks_acknowledged"] > 0
    assert result["clicks_in_metrics"] == result["clicks_acknowledged"]
    assert set(result["rss_mib_at_end"]) == {"scoring", "metrics", "policy"}
