"""`python -m services.policy.dead_letters list|replay` on a real policy database: a row the
receiver refused is listed with its reason, replayed to the outbox, and delivered.

RefusingSink is NOT MetricsService: a stand-in for its verdict on rows, refusing the events
whose ids it was told to (as MetricsService refuses an invalid row with INVALID_ARGUMENT)."""

from __future__ import annotations

import json
import subprocess
import sys

from rectune.domain.errors import Relayed
from rectune.domain.events import Decision, EventKind, FeedbackEvent
from tests.conftest import ROOT
from tests.unit.test_policy_core import make_core


class RefusingSink:
    """NOT MetricsService (see the module's docstring)."""

    def __init__(self, refused_event_ids: set[str]) -> None:
        self.refused = refused_event_ids
        self.decisions: list[Decision] = []
        self.events: list[FeedbackEvent] = []

    def record_decisions(self, decisions: list[Decision]) -> None:
        self.decisions += decisions

    def record_events(self, events: list[FeedbackEvent]) -> None:
        for event in events:
            if event.event_id in self.refused:
                raise Relayed("INVALID_ARGUMENT", f"events[0].event_id: refused {event.event_id!r}")
        self.events += events


def dead_letters(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.policy.dead_letters", *args, "--database-url", database_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_refused_row_is_listed_replayed_and_then_delivered(tmp_path) -> None:
    path = tmp_path / "policy.db"
    url = f"sqlite:///{path}"
    core = make_core(path)
    decision = core.recommend("r1", "196", {}, 3, [])
    for event_id in ("bad", "good"):
        core.record_feedback(event_id, decision.decision_id, EventKind.CLICK, "", "", 1.0, None)
    refusing = RefusingSink({"bad"})
    core.drain_outbox(refusing)
    assert [event.event_id for event in refusing.events] == [f"{decision.decision_id}:impression", "good"]

    listed = dead_letters(url, "list")
    assert listed.returncode == 0, listed.stderr
    (line,) = listed.stdout.splitlines()
    letter = json.loads(line)
    assert (letter["kind"], letter["reason"]) == ("event", "events[0].event_id: refused 'bad'")
    assert (letter["payload"]["event_id"], letter["payload"]["decision_id"]) == ("bad", decision.decision_id)
    assert listed.stderr == "1 dead letters\n"

    assert (
        dead_letters(url, "replay", "--id", str(letter["id"] + 1)).stderr == "0 dead letters moved back to the outbox\n"
    )
    replayed = dead_letters(url, "replay", "--id", str(letter["id"]))
    assert (replayed.returncode, replayed.stderr) == (0, "1 dead letters moved back to the outbox\n")
    assert dead_letters(url, "list").stderr == "0 dead letters\n"

    accepting = RefusingSink(set())
    core.drain_outbox(accepting)
    assert [event.event_id for event in accepting.events] == ["bad"]
    core.close()
