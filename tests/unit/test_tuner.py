"""The tuner's domain: search space, random proposer, judging arms, the offline screen, settings."""

from __future__ import annotations

import math
import random

import pytest

from rectune.domain.arms import ArmOrigin, ArmState
from rectune.domain.configuration import Configuration, ParamValue
from rectune.domain.space import Hyperparameter, ParamType, SearchSpace, SpaceError, StrategySpace
from services.common.config import SettingsError, load_settings
from tuner.audit import AuditLog
from tuner.controller import (
    Action,
    ActionKind,
    ArmStats,
    ArmView,
    Plan,
    TunerLimits,
    free_slots,
    judge,
    screen_proposals,
)
from tuner.proposers import Observation, Proposal, RandomProposer, TpeProposer
from tuner.screen import SAME_CONFIGURATION, Rejected, Screen, ScreenRule, screened
from tuner.settings import TunerSettings
from tuner.space import narrowed

BOOL, CATEGORICAL, FLOAT, INT = ParamType.BOOL, ParamType.CATEGORICAL, ParamType.FLOAT, ParamType.INT


def number(value: ParamValue) -> float:
    """A numeric hyperparameter's value (a test fails here on a string or a bool)."""
    assert isinstance(value, int | float) and not isinstance(value, bool), value
    return float(value)


SPACE = SearchSpace(
    (
        StrategySpace(
            "als",
            hyperparameters=(
                Hyperparameter("factors", INT, 64, "", 8, 512, log_scale=True),
                Hyperparameter("regularization", FLOAT, 0.05, "", 1e-4, 10.0, log_scale=True),
            ),
        ),
        StrategySpace(
            "hybrid",
            hyperparameters=(
                Hyperparameter("mode", CATEGORICAL, "a", "", choices=("a", "b", "c")),
                Hyperparameter("explore", BOOL, False, ""),
            ),
        ),
    )
)


def test_samples_stay_in_their_declared_ranges_and_types() -> None:
    rng = random.Random(1)
    for _ in range(300):
        configuration = SPACE.sample(rng)
        params = configuration.params
        if configuration.strategy == "als":
            assert isinstance(params["factors"], int) and 8 <= number(params["factors"]) <= 512
            assert 1e-4 <= number(params["regularization"]) <= 10.0
        else:
            assert params["mode"] in ("a", "b", "c") and isinstance(params["explore"], bool)


def test_log_scale_parameters_are_sampled_log_uniformly() -> None:
    rng = random.Random(2)
    draws = [SPACE.strategies[0].hyperparameters[1].sample(rng) for _ in range(2000)]
    below_geometric_middle = sum(1 for d in draws if number(d) < math.sqrt(1e-4 * 10.0)) / len(draws)
    assert 0.45 < below_geometric_middle < 0.55


def test_narrowing_keeps_named_strategies_and_tighter_bounds() -> None:
    only_als = narrowed(SPACE, {"strategies": {"als": {"factors": {"low": 16, "high": 32}}}})
    assert only_als.names() == ["als"]
    factors = only_als.strategies[0].hyperparameters[0]
    assert (factors.low, factors.high) == (16.0, 32.0)
    hybrid = narrowed(SPACE, {"strategies": {"hybrid": {"mode": {"choices": ["b"]}}}})
    assert hybrid.strategies[0].hyperparameters[0].choices == ("b",)


@pytest.mark.parametrize(
    ("restriction", "message"),
    [
        ({}, "'strategies' must be a non-empty object"),
        ({"strategies": {"svd": {}}}, "strategies.svd: not a strategy of ScoringService (known: als, hybrid)"),
        ({"strategies": {"als": {"depth": {}}}}, "strategies.als.depth: not a hyperparameter of als"),
        (
            {"strategies": {"als": {"factors": {"low": 4}}}},
            "strategies.als.factors: must satisfy 8 <= low <= high <= 512 (the declared range), got low=4 high=512",
        ),
        ({"strategies": {"als": {"factors": {"low": "8"}}}}, "strategies.als.factors.low: must be a number"),
        ({"strategies": {"als": {"factors": {"step": 2}}}}, "only low and high narrow a int, got step"),
        ({"strategies": {"als": {"factors": {"low": 9.2, "high": 9.8}}}}, "no integer lies between"),
        ({"strategies": {"hybrid": {"mode": {"choices": ["z"]}}}}, "strategies.hybrid.mode.choices: ['z'] not among"),
        ({"strategies": {"hybrid": {"explore": {}}}}, "strategies.hybrid.explore: a bool cannot be narrowed"),
    ],
)
def test_a_bad_restriction_names_the_field_and_the_rule(restriction, message: str) -> None:
    with pytest.raises(SpaceError) as error:
        narrowed(SPACE, restriction)
    assert message in str(error.value)


def test_the_random_proposer_skips_taken_configurations() -> None:
    tiny = SearchSpace(
        (StrategySpace("hybrid", hyperparameters=(Hyperparameter("mode", CATEGORICAL, "a", "", choices=("a", "b")),)),)
    )
    taken = {Configuration("hybrid", {"mode": "a"}).key()}
    proposals = RandomProposer(seed=3).propose(tiny, 5, taken)
    assert [p.configuration.params for p in proposals] == [{"mode": "b"}]  # the space holds one more
    assert proposals[0].origin is ArmOrigin.TUNER_RANDOM


def arm(
    arm_id: str,
    origin: ArmOrigin = ArmOrigin.TUNER_RANDOM,
    state: ArmState = ArmState.ACTIVE,
    impressions: int = 0,
    p_best: float = 0.0,
) -> ArmView:
    return ArmView(
        arm_id, Configuration("als", {}), f"hash-{arm_id}", origin, state, ArmStats(impressions, 0.1, p_best)
    )


def test_judging_retires_ripe_losers_of_the_tuner_only_and_promotes_when_allowed() -> None:
    arms = [
        arm("champion", origin=ArmOrigin.CONTROL, state=ArmState.CHAMPION, impressions=5000, p_best=0.0),
        arm("manual-loser", origin=ArmOrigin.MANUAL, impressions=5000, p_best=0.0),
        arm("young-loser", impressions=10, p_best=0.0),
        arm("loser", impressions=5000, p_best=0.01),
        arm("winner", impressions=5000, p_best=0.97),
    ]
    assert [(a.kind, a.arm_id) for a in judge(arms, TunerLimits())] == [("retire", "loser")]
    promoting = TunerLimits(promote_probability_best=0.95)
    assert [(a.kind, a.arm_id) for a in judge(arms, promoting)] == [("retire", "loser"), ("promote", "winner")]


def test_free_slots_count_live_tuner_arms_minus_those_leaving() -> None:
    limits = TunerLimits(max_live_arms=3, max_new_arms_per_cycle=5)
    arms = [
        arm("a"),
        arm("b", state=ArmState.CANDIDATE),
        arm("c", state=ArmState.PAUSED),
        arm("m", origin=ArmOrigin.MANUAL),
    ]
    assert free_slots(arms, [], limits) == 1
    assert free_slots(arms, judge([arm("a", impressions=5000)], TunerLimits()), limits) == 2
    assert free_slots(arms, [], TunerLimits(max_live_arms=9, max_new_arms_per_cycle=2)) == 2


def test_the_screen_rejects_duplicates_and_configurations_below_the_bar() -> None:
    proposals = [
        Proposal(Configuration("als", {"factors": n}), ArmOrigin.TUNER_RANDOM, f"draw {n}") for n in (8, 9, 10, 11)
    ]
    screens = [
        Screen("h-existing", 0.30, 0.1),
        Screen("h1", 0.10, 0.1),
        Screen("h2", 0.25, 0.2),
        Screen("h2", 0.25, 0.2),
    ]
    registered, rejected = screen_proposals(
        proposals, screens, Screen("h-champion", 0.30, 0.2), {"h-existing"}, TunerLimits(), "cycle123456"
    )
    assert [(a.arm_id, a.exposure_cap) for a in registered] == [("als-cycle1-2", 0.2)]
    assert registered[0].reason == "draw 10; offline NDCG@10 0.2500 against 0.8 x champion's 0.3000, recall 0.2000"
    assert [r.reason for r in rejected] == [
        "same configuration as an existing arm or an earlier proposal",
        "offline NDCG@10 0.1000 against 0.8 x champion's 0.3000",
        "same configuration as an existing arm or an earlier proposal",
    ]


def test_with_a_paired_comparison_the_screen_needs_confidence_not_a_lucky_mean() -> None:
    proposals = [Proposal(Configuration("als", {"factors": n}), ArmOrigin.TUNER_TPE, "tpe") for n in (8, 9)]
    # Both means clear 0.8 x 0.30 = 0.24; only the first does so in 90% of the resamples.
    screens = [Screen("h1", 0.27, 0.1, probability_clears=0.97), Screen("h2", 0.25, 0.1, probability_clears=0.61)]
    registered, rejected = screen_proposals(
        proposals, screens, Screen("h-champion", 0.30, 0.2), set(), TunerLimits(), "cycle123456"
    )
    assert [a.arm_id for a in registered] == ["als-cycle1-0"]
    assert registered[0].reason == (
        "tpe; offline NDCG@10 0.2700 against 0.8 x champion's 0.3000: clears it in 97% of 1000 paired resamples "
        "of the holdout users (needs 90%), recall 0.1000"
    )
    assert [r.reason for r in rejected] == [
        "offline NDCG@10 0.2500 against 0.8 x champion's 0.3000: clears it in 61% of 1000 paired resamples "
        "of the holdout users (needs 90%)"
    ]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ([], "--policy-address (env RECTUNE_POLICY_ADDRESS) is required"),
        (
            ["--proposer=gpt"],
            "--proposer (env RECTUNE_TUNER_PROPOSER): must be one of random, tpe, lm, pool, sources, got 'gpt'",
        ),
        (["--lm-temperature=-1"], "--lm-temperature: must be >= 0, got -1.0"),
        (
            ["--screening=fast"],
            "--screening (env RECTUNE_TUNER_SCREENING): must be one of successive-halving, full, got 'fast'",
        ),
        (["--candidates-per-slot=0"], "--candidates-per-slot: must be >= 1, got 0"),
        (["--exposure-cap=1.5"], "--exposure-cap: must be in (0, 1], got 1.5"),
        (["--database-url=sqlite://"], "an in-memory SQLite database is not shared by threads"),
        (["--interval-seconds=0"], "--interval-seconds: must be > 0, got 0.0"),
    ],
)
def test_bad_settings_fail_fast_naming_the_flag(flags: list[str], message: str) -> None:
    addresses = [] if not flags else ["--policy-address=p:1", "--scoring-address=s:2", "--metrics-address=m:3"]
    with pytest.raises(SettingsError) as error:
        load_settings(TunerSettings, [*addresses, *flags], environ={})
    assert message in str(error.value)


def test_tpe_moves_towards_configurations_that_scored_well() -> None:
    rng = random.Random(4)
    history = []
    for _ in range(40):
        configuration = SPACE.sample(rng)
        # Only als with few factors scores well: TPE should mostly propose that region.
        good = configuration.strategy == "als" and number(configuration.params["factors"]) <= 32
        history.append(Observation(configuration, 0.3 if good else 0.05))
    proposals = TpeProposer(seed=1).propose(SPACE, 10, set(), history)
    assert len(proposals) == 10 and proposals[0].origin is ArmOrigin.TUNER_TPE
    assert proposals[0].rationale == "TPE fitted to 40 screened configurations, best NDCG 0.3000"
    near_best = [
        p for p in proposals if p.configuration.strategy == "als" and number(p.configuration.params["factors"]) <= 32
    ]
    assert len(near_best) >= 6  # uniform draws land there about 1 time in 8


def test_tpe_ignores_history_outside_todays_space_and_stays_inside_it() -> None:
    high_factors = narrowed(SPACE, {"strategies": {"als": {"factors": {"low": 100, "high": 200}}}})
    history = [Observation(Configuration("als", {"factors": 16, "regularization": 0.1}), 0.5)]
    history.append(Observation(Configuration("hybrid", {"mode": "a", "explore": True}), 0.4))
    proposals = TpeProposer(seed=2).propose(high_factors, 5, set(), history)
    assert proposals[0].rationale.startswith("TPE fitted to 0 screened configurations")
    assert all(100 <= number(p.configuration.params["factors"]) <= 200 for p in proposals)
    assert len({p.configuration.key() for p in proposals}) == 5


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--lm-endpoint=vllm:8000"], "--lm-endpoint (env RECTUNE_TUNER_LM_ENDPOINT): must be an http(s) URL"),
        (["--lm-endpoint=http://vllm:8000/v1"], "--lm-model (env RECTUNE_TUNER_LM_MODEL): required with --lm-endpoint"),
    ],
)
def test_endpoint_settings_fail_fast(flags: list[str], message: str) -> None:
    addresses = ["--policy-address=p:1", "--scoring-address=s:2", "--metrics-address=m:3"]
    with pytest.raises(SettingsError) as error:
        load_settings(TunerSettings, [*addresses, *flags], environ={})
    assert message in str(error.value)


def screened_plan(cycle_id: str, registered: Configuration, rejected: Configuration) -> Plan:
    """A plan that registers one screened configuration, rejects another and retires an arm."""
    plan = Plan(cycle_id, 0.0)
    plan.actions = [
        Action(ActionKind.REGISTER, f"{cycle_id}-arm", "screened", ArmOrigin.TUNER_RANDOM, registered, 0.2),
        Action(ActionKind.RETIRE, "old-arm", "P(best) too low"),
    ]
    plan.rejected = [Rejected(Proposal(rejected, ArmOrigin.TUNER_RANDOM, "a guess"), f"{cycle_id}-h2", "below the bar")]
    plan.screens = {
        registered.key(): Screen(f"{cycle_id}-h1", 0.15, 0.2),
        rejected.key(): Screen(f"{cycle_id}-h2", 0.05, 0.1),
    }
    return plan


def test_the_audit_log_reads_only_new_screens_and_sees_other_writers(tmp_path) -> None:
    # A real SQLite file; a second AuditLog on it stands for rows written by another process.
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    audit, other = AuditLog.open(url), AuditLog.open(url)
    first, second, third = (Configuration("als", {"factors": n}) for n in (8, 16, 32))
    assert audit.observations() == []
    audit.record(screened_plan("c1", first, second), dry_run=True)
    assert audit.observations() == [Observation(first, 0.15), Observation(second, 0.05)]
    other.record(screened_plan("c2", third, first), dry_run=False)
    assert audit.observations() == [
        Observation(first, 0.15),
        Observation(second, 0.05),
        Observation(third, 0.15),
        Observation(first, 0.05),
    ]
    assert audit.observations() == other.observations()  # read whole by a fresh reader too


def test_the_language_model_is_told_the_k_the_screen_measures() -> None:
    from tuner.lm_proposer import SYSTEM, describe

    history = [Observation(Configuration("als", {"factors": 16, "regularization": 0.1}), 0.5)]
    assert "best first (NDCG@5, higher is better)" in describe(SPACE, history, k=5)
    assert "higher NDCG@20 than" in SYSTEM.format(k=20)


def test_the_screen_passes_a_proposal_exactly_at_the_bar_and_not_below_it() -> None:
    rule = ScreenRule(k=5, min_ndcg_ratio=0.5, confidence=0.75)
    champion = Screen("h-champion", 0.40, 0.3)
    proposals = [Proposal(Configuration("als", {"factors": n}), ArmOrigin.TUNER_TPE, f"p{n}") for n in range(4)]
    screens = [
        Screen("at-mean-bar", 0.20, 0.1),  # 0.5 x 0.40 exactly: passes
        Screen("below-mean-bar", 0.1999, 0.1),
        Screen("at-confidence", 0.10, 0.1, probability_clears=0.75),  # the resamples decide, not the mean
        Screen("below-confidence", 0.39, 0.1, probability_clears=0.7499),
    ]
    passed, rejected = screened(proposals, screens, champion, set(), rule)
    assert [(p.index, p.proposal.rationale) for p in passed] == [(0, "p0"), (2, "p2")]
    assert passed[0].reason == "p0; offline NDCG@5 0.2000 against 0.5 x champion's 0.4000, recall 0.1000"
    assert passed[1].reason == (
        "p2; offline NDCG@5 0.1000 against 0.5 x champion's 0.4000: clears it in 75% of 1000 paired resamples "
        "of the holdout users (needs 75%), recall 0.1000"
    )
    assert [(r.configuration_hash, r.reason) for r in rejected] == [
        ("below-mean-bar", "offline NDCG@5 0.1999 against 0.5 x champion's 0.4000"),
        (
            "below-confidence",
            "offline NDCG@5 0.3900 against 0.5 x champion's 0.4000: clears it in 75% of 1000 paired resamples "
            "of the holdout users (needs 75%)",
        ),
    ]
    assert rejected[0].proposal is proposals[1] and rejected[1].proposal is proposals[3]


def test_the_screen_refuses_a_live_configuration_and_a_repeat_within_the_cycle_before_reading_numbers() -> None:
    rule = TunerLimits().screen_rule()
    assert rule == ScreenRule(k=10, min_ndcg_ratio=0.8, confidence=0.9)
    proposals = [Proposal(Configuration("als", {"factors": n}), ArmOrigin.TUNER_TPE, "p") for n in range(3)]
    screens = [Screen("live", 0.9, 0.5), Screen("new", 0.9, 0.5), Screen("new", 0.9, 0.5)]
    passed, rejected = screened(proposals, screens, Screen("c", 0.1, 0.1), {"live"}, rule)
    assert [p.index for p in passed] == [1]
    assert [(r.configuration_hash, r.reason) for r in rejected] == [
        ("live", SAME_CONFIGURATION),
        ("new", SAME_CONFIGURATION),
    ]
    assert SAME_CONFIGURATION == "same configuration as an existing arm or an earlier proposal"
