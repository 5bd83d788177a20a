"""gRPC glue of EmbeddingService: convert -> call the core -> convert."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from rectune.v1 import embedding_pb2, embedding_pb2_grpc
from services.embedding import convert
from services.embedding.core.service import EmbeddingCore


class EmbeddingServicer(embedding_pb2_grpc.EmbeddingServiceServicer):
    def __init__(self, core: EmbeddingCore) -> None:
        self.core = core

    def EmbedTexts(self, request: embedding_pb2.EmbedTextsRequest, context: Any) -> embedding_pb2.EmbedTextsResponse:
        vectors = self.core.embed(request.texts)
        return convert.embed_texts_response(vectors, self.core.model_info())

    def EmbedBulk(
        self, request_iterator: Iterator[embedding_pb2.EmbedBulkRequest], context: Any
    ) -> Iterator[embedding_pb2.EmbedBulkResponse]:
        chunks = ((request.sequence, request.texts) for request in request_iterator)
        for sequence, vectors in self.core.embed_stream(chunks):
            yield convert.embed_bulk_response(sequence, vectors)

    def EncodeUser(self, request: embedding_pb2.EncodeUserRequest, context: Any) -> embedding_pb2.EncodeUserResponse:
        as_of = convert.seconds_or_none(request.as_of, request.HasField("as_of"))
        user = self.core.encode_user(convert.history(request), convert.mode(request), request.half_life_seconds, as_of)
        return convert.encode_user_response(user)

    def GetModelInfo(
        self, request: embedding_pb2.GetModelInfoRequest, context: Any
    ) -> embedding_pb2.GetModelInfoResponse:
        return convert.model_info_response(self.core.model_info())
