"""gRPC glue of EmbeddingService.

Not implemented yet (issue #3): every RPC answers UNIMPLEMENTED, naming the method
and the issue.
"""

from __future__ import annotations

from rectune.v1 import embedding_pb2_grpc
from services.common.errors import pending_rpc

ISSUE = "issue #3"


class EmbeddingServicer(embedding_pb2_grpc.EmbeddingServiceServicer):
    """Each RPC answers UNIMPLEMENTED until issue #3 lands."""

    EmbedTexts = pending_rpc("/rectune.v1.EmbeddingService/EmbedTexts", ISSUE)
    EmbedBulk = pending_rpc("/rectune.v1.EmbeddingService/EmbedBulk", ISSUE)
    EncodeUser = pending_rpc("/rectune.v1.EmbeddingService/EncodeUser", ISSUE)
    GetModelInfo = pending_rpc("/rectune.v1.EmbeddingService/GetModelInfo", ISSUE)
