"""Protobuf <-> domain types for ScoringService's own messages (the shared ones are in
services.common.convert). Nothing else."""

from __future__ import annotations

import json
from collections.abc import Iterable

from rectune.domain.data import DataShape
from rectune.domain.events import Item
from rectune.domain.fidelity import Fidelity
from rectune.domain.space import StrategySpace, configuration_schema
from rectune.v1 import scoring_pb2
from services.common import convert as shared
from services.common.prototime import duration, timestamp
from services.scoring.core.evaluation import Evaluation
from services.scoring.core.fitting import FitStatus
from services.scoring.core.freshness import Freshness
from services.scoring.core.ranking import Metrics
from services.scoring.core.strategies.base import TrainingReport

_FIT_STATES = {
    "pending": scoring_pb2.FIT_STATE_PENDING,
    "running": scoring_pb2.FIT_STATE_RUNNING,
    "ready": scoring_pb2.FIT_STATE_READY,
    "failed": scoring_pb2.FIT_STATE_FAILED,
}


def items(messages: Iterable[scoring_pb2.Item]) -> list[Item]:
    return [Item(m.item_id, m.text, dict(m.attributes)) for m in messages]


def fit_response(status: FitStatus) -> scoring_pb2.FitConfigurationResponse:
    response = scoring_pb2.FitConfigurationResponse(
        configuration_hash=status.configuration_hash,
        state=_FIT_STATES[status.state],
        error=status.error,
        fit_duration=duration(status.seconds),
        calibration_a=status.calibration.a,
        calibration_b=status.calibration.b,
        calibration_method=status.calibration_report.method,
        calibration_ece=status.calibration_report.ece,
        alternative_calibration_ece=status.calibration_report.alternative_ece,
        training=training_message(status.training),
    )
    if status.freshness is not None:
        fresh = freshness_message(status.freshness)
        response.freshness.CopyFrom(fresh)
        # The deprecated flat fields, from the same value, for clients that read them.
        response.fitted_at.CopyFrom(fresh.fitted_at)
        response.interactions_at_fit = fresh.interactions_at_fit
        response.interactions_since_fit = fresh.interactions_since_fit
        response.refits = fresh.refits
        response.refit_failures = fresh.refit_failures
        response.served = fresh.served
    return response


def freshness_message(fresh: Freshness) -> scoring_pb2.ModelFreshness:
    return scoring_pb2.ModelFreshness(
        configuration_hash=fresh.configuration_hash,
        strategy=fresh.strategy,
        fitted_at=timestamp(fresh.fitted_at),
        interactions_at_fit=fresh.interactions_at_fit,
        interactions_since_fit=fresh.interactions_since_fit,
        refits=fresh.refits,
        refit_failures=fresh.refit_failures,
        served=fresh.served,
        age=duration(fresh.age_seconds),
    )


def training_message(report: TrainingReport | None) -> scoring_pb2.TrainingReport | None:
    if report is None:
        return None
    return scoring_pb2.TrainingReport(
        epochs_run=report.epochs_run,
        best_epoch=report.best_epoch,
        train_loss=report.train_loss,
        validation_loss=report.validation_loss,
        initial_validation_loss=report.initial_validation_loss,
        stopped_because=report.stopped_because,
        duration=duration(report.seconds),
        device=report.device,
        encoder_layers_trained=report.encoder_layers_trained,
        encoder_parameters_trained=report.encoder_parameters_trained,
        frozen_activation_bytes=report.frozen_activation_bytes,
        frozen_activation_cache_hit=report.frozen_activation_cache_hit,
    )


def metrics_message(metrics: Metrics) -> scoring_pb2.EvaluationMetrics:
    return scoring_pb2.EvaluationMetrics(
        k=metrics.k,
        ndcg=metrics.ndcg,
        recall=metrics.recall,
        hit_rate=metrics.hit_rate,
        catalog_coverage=metrics.catalog_coverage,
        users_evaluated=metrics.users_evaluated,
    )


def evaluation_response(configuration_hash: str, evaluation: Evaluation) -> scoring_pb2.EvaluateConfigurationResponse:
    response = scoring_pb2.EvaluateConfigurationResponse(
        configuration_hash=configuration_hash,
        metrics=metrics_message(evaluation.metrics),
        duration=duration(evaluation.seconds),
        fidelity=scoring_pb2.Fidelity(
            training_budget=evaluation.fidelity.training_budget, user_fraction=evaluation.fidelity.user_fraction
        ),
    )
    if evaluation.fitted is not None:
        response.fitted_configuration.CopyFrom(shared.configuration_message(evaluation.fitted))
    compared = evaluation.comparison
    if compared is not None:
        paired = compared.paired
        response.comparison.CopyFrom(
            scoring_pb2.BaselineComparison(
                baseline_hash=compared.baseline_hash,
                baseline=metrics_message(compared.baseline),
                ratio=paired.ratio,
                probability_clears=paired.probability_clears,
                ndcg_difference=paired.mean_difference,
                ndcg_difference_low=paired.interval[0],
                ndcg_difference_high=paired.interval[1],
                resamples=paired.resamples,
            )
        )
    return response


def search_space_response(spaces: list[StrategySpace], shape: DataShape) -> scoring_pb2.DescribeSearchSpaceResponse:
    return scoring_pb2.DescribeSearchSpaceResponse(
        strategies=[shared.space_message(s) for s in spaces],
        json_schema=json.dumps(configuration_schema(spaces), sort_keys=True),
        data_shape=shared.data_shape_message(shape),
    )


def fidelity(message: scoring_pb2.Fidelity) -> Fidelity:
    """The request's fidelity; an unset share (0) means all of it."""
    return Fidelity(message.training_budget or 1.0, message.user_fraction or 1.0)
