"""When a fitted model is due for a refit, and how fresh each one is.

A fitted model remembers when it was fitted and how many interactions the store held then
(its watermark). It is due for a refit in the background when the interactions added since
pass a count or a share of what it was fitted on, or when it passes a maximum age; each
rule is off at 0. ScoringService refits the most-served due model first, one fit at a time,
and swaps the new model in whole (see ``ScoringCore.refresh``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RefitPolicy:
    interactions: int = 1000  # new interactions since the fit
    share: float = 0.05  # new interactions as a share of those fitted on
    max_age_seconds: float = 3600.0

    def reason(self, watermark: int, fitted_at: float, interactions_now: int, now: float) -> str | None:
        """Why a model fitted at ``fitted_at`` on ``watermark`` interactions is due, or None."""
        added = interactions_now - watermark
        if added > 0 and self.interactions > 0 and added >= self.interactions:
            return f"{added} interactions since the fit (refit after {self.interactions})"
        if added > 0 and self.share > 0 and added >= self.share * max(watermark, 1):
            return f"{added} interactions since the fit, {added / max(watermark, 1):.1%} of those fitted on"
        age = now - fitted_at
        if self.max_age_seconds > 0 and age >= self.max_age_seconds:
            return f"fitted {age:.0f} s ago (refit after {self.max_age_seconds:g} s)"
        return None


@dataclass(frozen=True)
class Freshness:
    """One fitted configuration's freshness, as FitConfiguration and the gauges show it."""

    configuration_hash: str
    strategy: str
    fitted_at: float
    interactions_at_fit: int
    interactions_since_fit: int
    age_seconds: float
    refits: int  # refits done in this process (0: the first fit, or a model loaded as it was)
    refit_failures: int
    served: int  # RankItems calls this process answered with the configuration
