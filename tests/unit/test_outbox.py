"""The outbox on a real SQLite file: what the policy acknowledged reaches MetricsService and
ScoringService field for field, at least once; a peer that is down keeps the rows queued; a
refused row goes to the dead letters alone, and a replayed dead letter arrives whole.

RecordingSink (test_policy_core.py) and the sinks below are NOT MetricsService or
ScoringService: they record what the outbox sends, and refuse or fail when told to."""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import replace

from rectune.domain.errors import Relayed
from rectune.domain.events import Decision, EventKind, FeedbackEvent, Interaction, listed
from tests.unit.test_policy_core import RecordingSink, make_core


class Interactions:
    """NOT ScoringService: records the interactions sent to it, or fails while ``down``."""

    def __init__(self, down: bool = False) -> None:
        self.down = down
        self.received: list[Interaction] = []

    def add_interactions(self, interactions: list[Interaction]) -> None:
        if self.down:
            raise ConnectionError("ScoringService is down")
        self.received += interactions


class Refusing(RecordingSink):
    """NOT MetricsService: refuses (as INVALID_ARGUMENT) decisions and events by id."""

    def __init__(self, decision_ids: Collection[str] = (), event_ids: Collection[str] = ()) -> None:
        super().__init__()
        self.refused_decisions, self.refused_events = set(decision_ids), set(event_ids)

    def record_decisions(self, decisions: list[Decision]) -> None:
        for decision in decisions:
            if decision.decision_id in self.refused_decisions:
                raise Relayed("INVALID_ARGUMENT", f"decision {decision.decision_id} refused")
        super().record_decisions(decisions)

    def record_events(self, events: list[FeedbackEvent]) -> None:
        for event in events:
            if event.event_id in self.refused_events:
                raise Relayed("INVALID_ARGUMENT", f"event {event.event_id} refused")
        super().record_events(events)


def test_decisions_events_and_interactions_arrive_field_for_field(tmp_path) -> None:
    core = make_core(tmp_path / "policy.db")
    decision = core.recommend("r1", "196", {"page": "home"}, 3, [])
    at = time.time() - 5
    core.record_feedback("c1", decision.decision_id, EventKind.CLICK, "", "2", 2.5, at)
    core.record_feedback("x1", decision.decision_id, EventKind.CUSTOM, "share", "3", 0.0, at)
    metrics, scoring = RecordingSink(), Interactions()
    # Rows sent: the decision (its impression goes with it), two events, an interaction.
    assert core.drain_outbox(metrics, scoring) == 4
    (sent,) = metrics.decisions
    assert sent == Decision(
        decision.decision_id,
        "r1",
        "196",
        decision.arm_id,
        decision.propensity,
        decision.propensity_samples,
        decision.items,
        False,
        decision.algorithm,
        {"page": "home"},
        decision.time,
    )
    assert metrics.events == [
        decision.impression(),
        FeedbackEvent("c1", decision.decision_id, decision.arm_id, "196", "2", EventKind.CLICK, "", 2.5, at),
        FeedbackEvent("x1", decision.decision_id, decision.arm_id, "196", "3", EventKind.CUSTOM, "share", 0.0, at),
    ]
    # A click tells scoring what the user likes; a custom event does not.
    assert scoring.received == [Interaction("196", "2", 2.5, at)]
    assert core.drain_outbox(metrics, scoring) == 0  # nothing twice
    core.close()


def test_a_peer_that_is_down_keeps_every_row_queued_for_the_next_round(tmp_path) -> None:
    core = make_core(tmp_path / "policy.db")
    decision = core.recommend("r1", "196", {}, 3, [])
    core.record_feedback("c1", decision.decision_id, EventKind.CLICK, "", "2", 1.0, None)
    assert core.drain_outbox(RecordingSink(fail=True), Interactions()) == 0
    # Waiting: the decision, the click event and the click's interaction, since about now.
    assert core.store.backlog() == 3 and core.store.dead_letter_count() == 0
    oldest = core.store.oldest_waiting_since()
    assert oldest is not None and abs(oldest - time.time()) < 60
    metrics, scoring = RecordingSink(), Interactions(down=True)
    sent = core.drain_outbox(metrics, scoring)  # metrics is back; scoring is still down
    assert [e.event_id for e in metrics.events] == [f"{decision.decision_id}:impression", "c1"]
    assert sent == 2 and scoring.received == []
    assert core.store.backlog() == 1  # the interaction waits for scoring
    scoring.down = False
    assert core.drain_outbox(metrics, scoring) == 1 and len(scoring.received) == 1
    assert (core.store.backlog(), core.store.oldest_waiting_since()) == (0, None)
    core.close()


def test_a_refused_row_alone_goes_to_the_dead_letters_and_replays_whole(tmp_path) -> None:
    core = make_core(tmp_path / "policy.db")
    first = core.recommend("r1", "196", {}, 3, [])
    second = core.recommend("r2", "197", {}, 3, [])
    for event_id in ("bad", "good"):
        core.record_feedback(event_id, second.decision_id, EventKind.CLICK, "", "2", 1.0, None)
    refusing = Refusing(decision_ids={first.decision_id}, event_ids={"bad"})
    # Without a ScoringService sink the clicks' interactions stay queued, and the drain ends.
    assert core.drain_outbox(refusing) == 2  # the second decision (with its impression), good
    assert core.store.backlog() == 2
    assert [d.decision_id for d in refusing.decisions] == [second.decision_id]
    assert [e.event_id for e in refusing.events] == [
        f"{first.decision_id}:impression",
        f"{second.decision_id}:impression",
        "good",
    ]
    letters = core.store.dead_letters()
    assert [(stored.letter.kind, stored.letter.reason) for stored in letters] == [
        ("decision", f"decision {first.decision_id} refused"),
        ("event", "event bad refused"),
    ]
    assert core.store.replay_dead_letters() == 2
    accepting = RecordingSink()
    assert core.drain_outbox(accepting, Interactions()) == 4  # the replayed two, and the interactions
    # Sent again from its dead letter: items by id only, as MetricsService keeps them.
    assert accepting.decisions == [replace(first, items=listed(first.item_ids), context=dict(first.context))]
    assert [(e.event_id, e.decision_id, e.kind) for e in accepting.events] == [
        ("bad", second.decision_id, EventKind.CLICK)
    ]
    core.close()


class ImpressionsFail(RecordingSink):
    """NOT MetricsService: takes decisions, then fails (down) or refuses (by id) impressions."""

    def __init__(self, refuse: bool) -> None:
        super().__init__()
        self.refuse = refuse

    def record_events(self, events: list[FeedbackEvent]) -> None:
        if self.refuse:
            raise Relayed("INVALID_ARGUMENT", "impression refused")
        raise ConnectionError("MetricsService is down")


def test_decisions_whose_impressions_did_not_arrive_are_sent_again(tmp_path) -> None:
    core = make_core(tmp_path / "policy.db")
    decision = core.recommend("r1", "196", {}, 3, [])
    down = ImpressionsFail(refuse=False)
    assert core.drain_outbox(down) == 0 and [d.decision_id for d in down.decisions] == [decision.decision_id]
    assert core.store.backlog() == 1  # not marked forwarded: the decision goes again with its impression
    refusing = ImpressionsFail(refuse=True)
    assert core.drain_outbox(refusing) == 1  # the decision arrived; its impression was refused
    (letter,) = core.store.dead_letters()
    assert (letter.letter.kind, letter.letter.reason) == ("event", "impression refused")
    assert letter.letter.payload["event_id"] == f"{decision.decision_id}:impression"
    assert core.store.backlog() == 0 and core.store.dead_letter_count() == 1
    core.close()


def test_an_event_row_without_its_optional_fields_is_sent_with_them_empty(tmp_path) -> None:
    """Rows queued by an older version carry only the required fields."""
    core = make_core(tmp_path / "policy.db")
    with core.store.unit_of_work() as work:
        work.enqueue_many([("event", {"event_id": "old", "decision_id": "d", "arm_id": "a", "value": 1.0})])
    metrics = RecordingSink()
    assert core.drain_outbox(metrics) == 1
    assert metrics.events == [FeedbackEvent("old", "d", "a", "", "", None, "", 1.0, None)]
    core.close()


def test_dead_letters_are_listed_oldest_first_within_a_limit_and_replayed_by_id(tmp_path) -> None:
    core = make_core(tmp_path / "policy.db")
    decision = core.recommend("r1", "196", {}, 3, [])
    for n in range(3):
        core.record_feedback(f"bad{n}", decision.decision_id, EventKind.CLICK, "", "", 1.0, None)
    core.drain_outbox(Refusing(event_ids={"bad0", "bad1", "bad2"}))
    letters = core.store.dead_letters()
    assert [stored.letter.payload["event_id"] for stored in letters] == ["bad0", "bad1", "bad2"]
    assert [stored.id for stored in letters] == sorted(stored.id for stored in letters)
    assert all(abs(stored.created_at - time.time()) < 60 for stored in letters)
    assert [s.letter.payload["event_id"] for s in core.store.dead_letters(limit=2)] == ["bad0", "bad1"]
    assert core.store.replay_dead_letters([letters[1].id]) == 1  # only the one named
    assert [s.letter.payload["event_id"] for s in core.store.dead_letters()] == ["bad0", "bad2"]
    assert core.store.dead_letter_count() == 2 and core.store.backlog() == 1
    replayed = RecordingSink()
    assert core.drain_outbox(replayed) == 1 and [e.event_id for e in replayed.events] == ["bad1"]
    assert core.store.replay_dead_letters([]) == 2  # none named: all of them
    assert core.store.dead_letter_count() == 0
    core.close()


def test_old_decisions_are_forgotten_once_forwarded_and_old_feedback_ids_with_them(tmp_path) -> None:
    core = make_core(tmp_path / "policy.db")
    forwarded = core.recommend("r1", "196", {}, 3, [])
    core.record_feedback("c1", forwarded.decision_id, EventKind.CLICK, "", "", 1.0, None)
    core.drain_outbox(RecordingSink())
    waiting = core.recommend("r2", "197", {}, 3, [])
    core.store.forget_before(time.time() - 3600)  # nothing is that old
    assert core.store.decision_by_request("r1") == forwarded
    with core.store.unit_of_work() as work:
        assert work.recorded_feedback_ids(["c1", "c2"]) == {"c1"}
    core.store.forget_before(time.time() + 1)
    assert core.store.decision_by_request("r1") is None  # forwarded and old: gone
    assert core.store.decision_by_request("r2") == waiting  # not forwarded yet: kept
    with core.store.unit_of_work() as work:
        assert work.recorded_feedback_ids(["c1"]) == set()
    core.close()
