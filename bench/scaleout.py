"""Scale-out of ScoringService on one machine, as ratios measured in the same run (issue #30).

1. Screens per hour with 2 training replicas (``--role train``) against 1: the same list of
   configurations (als, item_knn, ease at several settings) screened by EvaluateConfiguration
   through one channel balanced over the trainers (round_robin), as many at once as there are
   trainers (the tuner's --parallel-screens). MovieLens 100K in every replica.
2. RankItems p99 of a serving replica (``--role serve``) while a training replica fits
   two_tower, against its idle p99; and, for contrast, the same with the fit inside the replica
   that serves (``--role all``, one replica, as before roles). Requests drawn in proportion to
   each user's activity (heavy users ask most), from a fitted als model. EmbeddingService runs
   in a process of its own (as in a deployment), and the item vectors are made and stored
   before the measurement (a content fit), so what runs meanwhile is the training alone. The
   trainer shares the machine, so it fits with one core fewer than the machine has
   (``--fit-threads``; in Kubernetes it is the pod's CPU limit) and runs at niceness 10.
   Measured twice: with every process free to run on any core (a node's default CPU
   manager), and with the serving replica (and this client) on core 0 and the trainer and
   EmbeddingService on the other cores, as the kubelet's static CPU manager places pods of
   Guaranteed QoS that ask for whole CPUs (deploy/k8s/components/dedicated-cores). Idle and
   busy requests alternate in blocks over the same minutes (the trainer stopped with SIGSTOP
   for the idle ones), since this shared host's speed drifts by more than the effect measured.

    .venv/bin/python -m bench.scaleout [--screens 36] [--requests 3000] [--only serving]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import grpc
import numpy as np
import psutil

from bench.common import DATA, logs_to_stderr, percentiles_ms, print_json, start_child_service
from rectune.datasets import load_movielens_atomic
from rectune.domain.configuration import Configuration
from rectune.v1 import common_pb2, scoring_pb2, scoring_pb2_grpc
from services.common.clients import make_channel
from services.common.convert import configuration_message
from services.common.wait_healthy import wait_serving

K = 10
# A trainer on the same machine as a serving replica leaves it a core.
CO_LOCATED_FIT_THREADS = max(1, (os.cpu_count() or 2) - 1)
# Dedicated cores: serving (and the client measuring it) on the first, training on the rest.
SERVING_CPUS = frozenset({0})
TRAINING_CPUS = frozenset(range(1, os.cpu_count() or 1))


def screened(count: int) -> list[tuple[str, Mapping[str, float]]]:
    """``count`` distinct configurations of moderate cost (als, item_knn, ease in turn), the same
    for every trainer count: distinct, since a replica remembers the fits it screened."""
    made: list[tuple[str, Mapping[str, float]]] = []
    for n in range(count):
        step = n // 3
        kinds: list[tuple[str, Mapping[str, float]]] = [
            ("als", {"factors": 16 + 2 * step, "iterations": 10}),
            ("item_knn", {"neighbours": 20 + 5 * step}),
            ("ease", {"l2": 50.0 + 25.0 * step}),
        ]
        made.append(kinds[n % 3])
    return made


TWO_TOWER = ("two_tower", {"epochs": 12})
SERVED = ("als", {"factors": 32, "iterations": 8})
BLOCK = 250  # requests per idle or busy block when the two alternate


def configuration(strategy: str, params: Mapping[str, float]) -> common_pb2.Configuration:
    return configuration_message(Configuration(strategy, dict(params)))


class Replica(NamedTuple):
    address: str
    pid: int


@contextmanager
def replicas(count: int, *flags: str, cpus: Collection[int] = ()) -> Iterator[list[Replica]]:
    """``count`` ScoringService processes with MovieLens 100K (on ``cpus`` alone when given)."""
    every_flag = ("--dataset", str(DATA), "--refit-check-seconds", "0", *flags)
    started = []
    try:
        for _ in range(count):
            started.append(start_child_service("scoring", *every_flag, cpus=cpus))
        addresses = [address for _, address in started]
        assert set(wait_serving(addresses, timeout_seconds=180).values()) == {"SERVING"}
        yield [Replica(address, process.pid) for process, address in started]
    finally:
        for process, _ in started:
            process.kill()
            process.wait()


def screens_per_hour(trainers: int, screens: int) -> float:
    with replicas(trainers, "--role", "train", "--embedding-address", "127.0.0.1:9") as trainers_started:
        stub = scoring_pb2_grpc.ScoringServiceStub(make_channel(",".join(r.address for r in trainers_started)))
        wanted = screened(screens)
        cursor, lock = iter(wanted), threading.Lock()

        def screener() -> None:
            while True:
                with lock:
                    picked = next(cursor, None)
                if picked is None:
                    return
                request = scoring_pb2.EvaluateConfigurationRequest(configuration=configuration(*picked), k=K)
                stub.EvaluateConfiguration(request, timeout=600)

        started = time.perf_counter()
        threads = [threading.Thread(target=screener) for _ in range(trainers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return screens / (time.perf_counter() - started) * 3600


def activity_weighted_users(count: int, seed: int = 0) -> list[str]:
    """Users drawn in proportion to their interactions: the request mix a real app sends."""
    _, interactions = load_movielens_atomic(DATA)
    users, counts = np.unique([i.user_id for i in interactions], return_counts=True)
    rng = np.random.default_rng(seed)
    return [str(u) for u in rng.choice(users, size=count, p=counts / counts.sum())]


def rank_latencies(stub: Any, users: Sequence[str]) -> list[float]:
    message = configuration(*SERVED)
    seconds = []
    for user in users:
        started = time.perf_counter()
        stub.RankItems(scoring_pb2.RankItemsRequest(configuration=message, user_id=user, k=K), timeout=30)
        seconds.append(time.perf_counter() - started)
    return seconds


def fitting(stub: Any) -> bool:
    """Whether the two_tower fit is still running on the replica ``stub`` reaches. Asking is
    a FitConfiguration that does not wait: the first time, it starts the fit."""
    request = scoring_pb2.FitConfigurationRequest(configuration=configuration(*TWO_TOWER), wait=False)
    state = stub.FitConfiguration(request, timeout=30).state
    return bool(state in (scoring_pb2.FIT_STATE_PENDING, scoring_pb2.FIT_STATE_RUNNING))


def p99_during_fit(server: Any, trainer: Any, users: Sequence[str], trainer_pid: int | None = None) -> dict[str, Any]:
    """Idle p99 against p99 while the trainer fits two_tower (only requests made during the fit).

    With ``trainer_pid`` (a replica of its own), idle and busy requests alternate in blocks over
    the same minutes: the trainer's processes are stopped (SIGSTOP, the fit waits) for each idle
    block and continued for each busy one, so that the drift of a shared host falls on both
    alike. Without (the fit inside the serving replica): idle first, then during the fit."""
    for warm_up in (SERVED, ("content", {})):  # the served model, and the stored item vectors
        request = scoring_pb2.FitConfigurationRequest(configuration=configuration(*warm_up), wait=True)
        trainer.FitConfiguration(request, timeout=600)
    rank_latencies(server, users[:100])  # loaded and warm
    if trainer_pid is None:
        idle = rank_latencies(server, users)
        assert fitting(trainer), "the two_tower fit ended before it could be measured against"
        during = busy_latencies(server, trainer, users)
    else:
        assert fitting(trainer), "the two_tower fit ended before it could be measured against"
        idle, during = alternating_latencies(server, trainer, users, trainer_pid)
    busy_to_the_end = fitting(trainer)
    return {
        "idle": percentiles_ms(idle),
        "during_fit": percentiles_ms(during),
        "requests_during_fit": len(during),
        "idle_and_busy_alternate": trainer_pid is not None,
        "fit_still_running_at_the_end": busy_to_the_end,
        "p99_ratio": round(float(np.percentile(during, 99) / np.percentile(idle, 99)), 2),
    }


def busy_latencies(server: Any, trainer: Any, users: Sequence[str]) -> list[float]:
    """Up to len(users) requests while the fit runs, looking every 50 whether it still does."""
    during: list[float] = []
    for start in range(0, 10 * len(users), 50):
        during += rank_latencies(server, users[start % len(users) :][:50])
        if len(during) >= len(users) or not fitting(trainer):
            break
    return during


def alternating_latencies(
    server: Any, trainer: Any, users: Sequence[str], trainer_pid: int
) -> tuple[list[float], list[float]]:
    idle: list[float] = []
    during: list[float] = []
    for start in range(0, len(users), BLOCK):
        block = users[start : start + BLOCK]
        with stopped(trainer_pid):
            time.sleep(0.2)  # the trainer's cores settle
            idle += rank_latencies(server, block)
        during += rank_latencies(server, block)
        if not fitting(trainer):
            break
    return idle, during


@contextmanager
def stopped(pid: int) -> Iterator[None]:
    """The process ``pid`` and its children stopped (SIGSTOP) for a while, then continued."""
    parent = psutil.Process(pid)
    processes = [parent, *parent.children(recursive=True)]
    for process in processes:
        process.suspend()
    try:
        yield
    finally:
        for process in processes:
            process.resume()


def serving_under_training(folder: Path, requests: int) -> dict[str, Any]:
    users = activity_weighted_users(requests)
    results = {"serve_and_train_replicas": split_roles(folder / "shared", users)}
    if TRAINING_CPUS:
        with this_process_on(SERVING_CPUS):
            results["serve_and_train_on_dedicated_cores"] = split_roles(folder / "dedicated", users, dedicated=True)
    with embedding_service() as embedding:
        alone = ("--embedding-address", embedding, "--database-url", f"sqlite:///{folder / 'all.db'}")
        with replicas(1, "--role", "all", *alone) as (both,):
            results["one_replica_serving_and_fitting"] = p99_during_fit(stub_of(both), stub_of(both), users)
    return results


def split_roles(folder: Path, users: Sequence[str], dedicated: bool = False) -> dict[str, Any]:
    """A serving and a training replica sharing a database; with ``dedicated``, serving on
    SERVING_CPUS and training (with EmbeddingService, which it calls) on TRAINING_CPUS."""
    folder.mkdir()
    serving_cpus, training_cpus = (SERVING_CPUS, TRAINING_CPUS) if dedicated else ((), ())
    with embedding_service(training_cpus) as embedding:
        peer = ("--embedding-address", embedding, "--database-url", f"sqlite:///{folder / 'split.db'}")
        fit_threads = ("--fit-threads", str(len(training_cpus) or CO_LOCATED_FIT_THREADS))
        with (
            replicas(1, "--role", "serve", *peer, cpus=serving_cpus) as (server,),
            replicas(1, "--role", "train", *fit_threads, *peer, cpus=training_cpus) as (trainer,),
        ):
            return p99_during_fit(stub_of(server), stub_of(trainer), users, trainer.pid)


@contextmanager
def embedding_service(cpus: Collection[int] = ()) -> Iterator[str]:
    service, address = start_child_service("embedding", cpus=cpus)
    try:
        yield address
    finally:
        service.kill()
        service.wait()


@contextmanager
def this_process_on(cpus: Collection[int]) -> Iterator[None]:
    """Every thread of this process (gRPC's own included) on ``cpus`` for a while: the client
    measuring a serving replica stays off the trainer's cores."""
    before = os.sched_getaffinity(0)
    every_thread_on(cpus)
    try:
        yield
    finally:
        every_thread_on(before)


def every_thread_on(cpus: Collection[int]) -> None:
    for thread in Path("/proc/self/task").iterdir():
        os.sched_setaffinity(int(thread.name), cpus)


def stub_of(replica: Replica) -> Any:
    return scoring_pb2_grpc.ScoringServiceStub(grpc.insecure_channel(replica.address))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--screens", type=int, default=36, help="configurations screened per trainer count")
    parser.add_argument("--requests", type=int, default=3000, help="RankItems per latency measurement")
    parser.add_argument("--only", choices=["screens", "serving"], help="one of the two measurements")
    args = parser.parse_args()
    if args.screens < 2 or args.requests < 100:
        parser.error("--screens must be >= 2 and --requests >= 100")
    logs_to_stderr()
    started = time.perf_counter()
    result: dict[str, Any] = {"benchmark": "scaleout", "dataset": "MovieLens 100K"}
    with tempfile.TemporaryDirectory() as folder:
        if args.only != "serving":
            one = screens_per_hour(1, args.screens)
            two = screens_per_hour(2, args.screens)
            result["screens"] = {
                "configurations": args.screens,
                "screens_per_hour_1_trainer": round(one, 1),
                "screens_per_hour_2_trainers": round(two, 1),
                "ratio_2_to_1": round(two / one, 2),
            }
        if args.only != "screens":
            result["trainer_fit_threads"] = CO_LOCATED_FIT_THREADS
            result["rank_items_while_two_tower_fits"] = serving_under_training(Path(folder), args.requests)
    result["seconds"] = round(time.perf_counter() - started, 1)
    print_json(result)


if __name__ == "__main__":
    main()
