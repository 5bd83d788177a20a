"""Protobuf <-> domain for the vocabulary every service and the tuner share: configurations
and their spaces, interactions, scored items, event kinds, feedback events, logged
decisions, arm states and origins. Each service's own ``convert.py`` maps its own
messages and uses these for the shared ones, so a value reads the same everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from rectune.domain.arms import ArmOrigin, ArmState
from rectune.domain.configuration import Configuration, ParamValue
from rectune.domain.data import DataShape
from rectune.domain.errors import InvalidArgument, quoted
from rectune.domain.events import Decision, EventKind, FeedbackEvent, Interaction, ScoredItem, listed
from rectune.domain.space import Hyperparameter, ParamType, StrategySpace
from rectune.v1 import common_pb2, metrics_pb2, policy_pb2, scoring_pb2
from services.common.prototime import seconds, timestamp

# Each protobuf enum value is the domain enum's name with the enum's prefix (EVENT_KIND_CLICK
# for EventKind.CLICK): the maps are derived, and a value missing on either side fails at import.
EVENT_KINDS: dict[common_pb2.EventKind.ValueType, EventKind] = {
    common_pb2.EventKind.Value(f"EVENT_KIND_{kind.name}"): kind for kind in EventKind
}
EVENT_KIND_VALUES = {kind: value for value, kind in EVENT_KINDS.items()}
ORIGINS: dict[policy_pb2.ArmOrigin.ValueType, ArmOrigin] = {
    policy_pb2.ArmOrigin.Value(f"ARM_ORIGIN_{origin.name}"): origin for origin in ArmOrigin
}
ORIGIN_VALUES = {origin: value for value, origin in ORIGINS.items()}
STATES: dict[policy_pb2.ArmState.ValueType, ArmState] = {
    policy_pb2.ArmState.Value(f"ARM_STATE_{state.name}"): state for state in ArmState
}
STATE_VALUES = {state: value for value, state in STATES.items()}
PARAM_TYPES = {kind: scoring_pb2.ParamType.Value(f"PARAM_TYPE_{kind.name}") for kind in ParamType}
PARAM_TYPE_OF = {message: kind for kind, message in PARAM_TYPES.items()}


# -- configurations and spaces ---------------------------------------------------------------


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


def configuration(
    message: common_pb2.Configuration, present: bool = True, field: str = "configuration"
) -> Configuration:
    if not present or not message.strategy:
        raise InvalidArgument(f"{field}.strategy", "must not be empty")
    params = {name: param_value(value, f"{field}.params[{quoted(name)}]") for name, value in message.params.items()}
    return Configuration(message.strategy, params)


def configuration_message(value: Configuration) -> common_pb2.Configuration:
    message = common_pb2.Configuration(strategy=value.strategy)
    for name, param in value.params.items():
        message.params[name].CopyFrom(param_message(param))
    return message


def hyperparameter(message: scoring_pb2.Hyperparameter) -> Hyperparameter:
    """A hyperparameter as DescribeSearchSpace describes it."""
    return Hyperparameter(
        name=message.name,
        type=PARAM_TYPE_OF[message.type],
        default=param_value(message.default_value, f"{message.name}.default_value"),
        description=message.description,
        low=message.min,
        high=message.max,
        log_scale=message.log_scale,
        choices=tuple(message.choices),
    )


def data_shape(message: scoring_pb2.DataShape) -> DataShape:
    return DataShape(message.users, message.items, message.interactions, message.median_history, message.max_history)


def data_shape_message(shape: DataShape) -> scoring_pb2.DataShape:
    return scoring_pb2.DataShape(
        users=shape.users,
        items=shape.items,
        interactions=shape.interactions,
        median_history=shape.median_history,
        max_history=shape.max_history,
    )


def strategy_space(message: scoring_pb2.StrategySpace) -> StrategySpace:
    return StrategySpace(message.strategy, message.description, tuple(map(hyperparameter, message.hyperparameters)))


def space_message(space: StrategySpace) -> scoring_pb2.StrategySpace:
    return scoring_pb2.StrategySpace(
        strategy=space.strategy,
        description=space.description,
        json_schema=json.dumps(space.json_schema(), sort_keys=True),
        hyperparameters=[
            scoring_pb2.Hyperparameter(
                name=h.name,
                type=PARAM_TYPES[h.type],
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


# -- interactions, items, events, decisions ------------------------------------------------------


def optional_time(message: common_pb2.Event | common_pb2.Interaction | metrics_pb2.Decision) -> float | None:
    return seconds(message.time) if message.HasField("time") else None


def interaction(message: common_pb2.Interaction) -> Interaction:
    return Interaction(message.user_id, message.item_id, message.value, optional_time(message) or 0.0)


def interactions(messages: Iterable[common_pb2.Interaction]) -> list[Interaction]:
    return [interaction(m) for m in messages]


def interaction_message(value: Interaction) -> common_pb2.Interaction:
    return common_pb2.Interaction(
        user_id=value.user_id, item_id=value.item_id, value=value.value, time=timestamp(value.time)
    )


def scored_items(items: Sequence[ScoredItem]) -> list[common_pb2.ScoredItem]:
    return [
        common_pb2.ScoredItem(item_id=i.item_id, score=i.score, probability=i.probability, rank=i.rank) for i in items
    ]


def scored_item(message: common_pb2.ScoredItem) -> ScoredItem:
    return ScoredItem(message.item_id, message.score, message.probability, message.rank)


def event(message: common_pb2.Event) -> FeedbackEvent:
    return FeedbackEvent(
        event_id=message.event_id,
        decision_id=message.decision_id,
        arm_id=message.arm_id,
        user_id=message.user_id,
        item_id=message.item_id,
        kind=EVENT_KINDS.get(message.kind),
        custom_name=message.custom_name,
        value=message.value,
        time=optional_time(message),
    )


def event_message(value: FeedbackEvent) -> common_pb2.Event:
    message = common_pb2.Event(
        event_id=value.event_id,
        decision_id=value.decision_id,
        arm_id=value.arm_id,
        user_id=value.user_id,
        item_id=value.item_id,
        kind=EVENT_KIND_VALUES[value.kind] if value.kind is not None else common_pb2.EVENT_KIND_UNSPECIFIED,
        custom_name=value.custom_name,
        value=value.value,
    )
    if value.time is not None:
        message.time.CopyFrom(timestamp(value.time))
    return message


def decision(message: metrics_pb2.Decision) -> Decision:
    return Decision(
        decision_id=message.decision_id,
        request_id=message.request_id,
        user_id=message.user_id,
        arm_id=message.arm_id,
        propensity=message.propensity,
        propensity_samples=message.propensity_samples,
        items=listed(message.item_ids),
        degraded=message.degraded,
        algorithm=message.algorithm,
        context=dict(message.context),
        time=optional_time(message),
    )


def decision_message(value: Decision) -> metrics_pb2.Decision:
    message = metrics_pb2.Decision(
        decision_id=value.decision_id,
        request_id=value.request_id,
        user_id=value.user_id,
        arm_id=value.arm_id,
        propensity=value.propensity,
        propensity_samples=value.propensity_samples,
        item_ids=list(value.item_ids),
        degraded=value.degraded,
        algorithm=value.algorithm,
        context=dict(value.context),
    )
    if value.time is not None:
        message.time.CopyFrom(timestamp(value.time))
    return message
