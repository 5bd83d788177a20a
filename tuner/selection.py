"""Choosing a configuration so that validation noise does not pick it.

The best validation score among many configurations is biased upward: with 40 candidates
whose true scores are close, the top one is mostly the luckiest. So the choice re-checks
the best few on bootstrap resamples of the validation users (each configuration scored on
the same users, paired) and takes the one that is best in most resamples; it replaces the
best default only when it beats that default in at least ``confidence`` of the resamples.
Otherwise the default stays: tuning never makes things worse than not tuning, as far as
the validation data can tell.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from rectune.domain.comparison import CONFIDENCE, RESAMPLES, resampled_users

Scores = npt.NDArray[np.float64]  # one configuration's score per validation user, users aligned


@dataclass(frozen=True)
class Choice:
    key: str  # the chosen configuration's key
    kept_default: bool
    mean: float  # its mean validation score
    default_key: str
    default_mean: float
    probability_better: float  # share of resamples in which the best finalist beat the default
    reason: str


def choose(
    scores: Mapping[str, Scores],
    defaults: Collection[str],
    finalists: int = 3,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> Choice:
    """The configuration to use, of those scored (``defaults`` name the untuned ones)."""
    means = {key: float(values.mean()) for key, values in scores.items()}
    default_key = max(defaults, key=means.__getitem__)
    tuned = sorted((key for key in scores if key not in defaults), key=means.__getitem__, reverse=True)[:finalists]
    if not tuned:
        return Choice(default_key, True, means[default_key], default_key, means[default_key], 0.0, "nothing tuned")
    users = len(scores[default_key])
    matrix = np.stack([scores[key] for key in [*tuned, default_key]])
    picks = resampled_users(users, resamples, seed)
    boot = matrix[:, picks].mean(axis=2)  # (finalists + 1, resamples)
    wins = np.bincount(boot[:-1].argmax(axis=0), minlength=len(tuned))
    best = int(wins.argmax())
    better = float((boot[best] > boot[-1]).mean())
    if better >= confidence:
        reason = (
            f"best of {len(tuned)} finalists in {wins[best]} of {resamples} resamples; beats the best default "
            f"in {better:.0%} of them (needs {confidence:.0%})"
        )
        return Choice(tuned[best], False, means[tuned[best]], default_key, means[default_key], better, reason)
    reason = f"the best finalist beats the best default in only {better:.0%} of {resamples} resamples"
    return Choice(default_key, True, means[default_key], default_key, means[default_key], better, reason)
