"""The guardrail in PolicyCore on a real SQLite file: an active arm probably worse than the
champion by more than delta is paused with its reason, under the stored settings; the
champion, arms not yet judged and paused arms are left alone.

StandInRanker is NOT ScoringService (see test_policy_core.py)."""

from __future__ import annotations

from dataclasses import replace
from math import erf, sqrt

import numpy as np
import pytest

from rectune.domain.arms import ArmOrigin, ArmState
from rectune.domain.configuration import Configuration
from services.policy.core.bandits import ArmBelief
from services.policy.core.guardrail import GUARDRAIL_REASON_PREFIX, Guardrail, arms_to_pause
from services.policy.core.model import Arm, BanditSettings
from tests.unit.test_policy_shares import give_evidence, policy

ARMS = {"control": 1.0, "bad": 0.5, "young": 0.5, "fine": 0.5, "resting": 0.5}
# Click rates: control 10%, bad 5% over 2,000 impressions, young 0% over 500, fine 10%.
EVIDENCE = {
    "control": (2000.0, 200.0),
    "bad": (2000.0, 100.0),
    "young": (500.0, 0.0),
    "fine": (2000.0, 200.0),
    "resting": (2000.0, 0.0),
}


MANUAL = "registered (manual)"


def states(core) -> dict[str, tuple[str, str]]:
    return {arm.arm_id: (arm.state.value, arm.state_reason) for arm in core.list_arms()}


def test_an_arm_probably_worse_than_the_champion_is_paused_with_its_reason(tmp_path) -> None:
    core = policy(tmp_path, {"champion_min_share": 0.2}, ARMS)
    give_evidence(core, EVIDENCE)
    core.set_arm_state("resting", ArmState.PAUSED, "by hand")
    paused = core.check_guardrails()
    assert [arm.arm_id for arm in paused] == ["bad"]
    reason = "guardrail: P(CTR < champion CTR - 0.005) = 1.000 > 0.95 after 2000 impressions"
    assert states(core) == {
        "control": ("champion", MANUAL),
        "bad": ("paused", reason),
        "young": ("active", MANUAL),  # fewer than min_impressions: not judged yet
        "fine": ("active", MANUAL),
        "resting": ("paused", "by hand"),
    }
    assert core.check_guardrails() == []  # nothing left to pause
    core.close()


def test_the_guardrails_stored_settings_decide(tmp_path) -> None:
    core = policy(tmp_path, {"guardrail": {"min_impressions": 400, "delta": 0.2}}, ARMS)
    give_evidence(core, EVIDENCE)
    # young's 0 of 500 is now judged, but no arm is 20 points below the champion's 10%.
    assert core.check_guardrails() == []
    core.update_settings({"guardrail": {"min_impressions": 400, "delta": 0.05}})
    paused = {arm.arm_id: arm.state_reason for arm in core.check_guardrails()}
    # bad's 5% is not clearly 5 points below 10%; young's 0 of 500 and resting's 0 of 2,000 are.
    assert paused == {
        "young": "guardrail: P(CTR < champion CTR - 0.05) = 1.000 > 0.95 after 500 impressions",
        "resting": "guardrail: P(CTR < champion CTR - 0.05) = 1.000 > 0.95 after 2000 impressions",
    }
    core.update_settings({"guardrail": {"enabled": False, "delta": 0.0}})
    assert core.check_guardrails() == []
    core.close()


def test_without_a_champion_nothing_is_judged() -> None:
    bad = Arm("bad", Configuration("als", {}), "h", ArmOrigin.MANUAL, ArmState.ACTIVE, 0.5, 0.0, 0.0, "", 5000.0, 0.0)
    assert arms_to_pause([bad], 0, BanditSettings(), np.random.default_rng(0)) == []
    champion = replace(bad, arm_id="c", state=ArmState.CHAMPION, reward=2500.0)
    assert [arm_id for arm_id, _ in arms_to_pause([champion, bad], 0, BanditSettings(), np.random.default_rng(0))] == [
        "bad"
    ]


def test_the_probability_of_being_worse_by_delta_against_the_beta_posteriors() -> None:
    """Beta(1 + 100, 1 + 900) against Beta(1 + 130, 1 + 870): rates 0.1 and 0.13. P(arm <
    champion - 0.01) from the normal approximation of the two posteriors is about 0.92."""
    arm, champion = ArmBelief("a", 1000.0, 100.0, 0.5), ArmBelief("c", 1000.0, 130.0, 1.0, champion=True)
    rng = np.random.default_rng(0)
    guardrail = Guardrail(delta=0.01, threshold=0.95, min_impressions=1000, samples=200_000)
    mean = (131 / 1002) - (101 / 1002) - 0.01
    variance = sum(a * b / ((a + b) ** 2 * (a + b + 1)) for a, b in ((101, 901), (131, 871)))
    expected = 0.5 * (1 + erf(mean / sqrt(2 * variance)))
    assert guardrail.probability_worse(arm, champion, rng) == pytest.approx(expected, abs=0.01)
    assert guardrail.verdict(arm, champion, rng) is None  # about 0.92 <= 0.95
    strict = Guardrail(delta=0.01, threshold=0.9, min_impressions=1000, samples=200_000)
    assert (strict.verdict(arm, champion, rng) or "").startswith(
        GUARDRAIL_REASON_PREFIX + "P(CTR < champion CTR - 0.01)"
    )
    assert Guardrail(min_impressions=1001).verdict(arm, champion, rng) is None  # not judged yet
    assert strict.verdict(champion, champion, rng) is None  # the champion is never paused
