"""The content strategy and item vectors with the real EmbeddingService (all-MiniLM-L6-v2)."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from rectune.datasets import load_movielens_atomic
from rectune.v1 import common_pb2, embedding_pb2, scoring_pb2
from tests.conftest import MOVIELENS

pytestmark = pytest.mark.integration

STAR_WARS = ("50", "172", "181")


def items_of(count: int) -> list[scoring_pb2.Item]:
    lines = (MOVIELENS / "ml-100k.item").read_text().splitlines()[1 : count + 1]
    return [scoring_pb2.Item(item_id=line.split("\t")[0], text=" ".join(line.split("\t")[1:])) for line in lines]


def content(**params) -> common_pb2.Configuration:
    configuration = common_pb2.Configuration(strategy="content")
    for name, value in params.items():
        if isinstance(value, str):
            configuration.params[name].string_value = value
        else:
            configuration.params[name].double_value = value
    return configuration


def test_upsert_embeds_once_and_a_restart_reuses_stored_vectors(start_service, embedding_address, tmp_path) -> None:
    database = f"sqlite:///{tmp_path / 'vectors.db'}"
    first = start_service("scoring", embedding_address=embedding_address, database_url=database)
    batch = scoring_pb2.UpsertItemsRequest(items=items_of(40))
    assert first.stub.UpsertItems(batch, timeout=120).embedded == 40
    assert first.stub.UpsertItems(batch, timeout=120).embedded == 0
    changed = scoring_pb2.UpsertItemsRequest(items=[scoring_pb2.Item(item_id="1", text="Toy Story, new text")])
    assert first.stub.UpsertItems(changed, timeout=60).embedded == 1
    first.service.stop(0)
    second = start_service("scoring", embedding_address=embedding_address, database_url=database)
    assert second.stub.UpsertItems(batch, timeout=120).embedded == 1  # only item 1, whose text differs again


def test_content_ranks_by_similarity_to_the_encoded_user(start_service, embedding_address) -> None:
    from rectune.v1 import embedding_pb2_grpc

    scoring = start_service("scoring", embedding_address=embedding_address, dataset=str(MOVIELENS)).stub
    history = [common_pb2.Interaction(item_id=item, value=5.0) for item in STAR_WARS]
    response = scoring.RankItems(
        scoring_pb2.RankItemsRequest(configuration=content(), history=history, k=5), timeout=300
    )
    ranked = [i.item_id for i in response.items]
    assert len(ranked) == 5 and not set(STAR_WARS) & set(ranked)
    # The same ranking computed directly from EmbeddingService's vectors.
    texts = {item.item_id: item.text for item in load_movielens_atomic(MOVIELENS)[0]}
    with grpc.insecure_channel(embedding_address) as channel:
        embedding = embedding_pb2_grpc.EmbeddingServiceStub(channel)
        request = embedding_pb2.EncodeUserRequest(mode=embedding_pb2.USER_ENCODING_MODE_WEIGHTED_MEAN)
        for item in STAR_WARS:
            request.history.add(item_id=item, text=texts[item], value=5.0)
        user = np.array(embedding.EncodeUser(request, timeout=60).vector.values)
        ids = list(texts)
        vectors = np.array(
            [
                list(v.values)
                for chunk in range(0, len(ids), 1000)
                for v in embedding.EmbedTexts(
                    embedding_pb2.EmbedTextsRequest(texts=[texts[i].encode() for i in ids[chunk : chunk + 1000]]),
                    timeout=300,
                ).vectors
            ]
        )
    scores = vectors @ user
    expected = [ids[i] for i in np.argsort(-scores) if ids[i] not in STAR_WARS][:5]
    assert ranked == expected


def test_hybrid_can_blend_content(start_service, embedding_address) -> None:
    """Content alone in the blend ranks as content does (normalising is monotone); a share of
    content changes the default blend's list."""
    scoring = start_service("scoring", embedding_address=embedding_address, dataset=str(MOVIELENS)).stub

    def ranked(strategy: str, **weights: float) -> list[str]:
        configuration = common_pb2.Configuration(strategy=strategy)
        for name, weight in weights.items():
            configuration.params[name].double_value = weight
        request = scoring_pb2.RankItemsRequest(configuration=configuration, user_id="196", k=10)
        return [item.item_id for item in scoring.RankItems(request, timeout=600).items]

    content_alone = {"w_popularity": 0.0, "w_item_knn": 0.0, "w_als": 0.0, "w_content": 1.0}
    assert ranked("hybrid", **content_alone) == ranked("content")
    blended = ranked("hybrid", w_content=0.3)
    assert len(blended) == 10 and blended != ranked("hybrid")


def test_items_stay_stored_when_embedding_is_down(start_service) -> None:
    scoring = start_service("scoring").stub  # its EmbeddingService address answers nothing
    with pytest.raises(grpc.RpcError) as error:
        scoring.UpsertItems(scoring_pb2.UpsertItemsRequest(items=items_of(2)), timeout=60)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert (error.value.details() or "").startswith(
        "items: 2 stored; their vectors are pending (embedding: EmbeddingService answered UNAVAILABLE"
    )
    added = scoring.AddInteractions(
        scoring_pb2.AddInteractionsRequest(interactions=[common_pb2.Interaction(user_id="u", item_id="2", value=1)]),
        timeout=10,
    )
    assert added.added == 1
