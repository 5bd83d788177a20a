"""PolicyCore's rules word for word on a real SQLite file: arm states and their refusals,
promotions and rollbacks, the degraded answers when scoring fails, and the exact selection
distributions of UCB1 and epsilon-greedy computed from their formulas.

The rankers here are NOT ScoringService (see test_policy_core.py): a fixed list, or failures
on cue, so that only the policy's own code is under test."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from rectune.domain.arms import ArmOrigin, ArmState
from rectune.domain.configuration import Configuration
from rectune.domain.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Relayed, Unavailable
from rectune.domain.events import EventKind, Interaction, ScoredItem
from services.common.storage import make_engine
from services.policy.core.bandits import ArmBelief, EpsilonGreedy, ThompsonSampling, Ucb1, apply_caps
from services.policy.core.model import ArmCounts
from services.policy.core.service import PolicyCore
from services.policy.core.store import PolicyStore
from tests.unit.test_policy_core import StandInRanker, make_core


def message(call: Any, *args: Any) -> str:
    with pytest.raises((NotFound, FailedPrecondition, InvalidArgument)) as error:
        call(*args)
    return str(error.value)


# -- arm states ------------------------------------------------------------------------------------


def test_state_changes_are_refused_by_rule_word_for_word(tmp_path) -> None:
    core = make_core(tmp_path / "policy.db", arms=("popularity", "item_knn", "als"))
    assert message(core.set_arm_state, "zz", ArmState.PAUSED, "") == "arm_id: no arm 'zz'"
    with pytest.raises(NotFound) as unknown:
        core.set_arm_state("zz", ArmState.PAUSED, "")
    assert (unknown.value.field, unknown.value.code) == ("arm_id", "NOT_FOUND")
    assert message(core.set_arm_state, "popularity", ArmState.PAUSED, "") == (
        "arm_id: arm 'popularity' is the champion; promote another arm first"
    )
    core.set_arm_state("als", ArmState.RETIRED, "")
    assert message(core.set_arm_state, "als", ArmState.ACTIVE, "") == "arm_id: arm 'als' is retired, which is final"
    again = core.set_arm_state("als", ArmState.RETIRED, "still retired")  # retiring twice is allowed
    assert (again.state, again.state_reason) == (ArmState.RETIRED, "still retired")
    core.close()


def test_a_state_change_says_why_and_when(tmp_path) -> None:
    core = make_core(tmp_path / "policy.db")
    before = {arm.arm_id: arm for arm in core.list_arms()}["item_knn"]
    time.sleep(0.01)
    paused = core.set_arm_state("item_knn", ArmState.PAUSED, "")
    assert (paused.state, paused.state_reason) == (ArmState.PAUSED, "set to paused")  # the default reason
    assert paused.updated_at > before.updated_at and paused.created_at == before.created_at
    stored = {arm.arm_id: arm for arm in core.list_arms()}["item_knn"]
    assert (stored.state, stored.state_reason, stored.updated_at) == (
        ArmState.PAUSED,
        "set to paused",
        paused.updated_at,
    )
    assert [arm.arm_id for arm in core.list_arms([ArmState.PAUSED])] == ["item_knn"]
    assert [arm.arm_id for arm in core.list_arms([ArmState.CHAMPION, ArmState.ACTIVE])] == ["popularity"]
    assert [arm.arm_id for arm in core.list_arms()] == ["popularity", "item_knn"]
    core.close()


def test_a_promotion_replaces_the_champion_and_is_recorded_for_rollback(tmp_path) -> None:
    core = make_core(tmp_path / "policy.db", arms=("popularity", "item_knn"))
    core.update_settings({"default_exposure_cap": 0.3})
    crowned = core.set_arm_state("item_knn", ArmState.CHAMPION, "it won")
    assert (crowned.state, crowned.exposure_cap, crowned.state_reason) == (ArmState.CHAMPION, 1.0, "it won")
    arms = {arm.arm_id: arm for arm in core.list_arms()}
    assert (arms["popularity"].state, arms["popularity"].exposure_cap) == (ArmState.ACTIVE, 0.3)
    assert arms["popularity"].state_reason == "replaced by item_knn"
    assert arms["popularity"].updated_at == pytest.approx(crowned.updated_at, abs=5)
    with core.store.unit_of_work() as work:
        promotion = work.last_promotion()
    assert promotion is not None
    assert (promotion.arm_id, promotion.previous_arm_id, promotion.reason) == ("item_knn", "popularity", "it won")
    restored, replaced = core.rollback_champion("")
    assert (restored.arm_id, replaced, restored.state_reason) == ("popularity", "item_knn", "rolled back from item_knn")
    assert (restored.state, restored.exposure_cap) == (ArmState.CHAMPION, 1.0)
    assert {arm.arm_id: arm.state for arm in core.list_arms()} == {
        "popularity": ArmState.CHAMPION,
        "item_knn": ArmState.ACTIVE,
    }
    assert message(core.rollback_champion, "") == (
        "champion: no promotion is recorded, so there is no previous champion to put back"
    )
    core.close()


def test_registration_rules(tmp_path) -> None:
    core = make_core(tmp_path / "policy.db", arms=("popularity",))
    put = core.put_arm
    assert message(put, "x", Configuration("x", {}), ArmOrigin.MANUAL, 1.5, ArmState.ACTIVE, "") == (
        "exposure_cap: must be in (0, 1], got 1.5"
    )
    assert message(put, "x", Configuration("x", {}), ArmOrigin.MANUAL, 0.5, ArmState.PAUSED, "") == (
        "initial_state: must be CANDIDATE, ACTIVE or CHAMPION"
    )
    with pytest.raises(Exception, match="equals the configuration of arm 'popularity'"):
        put("again", Configuration("popularity", {}), ArmOrigin.MANUAL, 0.5, ArmState.ACTIVE, "")
    arm = put("", Configuration("als", {}), ArmOrigin.TUNER_TPE, 0.0, ArmState.CANDIDATE, "")
    assert arm.arm_id.startswith("arm-") and len(arm.arm_id) == 12
    assert (arm.exposure_cap, arm.state_reason) == (core.settings().default_exposure_cap, "registered (tuner-tpe)")
    core.close()


# -- degraded answers --------------------------------------------------------------------------------


class ScriptedRanker(StandInRanker):
    """NOT ScoringService: answers, or fails as told, per configuration; records the calls."""

    def __init__(self) -> None:
        self.failures: dict[str, Exception] = {}
        self.calls: list[tuple[str, str, int, float]] = []

    def rank(
        self, configuration: Configuration, user_id: str, history: Sequence[Any], k: int, deadline: float
    ) -> list[ScoredItem]:
        self.calls.append((configuration.strategy, user_id, k, deadline))
        failure = self.failures.get(configuration.strategy)
        if failure is not None:
            raise failure
        return [ScoredItem(f"{configuration.strategy}-{rank}", 1.0, 0.5, rank) for rank in range(1, k + 1)]


def scripted_core(tmp_path, champion: str) -> tuple[PolicyCore, ScriptedRanker]:
    ranker = ScriptedRanker()
    core = PolicyCore(PolicyStore(make_engine(f"sqlite:///{tmp_path / 'p.db'}")), ranker, seed=1)
    core.put_arm("champion", Configuration(champion, {}), ArmOrigin.MANUAL, 0.5, ArmState.CHAMPION, "")
    return core, ranker


def test_an_arm_that_fails_is_answered_with_popularity_from_scoring(tmp_path) -> None:
    core, ranker = scripted_core(tmp_path, "als")
    ranker.failures["als"] = Relayed("FAILED_PRECONDITION", "configuration: not fitted")
    decision = core.recommend("r1", "u1", {}, 3, [])
    assert decision.degraded and [item.item_id for item in decision.items] == [
        "popularity-1",
        "popularity-2",
        "popularity-3",
    ]
    assert decision.degraded_reason == "scoring failed for arm champion: configuration: not fitted; served popularity"
    deadline = core.settings().scoring_deadline_seconds
    assert ranker.calls == [("als", "u1", 3, deadline), ("popularity", "u1", 3, deadline)]
    core.close()


def test_when_popularity_fails_too_the_last_popularity_list_or_nothing_is_served(tmp_path) -> None:
    core, ranker = scripted_core(tmp_path, "als")
    ranker.failures["als"] = ValueError("broken")
    ranker.failures["popularity"] = KeyError("gone")
    nothing = core.recommend("r1", "u1", {}, 2, [])
    assert (nothing.degraded, nothing.items) == (True, ())
    assert nothing.degraded_reason == (
        "scoring failed for arm champion: ValueError: broken; popularity fallback failed too: KeyError: 'gone'; "
        "no list to fall back on"
    )
    del ranker.failures["popularity"]
    core.recommend("r2", "u2", {}, 4, [])  # popularity answers once: its list is kept
    ranker.failures["popularity"] = KeyError("gone")
    last = core.recommend("r3", "u3", {}, 2, [])
    assert [item.item_id for item in last.items] == ["popularity-1", "popularity-2"]
    assert last.degraded_reason.endswith("; served the last popularity list")
    core.close()


def test_the_champions_last_list_for_the_user_comes_first(tmp_path) -> None:
    core, ranker = scripted_core(tmp_path, "als")
    served = core.recommend("r1", "u1", {}, 3, [])
    assert not served.degraded
    ranker.failures["als"] = ValueError("broken")
    again = core.recommend("r2", "u1", {}, 2, [])
    assert [item.item_id for item in again.items] == ["als-1", "als-2"]
    assert (
        again.degraded_reason
        == "scoring failed for arm champion: ValueError: broken; served the champion's last list for this user"
    )
    other = core.recommend("r3", "u2", {}, 2, [])  # another user has no last list: popularity
    assert other.degraded_reason.endswith("; served popularity")
    core.close()


def test_scoring_unreachable_degrades_without_a_second_call(tmp_path) -> None:
    core, ranker = scripted_core(tmp_path, "als")
    ranker.failures["als"] = Unavailable("ScoringService answered UNAVAILABLE: down")
    decision = core.recommend("r1", "u1", {}, 2, [])
    assert decision.degraded_reason == (
        "scoring failed for arm champion: ScoringService answered UNAVAILABLE: down; no list to fall back on"
    )
    assert [call[0] for call in ranker.calls] == ["als"]
    core.close()


# -- selection distributions, from the formulas ------------------------------------------------------


def belief(arm_id: str, impressions: float, reward: float, cap: float = 1.0) -> ArmBelief:
    return ArmBelief(arm_id, impressions, reward, cap)


def test_ucb1_plays_every_arm_first_then_the_highest_upper_bound() -> None:
    rng = np.random.default_rng(0)
    fresh = [belief("a", 1, 1), belief("b", 0, 0), belief("c", 0, 0)]
    p, samples = Ucb1(1.0).distribution(fresh, rng)
    assert (p.tolist(), samples) == ([0.0, 0.5, 0.5], 0)
    # a: 0.5 + sqrt(2 ln 110 / 100) = 0.8067; b: 0.3 + sqrt(2 ln 110 / 10) = 1.2698: b.
    arms = [belief("a", 100, 50), belief("b", 10, 3)]
    bounds = [0.5 + math.sqrt(2 * math.log(110) / 100), 0.3 + math.sqrt(2 * math.log(110) / 10)]
    assert bounds[1] > bounds[0]
    p, samples = Ucb1(1.0).distribution(arms, rng)
    assert (p.tolist(), samples) == ([0.0, 1.0], 0)
    # With c small enough the better mean wins: 0.5 + 0.1 * 0.307 > 0.3 + 0.1 * 0.97.
    assert Ucb1(0.1).distribution(arms, rng)[0].tolist() == [1.0, 0.0]
    tied = [belief("a", 10, 5), belief("b", 10, 5)]
    assert Ucb1(1.0).distribution(tied, rng)[0].tolist() == [0.5, 0.5]


def test_epsilon_greedy_spreads_epsilon_and_splits_the_rest_among_the_best() -> None:
    rng = np.random.default_rng(0)
    arms = [belief("a", 10, 5), belief("b", 10, 5), belief("c", 10, 1)]
    p, samples = EpsilonGreedy(0.3).distribution(arms, rng)
    assert samples == 0 and p.tolist() == pytest.approx([0.1 + 0.35, 0.1 + 0.35, 0.1])


def test_thompson_samples_and_the_prior_is_the_pooled_rate() -> None:
    rng = np.random.default_rng(0)
    p, samples = ThompsonSampling(samples=4000).distribution([belief("a", 0, 0), belief("b", 0, 0)], rng)
    assert samples == 4000 and p.sum() == pytest.approx(1.0) and abs(p[0] - 0.5) < 0.05
    # Evidence of 1,000 impressions each at 10% and 20%: b is best in every draw.
    clear = ThompsonSampling(samples=1000).distribution([belief("a", 1000, 100), belief("b", 1000, 200)], rng)[0]
    assert clear.tolist() == [0.0, 1.0]


def test_caps_hand_the_excess_to_the_others_in_proportion_or_evenly() -> None:
    arms = [belief("a", 0, 0, cap=0.2), belief("b", 0, 0, cap=1.0), belief("c", 0, 0, cap=1.0)]
    assert apply_caps(np.array([0.8, 0.15, 0.05]), arms, 0.0).tolist() == pytest.approx([0.2, 0.6, 0.2])
    assert apply_caps(np.array([1.0, 0.0, 0.0]), arms, 0.0).tolist() == pytest.approx([0.2, 0.4, 0.4])


def test_a_request_id_is_a_retry_only_for_the_same_user_and_context(tmp_path) -> None:
    core = make_core(tmp_path / "policy.db")
    first = core.recommend("r1", "196", {"page": "home"}, 3, [])
    assert core.recommend("r1", "196", {"page": "home"}, 3, []) == first  # a retry: the same decision
    with pytest.raises(AlreadyExists) as other_user:
        core.recommend("r1", "197", {"page": "home"}, 3, [])
    assert str(other_user.value) == "request_id: was used before for a request with another user_id"
    with pytest.raises(AlreadyExists) as other_context:
        core.recommend("r1", "196", {"page": "cart"}, 3, [])
    assert str(other_context.value) == "request_id: was used before for a request with another context"
    assert core.store.decision_by_request("r1") == first
    assert core.store.decision_by_request("r2") is None
    core.close()


def test_bad_requests_are_refused_by_field_and_rule(tmp_path) -> None:
    core = make_core(tmp_path / "policy.db")
    decision = core.recommend("r1", "196", {}, 3, [])
    feedback = core.record_feedback
    long = "x" * 129
    cases = [
        (
            ("", decision.decision_id, EventKind.CLICK, "", "", 1.0, None),
            "event_id: must not be empty (it makes feedback idempotent)",
        ),
        ((long, decision.decision_id, EventKind.CLICK, "", "", 1.0, None), "event_id: at most 128 characters, got 129"),
        (("e", long, EventKind.CLICK, "", "", 1.0, None), "decision_id: at most 128 characters, got 129"),
        (("e", decision.decision_id, EventKind.CLICK, "", long, 1.0, None), "item_id: at most 128 characters, got 129"),
        (
            ("e", decision.decision_id, None, "", "", 1.0, None),
            "kind: must be one of impression, click, conversion, rating, custom",
        ),
        (("e", decision.decision_id, EventKind.CUSTOM, "", "", 1.0, None), "custom_name: must not be empty"),
        (
            ("e", decision.decision_id, EventKind.CLICK, long, "", 1.0, None),
            "custom_name: at most 128 characters, got 129",
        ),
        (
            ("e", decision.decision_id, EventKind.CLICK, "", "", math.inf, None),
            "value: must be a finite number, got inf",
        ),
        (
            ("e", decision.decision_id, EventKind.CLICK, "", "", 1.0, -1.0),
            "time: must not be before 1970 (unix seconds), got -1",
        ),
    ]
    for args, expected in cases:
        with pytest.raises(InvalidArgument) as error:
            feedback(*args)
        assert str(error.value) == expected
    recommend = core.recommend
    requests: list[tuple[tuple[str, str, dict[str, str], int, list[Any]], str]] = [
        (("", "196", {}, 3, []), "request_id: must not be empty (it makes retries return the same decision)"),
        ((long, "196", {}, 3, []), "request_id: at most 128 characters, got 129"),
        (("r2", long, {}, 3, []), "user_id: at most 128 characters, got 129"),
        (("r2", "196", {"": "x"}, 3, []), "context key: must not be empty"),
        (("r2", "196", {}, 0, []), "k: must be between 1 and 1000, got 0"),
        (("r2", "196", {}, 1001, []), "k: must be between 1 and 1000, got 1001"),
        (("r2", "", {}, 3, []), "user_id: must be set, or history given for a cold user"),
        (
            ("r2", "", {}, 3, [Interaction("", "1", 1.0, 1_000_000.0)] * 10_001),
            "history: at most 10,000 entries per request, got 10,001",
        ),
    ]
    for request, expected in requests:
        with pytest.raises(InvalidArgument) as error:
            recommend(*request)
        assert str(error.value) == expected
    # The app's impression of a decision is the decision's own impression: counted once.
    counted = {arm.arm_id: arm.impressions for arm in core.list_arms()}
    for event_id in ("app-impression-1", "app-impression-2"):
        feedback(event_id, decision.decision_id, EventKind.IMPRESSION, "", "", 0.0, None)
    assert {arm.arm_id: arm.impressions for arm in core.list_arms()} == counted
    core.close()


def test_changes_show_at_once_even_while_the_request_path_reuses_its_snapshot(tmp_path) -> None:
    """The request path may reuse the arms for belief_cache_seconds; listing, state changes,
    rollbacks and guardrails read them fresh."""
    core = make_core(tmp_path / "policy.db", belief_cache_seconds=3600.0, arms=("popularity", "item_knn", "als"))
    core.recommend("r1", "196", {}, 3, [])  # the request path caches its snapshot now
    core.set_arm_state("als", ArmState.PAUSED, "")
    assert {arm.arm_id: arm.state for arm in core.list_arms()}["als"] is ArmState.PAUSED
    core.set_arm_state("item_knn", ArmState.CHAMPION, "")
    assert core.arms.snapshot().arms[1].state is ArmState.CHAMPION  # the cached snapshot was renewed
    core.rollback_champion("")
    assert core.arms.snapshot().arms[0].state is ArmState.CHAMPION
    with core.store.unit_of_work() as work:
        work.add_to_arm("item_knn", 0, ArmCounts(impressions=5000.0, reward=0.0), None)
        work.add_to_arm("popularity", 0, ArmCounts(impressions=5000.0, reward=500.0), None)
    assert [arm.arm_id for arm in core.check_guardrails()] == ["item_knn"]  # it saw the new counts
    core.close()
