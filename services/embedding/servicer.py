"""gRPC glue of EmbeddingService.

Not implemented yet (issue #3): every RPC answers UNIMPLEMENTED through the error
interceptor, which names the method.
"""

from __future__ import annotations

from rectune.v1 import embedding_pb2_grpc


class EmbeddingServicer(embedding_pb2_grpc.EmbeddingServiceServicer):
    """Inherits the generated methods, which raise NotImplementedError -> UNIMPLEMENTED."""
