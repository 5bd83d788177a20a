"""How ScoringService grows with the catalogue and the interactions, on synthetic data.

The data: items in topics (power-law popularity within and across topics, a text of topic
words each), users with power-law activity (weights 1/rank^exponent: 0.5, and 1.0 for the
heavy-user size, whose heaviest user has over 10^5 interactions) who mostly pick items of
their three favourite topics; ``n_interactions`` drawn that way, spread over a year. Sizes:
10^4 items with 10^5 and 10^6 interactions, 10^5 items with 10^6, 10^6 items with 2x10^6
(heavy users) and with 10^7 (``--skip-largest`` leaves the last out and says so).

Requests come as a real app's do: users drawn in proportion to their activity, so the heavy
users who send most requests are met. RankItems p99 and recall are reported for all
requests and, apart, for requests of the heaviest 1% of users; each user's first request
after the fit (when the replica gathers their history) is timed apart, before the others.

For each size a ScoringService replica is started in its own process with the data as CSV
files (loaded a chunk at a time), and for each strategy: the fit (FitConfiguration's seconds),
the replica's peak memory during fit and ranking (VmHWM, reset before each strategy; the
child process that fits als and item_knn apart reported separately), RankItems p50/p99 over
gRPC next to an echo (the health Check) on the same server in the same run, and for the
strategies ranked through an approximate index, its recall@10 against the exact top 10
(RankItemsRequest.exact) and the exact path's latency. Memory per interaction: the loaded
replica's RSS less an empty replica's, over the interactions. The strategies that read
EmbeddingService's vectors (content, two_tower, hybrid) run where the catalogue is at most
``--max-encoded-items``: encoding more texts on this CPU takes too long, and the JSON says so.
Also: faiss IVF against faiss HNSW on the als item vectors of the 10^5-item size (build
time, latency, recall), which is why the service uses IVF.

    .venv/bin/python -m bench.scale [--skip-largest] [--calls 300] > scale.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.common import memory_of, percentiles_ms, print_json, start_child_service
from rectune.v1 import common_pb2, scoring_pb2, scoring_pb2_grpc
from services.common.wait_healthy import wait_serving

# (items, interactions, activity exponent)
SIZES = (
    (10_000, 100_000, 0.5),
    (10_000, 1_000_000, 0.5),
    (100_000, 1_000_000, 0.5),
    (1_000_000, 2_000_000, 1.0),
    (1_000_000, 10_000_000, 0.5),
)
HEAVY_SHARE = 0.01  # the heaviest 1% of users, reported apart
DATA_ONLY = ("popularity", "item_knn", "als")
ENCODED = ("content", "two_tower", "hybrid")
ANN_STRATEGIES = ("als", "content", "two_tower")
K = 10
YEAR = 365 * 86400.0
TOPIC_WORDS = 6


# -- synthetic data -------------------------------------------------------------------------------


def power_law(count: int, exponent: float, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """Weights 1/rank^exponent in a random order, summing to 1."""
    weights = 1.0 / np.arange(1, count + 1) ** exponent
    rng.shuffle(weights)
    normalised: npt.NDArray[np.float64] = weights / weights.sum()
    return normalised


def synthetic(n_items: int, n_interactions: int, activity_exponent: float = 0.5, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    n_users = max(1000, n_interactions // 20)
    n_topics = max(20, int(math.sqrt(n_items) / 2))
    item_topic = rng.integers(n_topics, size=n_items)
    popularity = power_law(n_items, 0.9, rng)
    favourites = rng.integers(n_topics, size=(n_users, 3))
    users = rng.choice(n_users, size=n_interactions, p=power_law(n_users, activity_exponent, rng))
    topics = np.where(
        rng.random(n_interactions) < 0.8,
        favourites[users, rng.integers(3, size=n_interactions)],
        rng.integers(n_topics, size=n_interactions),
    )
    items = np.zeros(n_interactions, dtype=np.int64)
    order = np.argsort(item_topic, kind="stable")
    bounds = np.searchsorted(item_topic[order], np.arange(n_topics + 1))
    for topic in range(n_topics):
        members = order[bounds[topic] : bounds[topic + 1]]
        picked = np.flatnonzero(topics == topic)
        if len(members) == 0 or len(picked) == 0:
            continue
        cumulative = np.cumsum(popularity[members])
        draws = rng.random(len(picked)) * cumulative[-1]
        items[picked] = members[np.minimum(np.searchsorted(cumulative, draws), len(members) - 1)]
    times = 1.6e9 + np.sort(rng.random(n_interactions)) * YEAR
    return {
        "n_users": n_users,
        "n_topics": n_topics,
        "item_topic": item_topic,
        "users": users,
        "items": items,
        "times": times,
    }


def write_csv(data: dict[str, Any], folder: Path) -> tuple[Path, Path]:
    items_csv, interactions_csv = folder / "items.csv", folder / "interactions.csv"
    with items_csv.open("w") as out:
        out.write("item_id,text\n")
        for item, topic in enumerate(data["item_topic"].tolist()):
            words = " ".join(f"t{topic}w{n}" for n in range(TOPIC_WORDS))
            out.write(f"i{item},item {item} about {words}\n")
    with interactions_csv.open("w") as out:
        out.write("user_id,item_id,rating,timestamp\n")
        step = 1_000_000
        for start in range(0, len(data["users"]), step):
            users = data["users"][start : start + step].tolist()
            items = data["items"][start : start + step].tolist()
            times = data["times"][start : start + step].tolist()
            out.writelines(f"u{u},i{i},1,{t:.0f}\n" for u, i, t in zip(users, items, times, strict=True))
    return items_csv, interactions_csv


# -- the replica's memory ------------------------------------------------------------------------


def reset_peaks(pids: list[int]) -> None:
    """VmHWM back to the current RSS (Linux: 5 written to clear_refs)."""
    for pid in pids:
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/clear_refs").write_text("5")


def children(pid: int) -> list[int]:
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@contextlib.contextmanager
def replica(*flags: str) -> Iterator[tuple[Any, str]]:
    process, address = start_child_service("scoring", *flags)
    try:
        assert wait_serving([address], 3600)[address] == "SERVING"
        yield process, address
    finally:
        process.terminate()
        process.wait(timeout=120)


def empty_replica_rss(folder: Path) -> int:
    with replica("--embedding-address", "127.0.0.1:9", "--database-url", f"sqlite:///{folder}/empty.db") as (
        process,
        _,
    ):
        time.sleep(1.0)
        return memory_of(process.pid, "VmRSS")


# -- measurements ----------------------------------------------------------------------------------


def timed(call: Any, calls: int, warm_up: bool = True) -> dict[str, float]:
    if warm_up:
        call(0)
    seconds = []
    for n in range(calls):
        started = time.perf_counter()
        call(n)
        seconds.append(time.perf_counter() - started)
    return percentiles_ms(seconds)


def rank_request(strategy: str, user: str, exact: bool = False) -> scoring_pb2.RankItemsRequest:
    return scoring_pb2.RankItemsRequest(
        configuration=common_pb2.Configuration(strategy=strategy), user_id=user, k=K, exact=exact
    )


@dataclass(frozen=True)
class Requests:
    """Users to send RankItems for, drawn in proportion to activity: all, and the heaviest 1%."""

    everyone: list[str]
    heaviest: list[str]
    heaviest_interactions: list[int]  # of the heaviest users, most active first


def draw_requests(data: dict[str, Any], count: int) -> Requests:
    rng = np.random.default_rng(1)
    activity = np.bincount(data["users"], minlength=data["n_users"])
    by_activity = np.argsort(-activity, kind="stable")
    heaviest = by_activity[: max(1, int(HEAVY_SHARE * np.count_nonzero(activity)))]
    # One interaction drawn at random names its user: users in proportion to activity.
    everyone = rng.choice(data["users"], count)
    heavy = rng.choice(heaviest, count, p=activity[heaviest] / activity[heaviest].sum())
    return Requests(
        [f"u{u}" for u in everyone.tolist()], [f"u{u}" for u in heavy.tolist()], activity[heaviest].tolist()
    )


def measure_strategy(
    stub: scoring_pb2_grpc.ScoringServiceStub, health: Any, pid: int, strategy: str, requests: Requests, calls: int
) -> dict[str, Any]:
    processes = [pid, *children(pid)]
    reset_peaks(processes)
    started = time.perf_counter()
    fit = stub.FitConfiguration(
        scoring_pb2.FitConfigurationRequest(configuration=common_pb2.Configuration(strategy=strategy), wait=True),
        timeout=7200,
    )
    fit_wall = time.perf_counter() - started
    if fit.state != scoring_pb2.FIT_STATE_READY:
        return {"fit_failed": fit.error or scoring_pb2.FitState.Name(fit.state), "fit_wall_seconds": round(fit_wall, 2)}
    fit_children = children(pid)
    child_peak = max((memory_of(child, "VmHWM") for child in fit_children), default=0)
    everyone, heaviest = requests.everyone, requests.heaviest
    first = first_requests(stub, strategy, everyone[:calls] + heaviest[:calls])
    rank = timed(lambda n: stub.RankItems(rank_request(strategy, everyone[n % len(everyone)]), timeout=600), calls)
    heavy = timed(lambda n: stub.RankItems(rank_request(strategy, heaviest[n % len(heaviest)]), timeout=600), calls)
    echo = timed(lambda _n: health.Check(health_pb2.HealthCheckRequest(), timeout=10), calls)
    result: dict[str, Any] = {
        "fit_seconds": round(fit.fit_duration.ToTimedelta().total_seconds(), 2),
        "fit_wall_seconds": round(fit_wall, 2),
        "replica_peak_rss_bytes": memory_of(pid, "VmHWM"),
        "fit_child_peak_rss_bytes": child_peak,
        "replica_rss_after_bytes": memory_of(pid, "VmRSS"),
        "rank_first_request_per_user": first,
        "rank": rank,
        "rank_heaviest_1pct": heavy,
        "echo": echo,
        "rank_p99_over_echo_p99": round(rank["p99_ms"] / echo["p99_ms"], 2),
        "rank_heaviest_1pct_p99_over_echo_p99": round(heavy["p99_ms"] / echo["p99_ms"], 2),
    }
    if strategy in ANN_STRATEGIES:
        result.update(index_recall(stub, strategy, everyone, calls))
        heavy_recall = index_recall(stub, strategy, heaviest, calls)
        result["recall_at_10_vs_exact_heaviest_1pct"] = heavy_recall["recall_at_10_vs_exact"]
        result["exact_rank_heaviest_1pct"] = heavy_recall["exact_rank"]
    return result


def first_requests(stub: scoring_pb2_grpc.ScoringServiceStub, strategy: str, users: list[str]) -> dict[str, Any]:
    """One request per distinct user among those about to be timed: a user's first request
    after a fit gathers their history (kept for the next ones when it is long), as on a
    replica just started; the timed requests then measure it serving users it has seen."""
    distinct = list(dict.fromkeys(users))
    first = timed(lambda n: stub.RankItems(rank_request(strategy, distinct[n]), timeout=600), len(distinct), False)
    return {"users": len(distinct), **first}


def index_recall(
    stub: scoring_pb2_grpc.ScoringServiceStub, strategy: str, users: list[str], calls: int
) -> dict[str, Any]:
    """recall@10 of the served lists against the exact top 10, and the exact path's latency
    (equal lists, recall 1, below the index threshold)."""
    sample = users[: min(200, len(users))]
    recalls = []
    for user in sample:
        served = {s.item_id for s in stub.RankItems(rank_request(strategy, user), timeout=600).items}
        exact = {s.item_id for s in stub.RankItems(rank_request(strategy, user, exact=True), timeout=600).items}
        recalls.append(len(served & exact) / len(exact))
    exact_latency = timed(
        lambda n: stub.RankItems(rank_request(strategy, users[n % len(users)], exact=True), timeout=600),
        min(calls, 100),
    )
    return {"recall_at_10_vs_exact": round(float(np.mean(recalls)), 4), "exact_rank": exact_latency}


def measure_size(
    size: tuple[int, int, float], folder: Path, embedding_address: str, args: argparse.Namespace, empty_rss: int
) -> dict[str, Any]:
    n_items, n_interactions, activity_exponent = size
    started = time.perf_counter()
    data = synthetic(n_items, n_interactions, activity_exponent)
    requests = draw_requests(data, 2000)
    items_csv, interactions_csv = write_csv(data, folder)
    strategies = list(DATA_ONLY) + (list(ENCODED) if n_items <= args.max_encoded_items else [])
    if args.strategies:
        strategies = [name for name in strategies if name in args.strategies.split(",")]
    result: dict[str, Any] = {
        "items": n_items,
        "interactions": n_interactions,
        "users": data["n_users"],
        "topics": data["n_topics"],
        "activity_exponent": activity_exponent,
        "heaviest_users": len(requests.heaviest_interactions),
        "heaviest_user_interactions": requests.heaviest_interactions[0],
        "heaviest_1pct_least_interactions": requests.heaviest_interactions[-1],
        "data_seconds": round(time.perf_counter() - started, 1),
        "strategies": {},
    }
    if n_items > args.max_encoded_items:
        result["skipped"] = {
            name: f"encoding {n_items:,} item texts with the CPU encoder exceeds --max-encoded-items"
            for name in ENCODED
        }
    flags = (
        "--items-csv", str(items_csv), "--interactions-csv", str(interactions_csv),
        "--embedding-address", embedding_address, "--database-url", f"sqlite:///{folder}/scoring-{n_items}.db",
        "--fitted-cache-bytes", str(16 * 1024**3), "--refit-check-seconds", "0",
        "--sync-fit-max-interactions", str(10**9), "--max-fit-seconds", str(args.max_fit_seconds),
    )  # fmt: skip
    load_started = time.perf_counter()
    with replica(*flags) as (process, address):
        result["load_seconds"] = round(time.perf_counter() - load_started, 1)
        loaded = memory_of(process.pid, "VmRSS")
        result["replica_rss_loaded_bytes"] = loaded
        result["bytes_per_interaction"] = round((loaded - empty_rss) / n_interactions, 1)
        with grpc.insecure_channel(address) as channel:
            stub = scoring_pb2_grpc.ScoringServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            for strategy in strategies:
                print(f"# {n_items} items, {n_interactions} interactions: {strategy}", flush=True, file=sys.stderr)
                result["strategies"][strategy] = measure_strategy(
                    stub, health, process.pid, strategy, requests, args.calls
                )
    return result


def compare_indexes(n_items: int, n_interactions: int) -> dict[str, Any]:
    """faiss IVF against faiss HNSW on ALS item vectors fitted here (the service's defaults)."""
    import faiss
    import scipy.sparse as sp
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    from services.scoring.core.retrieval import DEFAULT_SCAN_SHARE, ApproximateIndex, _complete_norms

    data = synthetic(n_items, n_interactions)
    matrix = sp.csr_matrix(
        (np.ones(len(data["users"]), np.float32), (data["users"], data["items"])), shape=(data["n_users"], n_items)
    )
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(factors=64, regularization=0.05, alpha=2.0, iterations=15, random_state=42)
        model.fit(matrix, show_progress=False)
    items = np.asarray(model.item_factors, dtype=np.float32)
    queries = np.asarray(model.user_factors, dtype=np.float32)[np.random.default_rng(2).choice(data["n_users"], 300)]
    exact = [set(np.argpartition(-(items @ q), K)[:K].tolist()) for q in queries]
    result: dict[str, Any] = {"items": n_items, "interactions": n_interactions}

    def score(search: Any) -> dict[str, float]:
        latencies, recalls = [], []
        for query, truth in zip(queries, exact, strict=True):
            started = time.perf_counter()
            found = search(query)
            latencies.append(time.perf_counter() - started)
            recalls.append(len(set(found) & truth) / K)
        return {**percentiles_ms(latencies), "recall_at_10": round(float(np.mean(recalls)), 4)}

    started = time.perf_counter()
    # "faiss_ivf": the service's own index (retrieval.py: the exact head by norm, IVF over the
    # rest). Its candidates are what the service scores exactly, so the top 10 of them hold
    # exactly the true top-10 items among them: their share is the served lists' recall.
    ivf = ApproximateIndex(items, DEFAULT_SCAN_SHARE)
    result["faiss_ivf"] = {
        "build_seconds": round(time.perf_counter() - started, 2),
        "cells": ivf.lists,
        "cells_scanned": 0 if ivf.index is None else int(ivf.index.nprobe),
        "exact_head_items": len(ivf.head),
    }
    result["faiss_ivf"].update(score(lambda q: ivf.search(q, K, np.zeros(0, dtype=np.int64)).tolist()))
    completed = _complete_norms(items)
    started = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(completed.shape[1], 32)
    hnsw.hnsw.efConstruction = 80
    hnsw.add(completed)
    build = round(time.perf_counter() - started, 2)
    hnsw.hnsw.efSearch = 128

    def hnsw_search(query: npt.NDArray[np.float32]) -> list[int]:
        padded = np.zeros((1, completed.shape[1]), np.float32)
        padded[0, :-1] = query
        return hnsw.search(padded, K)[1][0].tolist()  # type: ignore[no-any-return]

    result["faiss_hnsw_m32_ef128"] = {"build_seconds": build, **score(hnsw_search)}
    result["exact_numpy"] = score(lambda q: np.argpartition(-(items @ q), K)[:K].tolist())
    return result


def parse_size(text: str) -> tuple[int, int, float]:
    """ITEMSxINTERACTIONS[xEXPONENT], e.g. 1000000x2000000x1.0 (the exponent defaults to 0.5)."""
    parts = text.split("x")
    return int(parts[0]), int(parts[1]), float(parts[2]) if len(parts) > 2 else 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300, help="RankItems and echo calls per measurement")
    parser.add_argument("--skip-largest", action="store_true", help="leave out 10^6 items with 10^7 interactions")
    parser.add_argument("--max-encoded-items", type=int, default=10_000)
    parser.add_argument("--strategies", default="", help="only these, e.g. als (default: every one that runs)")
    parser.add_argument("--max-fit-seconds", type=float, default=300.0, help="two_tower's fit budget")
    parser.add_argument("--partial", default="/tmp/rectune-bench-scale.json", help="results so far, after each size")
    parser.add_argument(
        "--sizes", default="", help="only these sizes, ITEMSxINTERACTIONS[xACTIVITY_EXPONENT], e.g. 1000000x2000000x1.0"
    )
    args = parser.parse_args()
    sizes = [parse_size(size) for size in args.sizes.split(",")] if args.sizes else list(SIZES)
    result: dict[str, Any] = {
        "benchmark": "scale",
        "k": K,
        "machine": {"cpus": psutil.cpu_count(), "memory_bytes": psutil.virtual_memory().total},
    }
    if args.skip_largest:
        sizes = [s for s in sizes if s != SIZES[-1]]
        result["skipped_sizes"] = [f"{SIZES[-1][0]} items x {SIZES[-1][1]} interactions (--skip-largest)"]
    with tempfile.TemporaryDirectory() as folder:
        embedding, embedding_address = start_child_service("embedding")
        try:
            assert wait_serving([embedding_address], 300)[embedding_address] == "SERVING"
            result["empty_replica_rss_bytes"] = empty_replica_rss(Path(folder))
            result["index_choice"] = compare_indexes(100_000, 1_000_000)
            result["sizes"] = []
            for size in sizes:
                size_folder = Path(folder) / "x".join(str(n) for n in size)
                size_folder.mkdir()
                result["sizes"].append(
                    measure_size(size, size_folder, embedding_address, args, result["empty_replica_rss_bytes"])
                )
                # What is measured so far survives a run that dies later (the largest size).
                Path(args.partial).write_text(json.dumps(result, indent=2))
        finally:
            embedding.terminate()
            embedding.wait()
    print_json(result)


if __name__ == "__main__":
    main()
