"""gRPC glue of PolicyService.

Not implemented yet (issue #5): every RPC answers UNIMPLEMENTED through the error
interceptor, which names the method.
"""

from __future__ import annotations

from rectune.v1 import metrics_pb2_grpc, policy_pb2_grpc, scoring_pb2_grpc


class PolicyServicer(policy_pb2_grpc.PolicyServiceServicer):
    """Inherits the generated methods, which raise NotImplementedError -> UNIMPLEMENTED."""

    def __init__(
        self, scoring: scoring_pb2_grpc.ScoringServiceStub, metrics: metrics_pb2_grpc.MetricsServiceStub
    ) -> None:
        self.scoring = scoring
        self.metrics = metrics
