"""gRPC glue of ScoringService.

Not implemented yet (issue #4): every RPC answers UNIMPLEMENTED, naming the method
and the issue.
"""

from __future__ import annotations

from rectune.v1 import embedding_pb2_grpc, scoring_pb2_grpc
from services.common.errors import pending_rpc

ISSUE = "issue #4"


class ScoringServicer(scoring_pb2_grpc.ScoringServiceServicer):
    """Each RPC answers UNIMPLEMENTED until issue #4 lands."""

    UpsertItems = pending_rpc("/rectune.v1.ScoringService/UpsertItems", ISSUE)
    AddInteractions = pending_rpc("/rectune.v1.ScoringService/AddInteractions", ISSUE)
    RankItems = pending_rpc("/rectune.v1.ScoringService/RankItems", ISSUE)
    ScoreItems = pending_rpc("/rectune.v1.ScoringService/ScoreItems", ISSUE)
    FitConfiguration = pending_rpc("/rectune.v1.ScoringService/FitConfiguration", ISSUE)
    EvaluateConfiguration = pending_rpc("/rectune.v1.ScoringService/EvaluateConfiguration", ISSUE)
    DescribeSearchSpace = pending_rpc("/rectune.v1.ScoringService/DescribeSearchSpace", ISSUE)

    def __init__(self, embedding: embedding_pb2_grpc.EmbeddingServiceStub) -> None:
        self.embedding = embedding
