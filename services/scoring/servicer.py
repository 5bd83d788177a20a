"""gRPC glue of ScoringService.

Not implemented yet (issue #4): every RPC answers UNIMPLEMENTED through the error
interceptor, which names the method.
"""

from __future__ import annotations

from rectune.v1 import embedding_pb2_grpc, scoring_pb2_grpc


class ScoringServicer(scoring_pb2_grpc.ScoringServiceServicer):
    """Inherits the generated methods, which raise NotImplementedError -> UNIMPLEMENTED."""

    def __init__(self, embedding: embedding_pb2_grpc.EmbeddingServiceStub) -> None:
        self.embedding = embedding
