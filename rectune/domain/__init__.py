"""rectune's shared vocabulary: the words every service and the tuner use, and the rules
their values follow. No protobuf and no service in here; each service's ``convert.py``
maps the wire (``rectune.v1``) to these types.

- ``configuration``: Configuration (strategy + params, canonical key and hash), ParamValue
- ``space``: ParamType, Hyperparameter, StrategySpace, SearchSpace, configuration_schema
- ``arms``: ArmState, ArmOrigin, Algorithm, decay
- ``events``: Interaction, Item, EventKind, FeedbackEvent, ScoredItem, Decision, and the
  validation rules of ids, times and numbers
- ``errors``: the domain exceptions, each naming the gRPC status it maps to
"""
