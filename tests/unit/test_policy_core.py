"""PolicyCore on a real SQLite file: decisions and feedback written in groups, decisions as their
own outbox, the upgrade of older databases, the selection distribution estimated once per snapshot.

StandInRanker below is NOT ScoringService: a fixed list, so that these tests look only at the
policy's own code (the real path is in tests/integration/test_policy_service.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import text

from rectune.domain.arms import ArmOrigin, ArmState
from rectune.domain.configuration import Configuration
from rectune.domain.errors import FailedPrecondition, Unavailable
from rectune.domain.events import Decision, EventKind, FeedbackEvent, ScoredItem
from services.common.storage import make_engine
from services.policy.core import feedback
from services.policy.core.feedback import FeedbackResult
from services.policy.core.model import ArmCounts, BanditSettings
from services.policy.core.service import PolicyCore
from services.policy.core.store import PolicyStore


class StandInRanker:
    """NOT ScoringService: the same list for everyone."""

    def fit_configuration(self, configuration: Configuration) -> str:
        return configuration.strategy

    def rank(
        self, configuration: Configuration, user_id: str, history: Sequence[Any], k: int, deadline: float
    ) -> list[ScoredItem]:
        return [ScoredItem(str(rank), 1.0 / rank, 0.5, rank) for rank in range(1, k + 1)]


class RecordingSink:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.decisions: list[Decision] = []
        self.events: list[FeedbackEvent] = []

    def record_decisions(self, decisions: list[Decision]) -> None:
        if self.fail:
            raise ConnectionError("MetricsService is down")
        self.decisions += decisions

    def record_events(self, events: list[FeedbackEvent]) -> None:
        if self.fail:
            raise ConnectionError("MetricsService is down")
        self.events += events


def make_core(path, belief_cache_seconds: float = 0.0, arms: Sequence[str] = ("popularity", "item_knn")) -> PolicyCore:
    core = PolicyCore(
        PolicyStore(make_engine(f"sqlite:///{path}")),
        StandInRanker(),
        seed=3,
        belief_cache_seconds=belief_cache_seconds,
    )
    for index, strategy in enumerate(arms):
        state = ArmState.CHAMPION if index == 0 else ArmState.ACTIVE
        core.put_arm(strategy, Configuration(strategy, {}), ArmOrigin.MANUAL, 0.5, state, "")
    return core


def arm_counts(core: PolicyCore) -> dict[str, float]:
    return {arm.arm_id: arm.impressions for arm in core.list_arms()}


def test_concurrent_retries_of_one_request_get_one_decision(tmp_path) -> None:
    core = make_core(tmp_path / "policy.db")
    answers: list[Decision] = []
    start = threading.Barrier(8)

    def retry() -> None:
        start.wait()
        answers.append(core.recommend("same-request", "196", {}, 5, []))

    threads = [threading.Thread(target=retry) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({answer.decision_id for answer in answers}) == 1
    assert sum(arm_counts(core).values()) == 1.0  # one impression counted
    core.close()


def test_a_group_of_decisions_counts_what_they_would_count_one_by_one(tmp_path) -> None:
    grouped, one_by_one = make_core(tmp_path / "grouped.db"), make_core(tmp_path / "single.db")
    for core in (grouped, one_by_one):
        core.update_settings({"algorithm": "discounted_thompson", "discount": 0.9})
    decisions = [
        Decision(f"d{n}", f"r{n}", "196", arm_id, 0.5, 1000, (), False, "discounted_thompson", {}, time.time())
        for n, arm_id in enumerate(["popularity", "item_knn", "popularity", "popularity", "item_knn"])
    ]
    assert grouped.decision_log._write_decisions(decisions) == decisions
    for decision in decisions:
        assert one_by_one.decision_log._write_decisions([decision]) == [decision]
    assert arm_counts(grouped) == pytest.approx(arm_counts(one_by_one), abs=1e-12)
    assert {arm.arm_id: arm.step for arm in grouped.list_arms()} == {"popularity": 4, "item_knn": 5}
    grouped.close()
    one_by_one.close()


def test_decisions_are_their_own_outbox_and_stay_until_metrics_has_them(tmp_path) -> None:
    core = make_core(tmp_path / "policy.db")
    made = [core.recommend(f"r{n}", str(n + 1), {"page": "home"}, 3, []) for n in range(3)]
    down = RecordingSink(fail=True)
    assert core.drain_outbox(down) == 0
    core.update_settings({"reward_window_seconds": 0.001})
    time.sleep(0.01)
    core.forget_old_decisions()  # older than the window, but not forwarded: kept
    assert len(core.store.unforwarded_decisions(10)) == 3

    back = RecordingSink()
    assert core.drain_outbox(back) == 3
    assert [d.decision_id for d in back.decisions] == [d.decision_id for d in made]
    assert [e.event_id for e in back.events] == [f"{d.decision_id}:impression" for d in made]
    assert back.decisions[0].context == {"page": "home"} and back.decisions[0].item_ids == ("1", "2", "3")
    assert core.drain_outbox(back) == 0  # forwarded once
    core.forget_old_decisions()
    assert core.store.decision_by_request("r0") is None  # forwarded and old: gone
    core.close()


def test_a_database_made_before_migrations_is_stamped_and_upgraded(tmp_path) -> None:
    path = tmp_path / "policy.db"
    old = make_core(path)
    old.recommend("r1", "196", {}, 3, [])
    old.close()
    with make_engine(f"sqlite:///{path}").begin() as connection:  # back to what create_all used to make
        connection.execute(text("DROP INDEX ix_policy_decisions_forwarded"))
        connection.execute(text("ALTER TABLE policy_decisions DROP COLUMN forwarded"))
        connection.execute(text("DROP TABLE policy_alembic_version"))
        connection.execute(text("DROP TABLE policy_dead_letters"))
        connection.execute(text("DROP TABLE policy_promotions"))
        connection.execute(text("ALTER TABLE policy_outbox DROP COLUMN created_at"))
    upgraded = PolicyCore(PolicyStore(make_engine(f"sqlite:///{path}")), StandInRanker())
    assert [arm.arm_id for arm in upgraded.list_arms()] == ["popularity", "item_knn"]  # nothing lost
    # Its decisions went to the old outbox table when they were made: not sent a second time.
    assert upgraded.store.unforwarded_decisions(10) == []
    upgraded.recommend("r2", "196", {}, 3, [])
    assert [d.request_id for d in upgraded.store.unforwarded_decisions(10)] == ["r2"]
    upgraded.close()


def test_the_selection_distribution_is_estimated_once_per_belief_snapshot(tmp_path) -> None:
    core = make_core(tmp_path / "policy.db", belief_cache_seconds=3600.0, arms=("popularity", "item_knn", "als"))
    decisions = [core.recommend(f"r{n}", "196", {}, 3, []) for n in range(300)]
    propensities: dict[str, set[float]] = {}
    for decision in decisions:
        propensities.setdefault(decision.arm_id, set()).add(decision.propensity)
    assert all(len(values) == 1 for values in propensities.values())  # one estimate for the snapshot
    assert sum(next(iter(values)) for values in propensities.values()) == pytest.approx(1.0)
    share = {arm_id: sum(d.arm_id == arm_id for d in decisions) / 300 for arm_id in propensities}
    for arm_id, values in propensities.items():  # arms drawn with those probabilities (4 sigma)
        p = next(iter(values))
        assert abs(share[arm_id] - p) <= 4 * (p * (1 - p) / 300) ** 0.5 + 1e-9
    core.close()


def feedback_event(
    event_id: str, decision_id: str, kind: EventKind = EventKind.CLICK, item_id: str = "", at: float = 0.0
) -> FeedbackEvent:
    return FeedbackEvent(event_id, decision_id, "", "", item_id, kind, "", 1.0, at)


def test_a_feedback_group_is_answered_event_by_event() -> None:
    now = time.time()
    decisions = {
        "fresh": Decision("fresh", "r1", "u1", "knn", 0.5, 1000, (), False, "thompson", {}, now),
        "degraded": Decision("degraded", "r2", "u2", "pop", 1.0, 0, (), True, "thompson", {}, now, "late"),
        "old": Decision("old", "r3", "u3", "knn", 0.5, 1000, (), False, "thompson", {}, now - 100.0),
    }
    group = [
        feedback_event("e1", "fresh", item_id="50", at=now),
        feedback_event("e1", "fresh", at=now),  # the same event again, in the same group
        feedback_event("e0", "fresh", at=now),  # recorded by an earlier group
        feedback_event("e2", "missing", at=now),
        feedback_event("e3", "old", at=now),
        feedback_event("e4", "degraded", kind=EventKind.CONVERSION, at=now),
    ]
    changes = feedback.plan(group, decisions, {"e0"}, BanditSettings(reward_window_seconds=60.0), now)
    answers = [(type(o).__name__, getattr(o, "duplicate", None), str(o)) for o in changes.outcomes]
    assert answers[:3] == [
        ("FeedbackResult", False, "FeedbackResult(duplicate=False, arm_id='knn')"),
        ("FeedbackResult", True, "FeedbackResult(duplicate=True, arm_id='knn')"),
        ("FeedbackResult", True, "FeedbackResult(duplicate=True, arm_id='knn')"),
    ]
    assert str(changes.outcomes[3]) == "decision_id: no decision 'missing' (unknown, or older than the reward window)"
    assert str(changes.outcomes[4]) == "decision_id: decision 'old' is older than the reward window (60 s)"
    assert changes.outcomes[5] == FeedbackResult(False, "pop")
    assert changes.new_event_ids == [("e1", "fresh"), ("e4", "degraded")]
    assert changes.arm_counts == {"knn": ArmCounts(reward=1.0, clicks=1)}  # a degraded list counts for no arm
    assert [kind for kind, _ in changes.outbox] == ["event", "interaction", "event"]


def test_concurrent_feedback_is_counted_once_per_event_and_errors_stay_with_their_caller(tmp_path) -> None:
    core = make_core(tmp_path / "policy.db")
    decision = core.recommend("r1", "196", {}, 3, [])
    calls = [("same", decision.decision_id)] * 6 + [("other", decision.decision_id), ("lost", "no-such-decision")]
    answers: dict[int, Any] = {}
    start = threading.Barrier(len(calls))

    def send(index: int, event_id: str, decision_id: str) -> None:
        start.wait()
        try:
            answers[index] = core.record_feedback(event_id, decision_id, EventKind.CLICK, "", "", 1.0, None)
        except Exception as exc:
            answers[index] = exc

    threads = [threading.Thread(target=send, args=(n, *call)) for n, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers[n].duplicate for n in range(6)) == [False, True, True, True, True, True]
    assert answers[6] == FeedbackResult(False, decision.arm_id)
    assert str(answers[7]) == "decision_id: no decision 'no-such-decision' (unknown, or older than the reward window)"
    (arm,) = [arm for arm in core.list_arms() if arm.arm_id == decision.arm_id]
    assert arm.clicks == 2 and arm.reward == 2.0
    core.close()


class FlakyRanker(StandInRanker):
    """NOT ScoringService: unreachable while ``down``; counts the calls it gets."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0

    def rank(
        self, configuration: Configuration, user_id: str, history: Sequence[Any], k: int, deadline: float
    ) -> list[ScoredItem]:
        self.calls += 1
        if self.down:
            raise Unavailable("ScoringService answered UNAVAILABLE: connection refused")
        return super().rank(configuration, user_id, history, k, deadline)


def test_an_unreachable_scoring_is_not_called_again_until_a_probe_and_recovery_is_prompt(tmp_path) -> None:
    ranker = FlakyRanker()
    core = PolicyCore(PolicyStore(make_engine(f"sqlite:///{tmp_path / 'p.db'}")), ranker, seed=1)
    core.put_arm("pop", Configuration("popularity", {}), ArmOrigin.MANUAL, 0.5, ArmState.CHAMPION, "")
    core.chooser.breaker.probe_seconds = 0.2
    assert not core.recommend("r0", "u0", {}, 3, []).degraded
    ranker.down, calls = True, ranker.calls
    first = core.recommend("r1", "u1", {}, 3, [])
    assert first.degraded and ranker.calls == calls + 1  # no second call for the fallback
    assert first.degraded_reason.endswith("; served the last popularity list")  # the champion is popularity
    assert [i.item_id for i in first.items] == ["1", "2", "3"]
    for n in range(20):  # while the breaker is open, scoring is not called at all
        assert core.recommend(f"r-open-{n}", f"u{n}", {}, 3, []).degraded
    assert ranker.calls == calls + 1
    ranker.down = False
    time.sleep(0.25)  # the next request probes, finds scoring back, and closes the breaker
    assert not core.recommend("r2", "u2", {}, 3, []).degraded
    assert not core.recommend("r3", "u3", {}, 3, []).degraded
    core.close()


def states_of(core: PolicyCore) -> dict[str, tuple[str, float]]:
    return {arm.arm_id: (arm.state.value, arm.exposure_cap) for arm in core.list_arms()}


def test_rollback_walks_back_through_the_promotions(tmp_path) -> None:
    core = make_core(tmp_path / "policy.db", arms=("popularity", "item_knn", "als"))
    default_cap = core.settings().default_exposure_cap
    core.set_arm_state("item_knn", ArmState.CHAMPION, "better")
    core.set_arm_state("als", ArmState.CHAMPION, "better still")
    # The replaced champion competes again under the default cap, not the champion's whole share.
    assert states_of(core)["item_knn"] == ("active", default_cap)
    arm, replaced = core.rollback_champion("")
    assert (arm.arm_id, replaced, arm.state_reason) == ("item_knn", "als", "rolled back from als")
    arm, replaced = core.rollback_champion("the first was best")
    assert (arm.arm_id, replaced, arm.state_reason) == ("popularity", "item_knn", "the first was best")
    assert states_of(core) == {
        "popularity": ("champion", 1.0),
        "item_knn": ("active", default_cap),
        "als": ("active", default_cap),
    }
    with pytest.raises(FailedPrecondition, match="no promotion is recorded"):
        core.rollback_champion("")
    core.close()


def test_rollback_refuses_to_bring_back_a_retired_champion(tmp_path) -> None:
    core = make_core(tmp_path / "policy.db")
    core.set_arm_state("item_knn", ArmState.CHAMPION, "")
    core.set_arm_state("popularity", ArmState.RETIRED, "")
    with pytest.raises(FailedPrecondition, match="'popularity' is retired"):
        core.rollback_champion("")
    assert states_of(core)["item_knn"][0] == "champion"  # nothing changed
    core.close()
