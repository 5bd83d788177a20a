"""The offline screen: which proposals are new and clear the bar against the best live arm.

A proposal's screen is ScoringService's offline evaluation on its time-based holdout. With
the paired comparison (the bar's configuration scored on the same users), a proposal passes when it
clears ``min_ndcg_ratio`` x the bar's NDCG@k (the champion's, or the best live arm's
offline NDCG@k when another serving arm scores better) in at least ``confidence`` of the
bootstrap resamples; without it, its mean NDCG@k decides. A configuration already live, or
proposed earlier in the same cycle, is refused before any number is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rectune.domain.comparison import RESAMPLES
from rectune.domain.fidelity import FULL, Fidelity
from tuner.proposers import Proposal

SAME_CONFIGURATION = "same configuration as an existing arm or an earlier proposal"


@dataclass(frozen=True)
class Screen:
    """Offline evaluation of a configuration on ScoringService's time-based holdout."""

    configuration_hash: str
    ndcg: float
    recall: float
    # Screened against the champion on the same holdout users: the share of paired bootstrap
    # resamples in which this NDCG@k clears screen_min_ndcg_ratio x the champion's.
    probability_clears: float | None = None
    # How much of a full evaluation this was, as ScoringService used it.
    fidelity: Fidelity = FULL
    seconds: float = 0.0


@dataclass(frozen=True)
class ScreenRule:
    """The bar a proposal must clear (TunerLimits' screen_* settings and evaluation_k)."""

    k: int
    min_ndcg_ratio: float
    confidence: float


@dataclass(frozen=True)
class Passed:
    """A proposal that goes live: its place among the cycle's proposals and why it passed."""

    index: int
    proposal: Proposal
    reason: str


@dataclass(frozen=True)
class Rejected:
    proposal: Proposal
    configuration_hash: str
    reason: str


@dataclass(frozen=True)
class LiveBest:
    """The serving arm with the best offline NDCG@k when it is not the champion: the bar."""

    arm_id: str
    screen: Screen


def screened(
    proposals: Sequence[Proposal],
    screens: Sequence[Screen],
    champion: Screen,
    existing_hashes: set[str],
    rule: ScreenRule,
    best_live: LiveBest | None = None,
) -> tuple[list[Passed], list[Rejected]]:
    """The proposals that are new and clear the bar with confidence, and why the others do not.
    The bar is the best live arm's offline score when one beats the champion's."""
    passed: list[Passed] = []
    rejected: list[Rejected] = []
    seen = set(existing_hashes)
    bar = champion if best_live is None else best_live.screen
    for index, (proposal, screen) in enumerate(zip(proposals, screens, strict=True)):
        if screen.configuration_hash in seen:
            rejected.append(Rejected(proposal, screen.configuration_hash, SAME_CONFIGURATION))
            continue
        seen.add(screen.configuration_hash)
        numbers = screen_numbers(screen, champion, rule, best_live)
        if not clears(screen, bar, rule):
            rejected.append(Rejected(proposal, screen.configuration_hash, numbers))
            continue
        passed.append(Passed(index, proposal, f"{proposal.rationale}; {numbers}, recall {screen.recall:.4f}"))
    return passed, rejected


def clears(screen: Screen, bar: Screen, rule: ScreenRule) -> bool:
    """Whether the proposal passes: by the paired comparison when there is one, else by its mean."""
    if screen.probability_clears is None:
        return screen.ndcg >= rule.min_ndcg_ratio * bar.ndcg
    return screen.probability_clears >= rule.confidence


def screen_numbers(screen: Screen, champion: Screen, rule: ScreenRule, best_live: LiveBest | None = None) -> str:
    """The screen's numbers in words, for the audit table and the operator."""
    if best_live is None:
        against = f"{rule.min_ndcg_ratio:g} x champion's {champion.ndcg:.4f}"
    else:
        against = (
            f"{rule.min_ndcg_ratio:g} x the best live arm's ({best_live.arm_id}) {best_live.screen.ndcg:.4f} "
            f"(champion's {champion.ndcg:.4f})"
        )
    numbers = f"offline NDCG@{rule.k} {screen.ndcg:.4f} against {against}"
    if not screen.fidelity.full:
        numbers += f" at {screen.fidelity.describe()}"
    if screen.probability_clears is None:
        return numbers
    return (
        f"{numbers}: clears it in {screen.probability_clears:.0%} of {RESAMPLES} paired resamples of the "
        f"holdout users (needs {rule.confidence:.0%})"
    )
