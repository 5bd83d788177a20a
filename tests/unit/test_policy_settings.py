"""The bandit's settings: every rule of BanditSettings.check at its edges, word for word, and
settings changes through PolicyCore (stored, and refused without a partial change)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from rectune.domain.arms import Algorithm
from rectune.domain.errors import FailedPrecondition, InvalidArgument
from services.policy.core.model import BanditSettings, GuardrailSettings, algorithm_named
from tests.unit.test_policy_core import make_core

# (a setting's field, a value just inside the rule, one just outside, the message)
EDGES = [
    ("epsilon", 1.0, 1.0001, "settings.epsilon: must be in [0, 1]"),
    ("epsilon", 0.0, -0.0001, "settings.epsilon: must be in [0, 1]"),
    ("discount", 1.0, 1.0001, "settings.discount: must be in (0, 1]"),
    ("discount", 0.0001, 0.0, "settings.discount: must be in (0, 1]"),
    ("ucb_c", 0.0, -0.0001, "settings.ucb_c: must be >= 0"),
    ("click_weight", 1.0, 1.0001, "settings.reward.click_weight: must be in [0, 1]"),
    ("click_weight", 0.0, -0.0001, "settings.reward.click_weight: must be in [0, 1]"),
    ("conversion_weight", 1.0, 1.0001, "settings.reward.conversion_weight: must be in [0, 1]"),
    ("conversion_weight", 0.0, -0.0001, "settings.reward.conversion_weight: must be in [0, 1]"),
    ("champion_min_share", 1.0, 1.0001, "settings.champion_min_share: must be in [0, 1]"),
    ("champion_min_share", 0.0, -0.0001, "settings.champion_min_share: must be in [0, 1]"),
    ("default_exposure_cap", 1.0, 1.0001, "settings.default_exposure_cap: must be in (0, 1]"),
    ("default_exposure_cap", 0.0001, 0.0, "settings.default_exposure_cap: must be in (0, 1]"),
    ("reward_window_seconds", 0.001, 0.0, "settings.reward_window: must be > 0"),
    ("propensity_samples", 10, 9, "settings.propensity_samples: must be between 10 and 100000"),
    ("propensity_samples", 100_000, 100_001, "settings.propensity_samples: must be between 10 and 100000"),
    ("scoring_deadline_seconds", 0.001, 0.0009, "settings.scoring_deadline: must be between 1 ms and 60 s"),
    ("scoring_deadline_seconds", 60.0, 60.001, "settings.scoring_deadline: must be between 1 ms and 60 s"),
]
GUARDRAIL_EDGES = [
    ("delta", 0.0, -0.0001, "settings.guardrail.delta: must be in [0, 1)"),
    ("delta", 0.9999, 1.0, "settings.guardrail.delta: must be in [0, 1)"),
    ("threshold", 0.5, 0.4999, "settings.guardrail.threshold: must be in [0.5, 1)"),
    ("threshold", 0.9999, 1.0, "settings.guardrail.threshold: must be in [0.5, 1)"),
    ("min_impressions", 0, -1, "settings.guardrail.min_impressions: must be >= 0"),
]


@pytest.mark.parametrize(("name", "inside", "outside", "expected"), EDGES)
def test_each_setting_is_checked_at_its_edges(name: str, inside: float, outside: float, expected: str) -> None:
    changed: dict[str, Any] = {name: inside}
    dataclasses.replace(BanditSettings(), **changed).check()
    changed[name] = outside
    with pytest.raises(InvalidArgument) as error:
        dataclasses.replace(BanditSettings(), **changed).check()
    assert str(error.value) == expected


@pytest.mark.parametrize(("name", "inside", "outside", "expected"), GUARDRAIL_EDGES)
def test_each_guardrail_setting_is_checked_at_its_edges(
    name: str, inside: float, outside: float, expected: str
) -> None:
    changed: dict[str, Any] = {name: inside}
    BanditSettings(guardrail=dataclasses.replace(GuardrailSettings(), **changed)).check()
    changed[name] = outside
    with pytest.raises(InvalidArgument) as error:
        BanditSettings(guardrail=dataclasses.replace(GuardrailSettings(), **changed)).check()
    assert str(error.value) == expected


def test_the_defaults_are_the_documented_ones() -> None:
    settings = BanditSettings()
    settings.check()
    assert (settings.algorithm, settings.epsilon, settings.discount, settings.ucb_c) == (
        Algorithm.THOMPSON,
        0.1,
        0.9997,
        1.0,
    )
    assert (settings.click_weight, settings.conversion_weight, settings.champion_min_share) == (1.0, 0.0, 0.2)
    assert (settings.default_exposure_cap, settings.reward_window_seconds, settings.propensity_samples) == (
        0.2,
        86400.0,
        1000,
    )
    assert settings.scoring_deadline_seconds == 0.25
    assert settings.guardrail == GuardrailSettings(True, 0.005, 0.95, 1000)
    assert settings.discount_per_step is None and settings.kept(1000) == 1.0
    discounted = BanditSettings(algorithm=Algorithm.DISCOUNTED_THOMPSON, discount=0.5)
    assert discounted.discount_per_step == 0.5 and discounted.kept(3) == 0.125


def test_an_unknown_algorithm_is_named_with_the_known_ones_and_a_short_prefix() -> None:
    assert algorithm_named("ucb1") is Algorithm.UCB1
    with pytest.raises(InvalidArgument) as error:
        algorithm_named("greedy")
    assert str(error.value) == (
        "settings.algorithm: must be one of thompson, discounted_thompson, ucb1, epsilon_greedy, got 'greedy'"
    )
    with pytest.raises(InvalidArgument) as long:
        algorithm_named("x" * 40)
    assert str(long.value).endswith(f"got {'x' * 32 + '...'!r}")
    with pytest.raises(InvalidArgument) as edge:
        algorithm_named("y" * 32)
    assert str(edge.value).endswith(f"got {'y' * 32!r}")


def test_settings_changes_are_stored_or_refused_whole(tmp_path) -> None:
    core = make_core(tmp_path / "policy.db")
    changed = core.update_settings({"algorithm": "ucb1", "ucb_c": 2.0, "guardrail": {"min_impressions": 5}})
    assert (changed.algorithm, changed.ucb_c, changed.guardrail.min_impressions) == (Algorithm.UCB1, 2.0, 5)
    assert core.store.settings() == changed == core.settings()
    with pytest.raises(InvalidArgument, match="settings.epsilon: must be in"):
        core.update_settings({"epsilon": 1.5, "ucb_c": 3.0, "guardrail": {"delta": 0.5}})
    with pytest.raises(InvalidArgument):
        core.update_settings({"ucb_c": 3.0, "epsilon": 2.0})
    assert core.store.settings() == changed  # nothing of a refused change was kept
    core.close()


def test_no_arm_serving_is_a_failed_precondition(tmp_path) -> None:
    core = make_core(tmp_path / "policy.db", arms=())
    with pytest.raises(FailedPrecondition) as error:
        core.recommend("r1", "196", {}, 3, [])
    assert str(error.value) == "arms: none is serving; register a champion with PutArm"
    core.close()
