"""The fit that a child process runs (ScoringLimits.fit_in_child_process): strategies that
need nothing but the data (als, item_knn), with the calibration, so that a background refit
never holds the interpreter lock ranking needs. The child is spawned (a fresh interpreter),
so it imports the service's modules again: it holds about as much code as the service, and
only the data of the fit it runs."""

from __future__ import annotations

import os

from rectune.domain.configuration import Configuration
from services.scoring.core.data import TrainingData
from services.scoring.core.fitting import CalibrationReport, calibrate, calibration_split
from services.scoring.core.ranking import Calibration
from services.scoring.core.strategies.als import Als
from services.scoring.core.strategies.base import FittedModel, Strategy
from services.scoring.core.strategies.item_knn import ItemKnn

OFFLINE: dict[str, Strategy] = {"als": Als(), "item_knn": ItemKnn()}
# A fit is background work: when the cores are busy, ranking goes first.
BACKGROUND_NICENESS = 10


def background_priority() -> None:
    """The child's initializer: a lower scheduling priority than the service's."""
    os.nice(BACKGROUND_NICENESS)


def fit_offline(configuration: Configuration, data: TrainingData) -> tuple[FittedModel, Calibration, CalibrationReport]:
    strategy = OFFLINE[configuration.strategy]
    train, calibration_items = calibration_split(data)
    model = strategy.fit(train, configuration.params, None)
    calibration, report = calibrate(model, train, calibration_items)
    return model, calibration, report
