"""ScoringService quality and latency, in one run on one split of MovieLens 100K.

- NDCG@10 and Recall@10 of each strategy at its defaults, from the service's
  EvaluateConfiguration (last 20% of each user's interactions by time held out);
- two peers computed here, independently of the service, on the same split: the
  ``implicit`` library's ALS at the service's default parameters (through implicit's own
  recommend), and an item-kNN written in plain numpy/scipy; the ALS peer must agree
  with the service's ``als`` to 1e-6;
- RankItems p50/p99 over gRPC at 1,682 items and at 100,000 synthetic items, each next to
  an echo call (the standard health Check, a near-empty round trip to the same server)
  measured in the same run.
Prints JSON.

    .venv/bin/python -m bench.scoring [--calls 300]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
import scipy.sparse as sp
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from bench.common import DATA, percentiles_ms, print_json, start_child_service
from rectune.datasets import load_movielens_atomic
from rectune.v1 import common_pb2, scoring_pb2, scoring_pb2_grpc
from services.common.wait_healthy import wait_serving
from services.scoring.core.data import ScoringData
from services.scoring.core.ranking import time_split

K = 10
HOLDOUT = 0.2
ALS_DEFAULTS = {"factors": 64, "regularization": 0.05, "alpha": 2.0, "iterations": 15}
ALS_SEED = 42


def movielens_split() -> Any:
    items, interactions = load_movielens_atomic(DATA)
    data = ScoringData()
    data.upsert_items(items)
    data.add_interactions(interactions)
    return time_split(data.snapshot(), HOLDOUT)


def peer_metrics(split: Any, recommend: Callable[[int, set[int]], list[int]]) -> dict[str, float]:
    """NDCG@K and Recall@K written out here, with binary relevance of held-out items."""
    train_items: dict[int, set[int]] = {}
    for user, item in zip(split.train.users.tolist(), split.train.items.tolist(), strict=True):
        train_items.setdefault(user, set()).add(item)
    ndcgs, recalls = [], []
    for user in sorted(split.held_out):
        seen = train_items.get(user, set())
        relevant = set(split.held_out[user].tolist()) - seen
        if not relevant:
            continue
        ranked = recommend(user, seen)[:K]
        dcg = sum(1 / math.log2(r + 2) for r, item in enumerate(ranked) if item in relevant)
        ideal = sum(1 / math.log2(r + 2) for r in range(min(K, len(relevant))))
        ndcgs.append(dcg / ideal)
        recalls.append(sum(item in relevant for item in ranked) / len(relevant))
    return {"ndcg": float(np.mean(ndcgs)), "recall": float(np.mean(recalls)), "users": len(ndcgs)}


def implicit_als_peer(split: Any) -> dict[str, float]:
    train = split.train
    matrix = sp.csr_matrix(
        (train.values.astype(np.float32), (train.users, train.items)), shape=(train.n_users, train.n_items)
    )
    matrix.sum_duplicates()
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(random_state=ALS_SEED, calculate_training_loss=False, **ALS_DEFAULTS)
        model.fit(matrix, show_progress=False)

    def recommend(user: int, _seen: set[int]) -> list[int]:
        ids, _ = model.recommend(user, matrix[user], N=K, filter_already_liked_items=True)
        return [int(i) for i in ids]

    return peer_metrics(split, recommend)


def numpy_item_knn_peer(split: Any) -> dict[str, float]:
    """Plain item-item cosine over the binary matrix, all neighbours, no shrinkage."""
    train = split.train
    binary = sp.csr_matrix(
        (np.ones(len(train.users)), (train.users, train.items)), shape=(train.n_users, train.n_items)
    )
    binary.data[:] = 1.0
    norms = np.sqrt(np.asarray(binary.sum(axis=0)).ravel()) + 1e-12
    similarity = (binary.T @ binary).toarray() / np.outer(norms, norms)
    np.fill_diagonal(similarity, 0.0)

    def recommend(user: int, seen: set[int]) -> list[int]:
        scores = similarity[sorted(seen)].sum(axis=0) if seen else np.zeros(train.n_items)
        scores[list(seen)] = -np.inf
        return [int(i) for i in np.argsort(-scores, kind="stable")[:K]]

    return peer_metrics(split, recommend)


def configuration(strategy: str) -> common_pb2.Configuration:
    return common_pb2.Configuration(strategy=strategy)


def latencies(call: Callable[[], object], calls: int) -> dict[str, float]:
    call()  # warm-up (fits the configuration on first use)
    seconds = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return percentiles_ms(seconds)


def rank_vs_echo(address: str, users: list[str], calls: int) -> dict[str, Any]:
    with grpc.insecure_channel(address) as channel:
        scoring = scoring_pb2_grpc.ScoringServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        cursor = iter(range(10**9))

        def rank() -> None:
            user = users[next(cursor) % len(users)]
            scoring.RankItems(
                scoring_pb2.RankItemsRequest(configuration=configuration("als"), user_id=user, k=K), timeout=600
            )

        rank_ms = latencies(rank, calls)
        echo_ms = latencies(lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=10), calls)
    return {"rank": rank_ms, "echo": echo_ms, "rank_p99_over_echo_p99": round(rank_ms["p99_ms"] / echo_ms["p99_ms"], 2)}


def load_synthetic(address: str, n_items: int, n_users: int, per_user: int) -> list[str]:
    """A catalogue of n_items and power-law interactions, sent through the RPCs."""
    rng = np.random.default_rng(0)
    with grpc.insecure_channel(address) as channel:
        stub = scoring_pb2_grpc.ScoringServiceStub(channel)
        for start in range(0, n_items, 5000):
            items = [
                scoring_pb2.Item(item_id=f"s{i}", text=f"synthetic item {i}")
                for i in range(start, min(start + 5000, n_items))
            ]
            stub.UpsertItems(scoring_pb2.UpsertItemsRequest(items=items, defer_embedding=True), timeout=60)
        popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
        popularity /= popularity.sum()
        for start in range(0, n_users, 200):
            batch = []
            for user in range(start, min(start + 200, n_users)):
                for item in rng.choice(n_items, size=per_user, replace=False, p=popularity):
                    batch.append(
                        common_pb2.Interaction(
                            user_id=f"su{user}", item_id=f"s{item}", value=1.0, time=Timestamp(seconds=1)
                        )
                    )
            stub.AddInteractions(scoring_pb2.AddInteractionsRequest(interactions=batch), timeout=60)
    return [f"su{u}" for u in range(n_users)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300, help="RankItems and echo calls per measurement")
    parser.add_argument("--synthetic-items", type=int, default=100_000)
    args = parser.parse_args()
    result: dict[str, Any] = {"benchmark": "scoring", "k": K, "holdout_fraction": HOLDOUT}

    split = movielens_split()
    result["peers"] = {"implicit_als": implicit_als_peer(split), "numpy_item_knn": numpy_item_knn_peer(split)}

    embedding, embedding_address = start_child_service("embedding")
    vectors_db = tempfile.TemporaryDirectory()
    process, address = start_child_service(
        "scoring",
        "--embedding-address",
        embedding_address,
        "--dataset",
        str(DATA),
        "--database-url",
        f"sqlite:///{vectors_db.name}/vectors.db",
    )
    try:
        assert wait_serving([address, embedding_address], 300)[address] == "SERVING"
        with grpc.insecure_channel(address) as channel:
            stub = scoring_pb2_grpc.ScoringServiceStub(channel)
            strategies = [
                s.strategy
                for s in stub.DescribeSearchSpace(scoring_pb2.DescribeSearchSpaceRequest(), timeout=10).strategies
            ]
            result["service"] = {}
            for strategy in strategies:
                metrics = stub.EvaluateConfiguration(
                    scoring_pb2.EvaluateConfigurationRequest(
                        configuration=configuration(strategy), k=K, holdout_fraction=HOLDOUT
                    ),
                    timeout=600,
                ).metrics
                result["service"][strategy] = {
                    "ndcg": metrics.ndcg,
                    "recall": metrics.recall,
                    "users": metrics.users_evaluated,
                }
        users = sorted({str(u) for u in range(1, 944)})
        result["latency_1682_items"] = rank_vs_echo(address, users, args.calls)
    finally:
        for child in (process, embedding):
            child.terminate()
            child.wait()
        vectors_db.cleanup()

    als, peer = result["service"]["als"], result["peers"]["implicit_als"]
    result["als_agreement"] = {
        "ndcg_difference": abs(als["ndcg"] - peer["ndcg"]),
        "recall_difference": abs(als["recall"] - peer["recall"]),
        "within_1e-6": abs(als["ndcg"] - peer["ndcg"]) <= 1e-6 and abs(als["recall"] - peer["recall"]) <= 1e-6,
    }

    synthetic_db = tempfile.TemporaryDirectory()
    process, address = start_child_service(
        "scoring", "--embedding-address", "127.0.0.1:9", "--database-url", f"sqlite:///{synthetic_db.name}/scoring.db"
    )
    try:
        assert wait_serving([address], 120)[address] == "SERVING"
        users = load_synthetic(address, args.synthetic_items, n_users=5000, per_user=40)
        result[f"latency_{args.synthetic_items}_items"] = rank_vs_echo(address, users, args.calls)
    finally:
        process.terminate()
        process.wait()
        synthetic_db.cleanup()
    result["acceptance"] = {"rank_p99_over_echo_p99_at_1682_max": 5, "als_agreement": 1e-6}
    print_json(result)


if __name__ == "__main__":
    main()
