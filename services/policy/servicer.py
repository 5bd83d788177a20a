"""gRPC glue of PolicyService.

Not implemented yet (issue #5): every RPC answers UNIMPLEMENTED, naming the method
and the issue.
"""

from __future__ import annotations

from rectune.v1 import metrics_pb2_grpc, policy_pb2_grpc, scoring_pb2_grpc
from services.common.errors import pending_rpc

ISSUE = "issue #5"


class PolicyServicer(policy_pb2_grpc.PolicyServiceServicer):
    """Each RPC answers UNIMPLEMENTED until issue #5 lands."""

    Recommend = pending_rpc("/rectune.v1.PolicyService/Recommend", ISSUE)
    RecordFeedback = pending_rpc("/rectune.v1.PolicyService/RecordFeedback", ISSUE)
    PutArm = pending_rpc("/rectune.v1.PolicyService/PutArm", ISSUE)
    SetArmState = pending_rpc("/rectune.v1.PolicyService/SetArmState", ISSUE)
    ListArms = pending_rpc("/rectune.v1.PolicyService/ListArms", ISSUE)
    GetPolicySettings = pending_rpc("/rectune.v1.PolicyService/GetPolicySettings", ISSUE)
    UpdatePolicySettings = pending_rpc("/rectune.v1.PolicyService/UpdatePolicySettings", ISSUE)

    def __init__(
        self, scoring: scoring_pb2_grpc.ScoringServiceStub, metrics: metrics_pb2_grpc.MetricsServiceStub
    ) -> None:
        self.scoring = scoring
        self.metrics = metrics
