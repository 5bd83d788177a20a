"""Protobuf <-> domain types for ScoringService. Nothing else."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from rectune.v1 import common_pb2, scoring_pb2
from services.common.errors import InvalidArgument
from services.common.prototime import duration
from services.scoring.core.data import Interaction, Item
from services.scoring.core.ranking import Metrics
from services.scoring.core.service import FitStatus, RankedItem
from services.scoring.core.space import Hyperparameter, ParamType, ParamValue, StrategySpace, configuration_schema

_PARAM_TYPES = {
    ParamType.FLOAT: scoring_pb2.PARAM_TYPE_FLOAT,
    ParamType.INT: scoring_pb2.PARAM_TYPE_INT,
    ParamType.CATEGORICAL: scoring_pb2.PARAM_TYPE_CATEGORICAL,
    ParamType.BOOL: scoring_pb2.PARAM_TYPE_BOOL,
}
_FIT_STATES = {
    "pending": scoring_pb2.FIT_STATE_PENDING,
    "running": scoring_pb2.FIT_STATE_RUNNING,
    "ready": scoring_pb2.FIT_STATE_READY,
    "failed": scoring_pb2.FIT_STATE_FAILED,
}


def param_value(value: common_pb2.ParamValue, where: str) -> ParamValue:
    kind = value.WhichOneof("kind")
    if kind is None:
        raise InvalidArgument(where, "has no value set")
    result: ParamValue = getattr(value, kind)
    return result


def param_message(value: ParamValue) -> common_pb2.ParamValue:
    if isinstance(value, bool):
        return common_pb2.ParamValue(bool_value=value)
    if isinstance(value, int):
        return common_pb2.ParamValue(int_value=value)
    if isinstance(value, float):
        return common_pb2.ParamValue(double_value=value)
    return common_pb2.ParamValue(string_value=value)


def configuration_message(strategy: str, params: Mapping[str, ParamValue]) -> common_pb2.Configuration:
    """A configuration as the contract carries it (shared by every client of ScoringService)."""
    message = common_pb2.Configuration(strategy=strategy)
    for name, value in params.items():
        message.params[name].CopyFrom(param_message(value))
    return message


def configuration(message: common_pb2.Configuration, present: bool) -> tuple[str, dict[str, ParamValue]]:
    if not present or not message.strategy:
        raise InvalidArgument("configuration.strategy", "must not be empty")
    params = {name: param_value(value, f"configuration.params[{name!r}]") for name, value in message.params.items()}
    return message.strategy, params


def interaction(message: common_pb2.Interaction) -> Interaction:
    when = message.time.seconds + message.time.nanos / 1e9 if message.HasField("time") else 0.0
    return Interaction(message.user_id, message.item_id, message.value, when)


def interactions(messages: Iterable[common_pb2.Interaction]) -> list[Interaction]:
    return [interaction(m) for m in messages]


def items(messages: Iterable[scoring_pb2.Item]) -> list[Item]:
    return [Item(m.item_id, m.text, dict(m.attributes)) for m in messages]


def scored(items_: list[RankedItem]) -> list[common_pb2.ScoredItem]:
    return [
        common_pb2.ScoredItem(item_id=i.item_id, score=i.score, probability=i.probability, rank=i.rank) for i in items_
    ]


def fit_response(status: FitStatus) -> scoring_pb2.FitConfigurationResponse:
    return scoring_pb2.FitConfigurationResponse(
        configuration_hash=status.configuration_hash,
        state=_FIT_STATES[status.state],
        error=status.error,
        fit_duration=duration(status.seconds),
        calibration_a=status.calibration.a,
        calibration_b=status.calibration.b,
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


_PARAM_TYPE_OF = {message: kind for kind, message in _PARAM_TYPES.items()}


def hyperparameter(message: scoring_pb2.Hyperparameter) -> Hyperparameter:
    """A hyperparameter as DescribeSearchSpace describes it (for clients such as the tuner)."""
    return Hyperparameter(
        name=message.name,
        type=_PARAM_TYPE_OF[message.type],
        default=param_value(message.default_value, f"{message.name}.default_value"),
        description=message.description,
        low=message.min,
        high=message.max,
        log_scale=message.log_scale,
        choices=tuple(message.choices),
    )


def space_message(space: StrategySpace) -> scoring_pb2.StrategySpace:
    return scoring_pb2.StrategySpace(
        strategy=space.strategy,
        description=space.description,
        json_schema=json.dumps(space.json_schema(), sort_keys=True),
        hyperparameters=[
            scoring_pb2.Hyperparameter(
                name=h.name,
                type=_PARAM_TYPES[h.type],
                min=h.low,
                max=h.high,
                log_scale=h.log_scale,
                default_value=param_message(h.default),
                choices=list(h.choices),
                description=h.description,
            )
            for h in space.hyperparameters
        ],
    )


def search_space_response(spaces: list[StrategySpace]) -> scoring_pb2.DescribeSearchSpaceResponse:
    return scoring_pb2.DescribeSearchSpaceResponse(
        strategies=[space_message(s) for s in spaces],
        json_schema=json.dumps(configuration_schema(spaces), sort_keys=True),
    )
