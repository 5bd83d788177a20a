"""Protobuf <-> domain types for EmbeddingService. Nothing else."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from rectune.domain.errors import InvalidArgument
from rectune.v1 import embedding_pb2
from services.common.prototime import seconds
from services.embedding.core.encoder import Vectors
from services.embedding.core.service import ModelInfo, UserVector
from services.embedding.core.users import HistoryEntry, UserEncodingMode

_MODES = {
    embedding_pb2.USER_ENCODING_MODE_UNSPECIFIED: UserEncodingMode.WEIGHTED_MEAN,
    embedding_pb2.USER_ENCODING_MODE_WEIGHTED_MEAN: UserEncodingMode.WEIGHTED_MEAN,
    embedding_pb2.USER_ENCODING_MODE_HISTORY_TEXT: UserEncodingMode.HISTORY_TEXT,
}
_MODE_NAMES = {
    UserEncodingMode.WEIGHTED_MEAN: embedding_pb2.USER_ENCODING_MODE_WEIGHTED_MEAN,
    UserEncodingMode.HISTORY_TEXT: embedding_pb2.USER_ENCODING_MODE_HISTORY_TEXT,
}


def seconds_or_none(value: Timestamp, is_set: bool) -> float | None:
    return seconds(value) if is_set else None


def to_vectors(vectors: Vectors) -> list[embedding_pb2.Vector]:
    return [embedding_pb2.Vector(values=row) for row in vectors.tolist()]


def embed_texts_response(vectors: Vectors, info: ModelInfo) -> embedding_pb2.EmbedTextsResponse:
    return embedding_pb2.EmbedTextsResponse(
        vectors=to_vectors(vectors), model_name=info.model_name, dimension=info.dimension
    )


def embed_bulk_response(sequence: int, vectors: Vectors) -> embedding_pb2.EmbedBulkResponse:
    return embedding_pb2.EmbedBulkResponse(sequence=sequence, vectors=to_vectors(vectors))


def history(request: embedding_pb2.EncodeUserRequest) -> list[HistoryEntry]:
    return [
        HistoryEntry(entry.item_id, entry.text, entry.value, seconds_or_none(entry.time, entry.HasField("time")))
        for entry in request.history
    ]


def mode(request: embedding_pb2.EncodeUserRequest) -> UserEncodingMode:
    if request.mode not in _MODES:
        raise InvalidArgument("mode", f"must be a UserEncodingMode, got {request.mode}")
    return _MODES[request.mode]


def encode_user_response(user: UserVector) -> embedding_pb2.EncodeUserResponse:
    return embedding_pb2.EncodeUserResponse(
        vector=embedding_pb2.Vector(values=user.vector.tolist()),
        mode=_MODE_NAMES[user.mode],
        entries_used=user.entries_used,
    )


def model_info_response(info: ModelInfo) -> embedding_pb2.GetModelInfoResponse:
    return embedding_pb2.GetModelInfoResponse(
        model_name=info.model_name,
        dimension=info.dimension,
        device=info.device,
        dtype=info.dtype,
        max_length=info.max_length,
        max_texts_per_request=info.limits.max_texts_per_request,
        max_text_bytes=info.limits.max_text_bytes,
        max_batch=info.limits.max_batch,
        max_wait_ms=info.limits.max_wait_ms,
    )
