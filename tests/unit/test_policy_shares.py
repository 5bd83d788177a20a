"""Exposure caps, the champion's minimum share and discounting, where they act: PolicyCore on a
real SQLite file choosing arms over many requests, under each algorithm.

The bandit's pure functions are tested in test_bandits.py; these tests check that the policy
hands them each arm's own cap, the stored champion_min_share and beliefs decayed per decision.
Expected values are computed here from the rules as the docs state them, not with the
policy's own helpers. StandInRanker is NOT ScoringService (see test_policy_core.py).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import Any

import pytest

from rectune.domain.arms import ArmOrigin, ArmState
from rectune.domain.configuration import Configuration
from rectune.domain.events import Decision, EventKind
from services.common.storage import make_engine
from services.policy.core.model import ArmCounts
from services.policy.core.service import PolicyCore
from services.policy.core.store import PolicyStore
from tests.unit.test_policy_core import StandInRanker

ALGORITHMS = ["thompson", "discounted_thompson", "ucb1", "epsilon_greedy"]
DECISIONS = 200


def policy(tmp_path, settings: dict[str, Any], caps: dict[str, float]) -> PolicyCore:
    """A policy whose first arm is the champion; every arm has its own exposure cap."""
    core = PolicyCore(
        PolicyStore(make_engine(f"sqlite:///{tmp_path / 'policy.db'}")),
        StandInRanker(),
        seed=11,
        belief_cache_seconds=0.0,
    )
    core.update_settings(settings)
    for index, (arm_id, cap) in enumerate(caps.items()):
        state = ArmState.CHAMPION if index == 0 else ArmState.ACTIVE
        core.put_arm(arm_id, Configuration(arm_id, {}), ArmOrigin.MANUAL, cap, state, "")
    return core


def give_evidence(core: PolicyCore, evidence: dict[str, tuple[float, float]]) -> None:
    """Past impressions and rewards per arm, as if earlier traffic had brought them."""
    with core.store.unit_of_work() as work:
        for arm_id, (impressions, reward) in evidence.items():
            work.add_to_arm(arm_id, 0, ArmCounts(impressions=impressions, reward=reward), None)


def shares(decisions: list[Decision]) -> dict[str, float]:
    counted = Counter(decision.arm_id for decision in decisions)
    return {arm_id: count / len(decisions) for arm_id, count in counted.items()}


def within_sampling_error(observed: float, expected: float, n: int) -> bool:
    """Five standard errors of a share drawn n times (a false alarm about once in 3 million runs)."""
    return abs(observed - expected) <= 5 * math.sqrt(expected * (1 - expected) / n) + 1e-9


# One arm is far better than the rest, so every algorithm wants it nearly all the time.
EVIDENCE = {"control": (1000.0, 10.0), "good": (1000.0, 300.0), "other": (1000.0, 10.0)}


def traffic_under(tmp_path, algorithm: str, champion_min_share: float, caps: dict[str, float]) -> list[Decision]:
    """DECISIONS requests to a policy whose arms have EVIDENCE, under ``algorithm``."""
    settings = {"algorithm": algorithm, "discount": 0.99999, "champion_min_share": champion_min_share}
    core = policy(tmp_path, settings, caps)
    give_evidence(core, EVIDENCE)
    decisions = [core.recommend(f"r{n}", f"u{n % 50}", {}, 3, []) for n in range(DECISIONS)]
    core.close()
    return decisions


def propensities_of(decisions: list[Decision], arm_id: str) -> set[float]:
    return {round(d.propensity, 9) for d in decisions if d.arm_id == arm_id}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_an_arms_own_exposure_cap_binds_under_every_algorithm(tmp_path, algorithm: str) -> None:
    decisions = traffic_under(tmp_path, algorithm, 0.0, {"control": 1.0, "good": 0.1, "other": 0.3})
    # Every logged propensity of the capped arm is its cap: the algorithm wanted more.
    assert propensities_of(decisions, "good") == {0.1}
    observed = shares(decisions)
    assert within_sampling_error(observed["good"], 0.1, DECISIONS), observed
    assert observed["other"] <= 0.3 + 5 * math.sqrt(0.3 * 0.7 / DECISIONS), observed


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_the_champions_minimum_share_from_the_settings_binds_under_every_algorithm(tmp_path, algorithm: str) -> None:
    decisions = traffic_under(tmp_path, algorithm, 0.6, {"control": 1.0, "good": 1.0, "other": 1.0})
    # The champion is the worst arm: it gets its minimum share and no more.
    assert propensities_of(decisions, "control") == {0.6}
    assert within_sampling_error(shares(decisions)["control"], 0.6, DECISIONS)


def test_caps_and_the_champions_share_together_leave_the_rest_to_the_uncapped_arms(tmp_path) -> None:
    """good wants everything, is held to 0.1; the champion's 0.5 is its floor; other takes the rest."""
    core = policy(
        tmp_path,
        {"algorithm": "ucb1", "champion_min_share": 0.5},
        {"control": 1.0, "good": 0.1, "other": 1.0},
    )
    give_evidence(core, EVIDENCE)
    decision = core.recommend("r0", "u0", {}, 3, [])
    expected = {"control": 0.5, "good": 0.1, "other": 0.4}
    assert decision.propensity == pytest.approx(expected[decision.arm_id], abs=1e-9)
    core.close()


def expected_beliefs(
    events: list[tuple[str, str, int]], now: int, factor: float
) -> tuple[dict[str, float], dict[str, float]]:
    """Impressions and rewards as the docs define discounting: each decision and each click
    counts factor ** (decisions made since it happened)."""
    impressions: dict[str, float] = {}
    rewards: dict[str, float] = {}
    for kind, arm_id, step in events:
        into = impressions if kind == "decision" else rewards
        into[arm_id] = into.get(arm_id, 0.0) + factor ** (now - step)
    return impressions, rewards


def run_traffic(core: PolicyCore, rates: list[dict[str, float]], per_phase: int, seed: int) -> list[Any]:
    """Requests in phases, a click after each decision with its arm's rate in that phase;
    returns what happened (kind, arm, the decision count when it happened) and the decisions."""
    clicks = random.Random(seed)
    events: list[tuple[str, str, int]] = []
    decisions: list[Decision] = []
    for phase, rate in enumerate(rates):
        for n in range(per_phase):
            decision = core.recommend(f"p{phase}-r{n}", f"u{n % 40}", {}, 3, [])
            decisions.append(decision)
            events.append(("decision", decision.arm_id, len(decisions)))
            if clicks.random() < rate[decision.arm_id]:
                core.record_feedback(
                    f"c-{decision.decision_id}", decision.decision_id, EventKind.CLICK, "", "", 1, None
                )
                events.append(("click", decision.arm_id, len(decisions)))
    return [events, decisions]


def test_discounted_thompson_keeps_beliefs_decayed_per_decision(tmp_path) -> None:
    factor = 0.97
    core = policy(
        tmp_path,
        {"algorithm": "discounted_thompson", "discount": factor, "champion_min_share": 0.0},
        {"a": 1.0, "b": 1.0},
    )
    events, decisions = run_traffic(core, [{"a": 0.5, "b": 0.1}, {"a": 0.1, "b": 0.5}], 150, seed=5)
    now = len(decisions)
    impressions, rewards = expected_beliefs(events, now, factor)
    for arm in core.list_arms():
        brought_to_now = factor ** (now - arm.step)  # stored as of the arm's last change
        assert arm.impressions * brought_to_now == pytest.approx(impressions.get(arm.arm_id, 0.0), rel=1e-9)
        assert arm.reward * brought_to_now == pytest.approx(rewards.get(arm.arm_id, 0.0), rel=1e-9)
        assert arm.clicks == sum(1 for kind, arm_id, _ in events if kind == "click" and arm_id == arm.arm_id)
    core.close()


def share_of_b_after_the_change(tmp_path, algorithm: str) -> float:
    core = policy(
        tmp_path,
        {"algorithm": algorithm, "discount": 0.98, "champion_min_share": 0.0},
        {"a": 1.0, "b": 1.0},
    )
    give_evidence(core, {"a": (500.0, 300.0), "b": (500.0, 100.0)})  # a was better for a long time
    _, decisions = run_traffic(core, [{"a": 0.05, "b": 0.6}], 300, seed=2)
    core.close()
    return shares(decisions[-100:]).get("b", 0.0)


def test_discounted_thompson_follows_a_change_of_rewards_that_plain_thompson_is_slow_to_see(tmp_path) -> None:
    """a was best over 1,000 decisions, then b is: by the last 100 of the next 300 decisions
    discounted Thompson sampling sends most traffic to b, while plain Thompson sampling still
    trusts a's past."""
    (tmp_path / "discounted").mkdir()
    (tmp_path / "plain").mkdir()
    discounted = share_of_b_after_the_change(tmp_path / "discounted", "discounted_thompson")
    plain = share_of_b_after_the_change(tmp_path / "plain", "thompson")
    assert discounted > 0.8, discounted
    assert plain < 0.2, plain
