"""EmbeddingService throughput and latency against the raw encoder, in one run.

Measures, on the MovieLens 100K item texts (title, year, genres):
- raw: the encoder called in-process at batch 32 (the baseline), and at a batch of as many
  texts as there are clients: 8 single-text clients can never give the service a larger
  forward pass, so raw at that batch is the ceiling of the single-text measurement;
- the service over gRPC (its own process, cache off so every text is encoded) with
  8 concurrent clients sending single texts, and with 8 clients sending batches of 32;
- p50/p99 latency of the single-text calls;
- the echo: the standard health Check on the same server from the same 8 clients, what a
  call costs gRPC on this machine with no encoding at all;
- the service's core (validation, micro-batcher, encoder) called in-process by 8 threads
  sending single texts, without gRPC: what the batching costs by itself.
The measurements run in many short rounds, one after the other in each round, each round
on the next texts of the catalogue, so that every ratio compares the service with the raw
encoder measured about a second apart (this machine's speed drifts by 10% and more within
seconds). Prints JSON with each round's throughputs and ratios and the median ratio over
the rounds.

    .venv/bin/python -m bench.embedding [--texts 256] [--clients 8] [--rounds 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.common import percentiles_ms, print_json, run_clients, start_child_service
from rectune.datasets import item_texts
from rectune.v1 import embedding_pb2, embedding_pb2_grpc
from services.common.wait_healthy import wait_serving
from services.embedding.core.encoder import Encoder, EncoderConfig
from services.embedding.core.service import EmbeddingCore, EmbeddingLimits


def raw_throughput(encoder: Encoder, texts: list[str], batch: int) -> float:
    encoder.encode(texts[:batch], forward_batch=batch)  # warm-up
    started = time.perf_counter()
    for start in range(0, len(texts), batch):
        encoder.encode(texts[start : start + batch], forward_batch=batch)
    return len(texts) / (time.perf_counter() - started)


def single_text_throughput(
    embed: Callable[[list[str]], object], texts: list[str], clients: int
) -> tuple[float, list[float]]:
    """Texts/s of ``clients`` threads each sending one text per call, after a warm-up, and
    each call's latency."""
    run_clients(clients, 64, lambda n: embed([texts[n]]))  # warm-up
    return run_clients(clients, len(texts), lambda n: embed([texts[n]]))


def service_throughputs(
    call: Callable[[list[str]], object], texts: list[str], clients: int, batch: int
) -> tuple[float, float, list[float]]:
    """Texts/s with single-text calls, texts/s with batch calls, and the single calls' latencies."""
    single, latencies = single_text_throughput(call, texts, clients)
    batches = [texts[i : i + batch] for i in range(0, len(texts), batch)]
    batched, _ = run_clients(clients, len(batches), lambda n: call(batches[n]))
    return single, batched * len(texts) / len(batches), latencies  # calls/s -> texts/s


def one_round(
    encoder: Encoder,
    core: EmbeddingCore,
    call: Callable[[list[str]], object],
    echo: Callable[[], object],
    texts: list[str],
    clients: int,
    batch: int,
) -> tuple[dict[str, float], list[float]]:
    raw = raw_throughput(encoder, texts, batch)
    raw_client_batch = raw_throughput(encoder, texts, clients)
    single, batched, latencies = service_throughputs(call, texts, clients, batch)
    echoes, _ = run_clients(clients, len(texts), lambda _n: echo())
    # The service's core without gRPC: what the batching costs by itself.
    in_process, _ = single_text_throughput(lambda batch: core.embed([t.encode() for t in batch]), texts, clients)
    measured = {
        "raw_batch32_texts_per_s": round(raw, 1),
        "raw_client_batch_texts_per_s": round(raw_client_batch, 1),
        "service_single_text_texts_per_s": round(single, 1),
        "service_batch32_texts_per_s": round(batched, 1),
        "ratio_single_to_raw": round(single / raw, 3),
        "ratio_batch32_to_raw": round(batched / raw, 3),
        # What the single-text clients could reach with zero service overhead.
        "ceiling_single_to_raw": round(raw_client_batch / raw, 3),
        "ratio_single_to_raw_client_batch": round(single / raw_client_batch, 3),
        "in_process_single_text_texts_per_s": round(in_process, 1),
        "ratio_in_process_single_to_raw_client_batch": round(in_process / raw_client_batch, 3),
        "echo_calls_per_s": round(echoes, 1),
    }
    return measured, latencies


def at_least_one(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {number}")
    return number


def texts_of_round(catalogue: list[str], round_index: int, count: int) -> list[str]:
    """The next ``count`` texts of the catalogue (from the start again after its end): the
    rounds go through the whole catalogue instead of measuring its first texts again."""
    start = round_index * count
    return [catalogue[(start + offset) % len(catalogue)] for offset in range(count)]


def median_of(rounds: list[dict[str, float]], key: str) -> float:
    return round(statistics.median(measured[key] for measured in rounds), 3)


def main() -> None:
    # Imported here, after services.embedding (through the encoder import above) has set
    # the OpenMP spin count, so that the raw encoder runs with the service's settings.
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=at_least_one, default=256, help="texts per measurement")
    parser.add_argument("--clients", type=at_least_one, default=8)
    parser.add_argument("--batch", type=at_least_one, default=32)
    parser.add_argument("--rounds", type=at_least_one, default=20, help="rounds of the measurements")
    parser.add_argument("--max-wait-ms", type=float, default=None, help="service setting; default: the service's")
    args = parser.parse_args()
    catalogue = item_texts()

    flags = ["--cache-bytes", "0", "--max-batch", str(args.batch)]
    if args.max_wait_ms is not None:
        flags += ["--max-wait-ms", str(args.max_wait_ms)]
    process, address = start_child_service("embedding", *flags)
    encoder = Encoder(EncoderConfig())
    limits = EmbeddingLimits(cache_bytes=0, max_batch=args.batch)
    if args.max_wait_ms is not None:
        limits = dataclasses.replace(limits, max_wait_ms=args.max_wait_ms)
    core = EmbeddingCore(limits)
    core.attach(encoder)
    rounds: list[dict[str, float]] = []
    latencies: list[float] = []
    try:
        assert wait_serving([address], 300)[address] == "SERVING"
        channel = grpc.insecure_channel(address)
        stub = embedding_pb2_grpc.EmbeddingServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)

        def call(batch: list[str]) -> None:
            stub.EmbedTexts(embedding_pb2.EmbedTextsRequest(texts=[t.encode() for t in batch]), timeout=120)

        for round_index in range(args.rounds):
            texts = texts_of_round(catalogue, round_index, args.texts)
            measured, round_latencies = one_round(
                encoder,
                core,
                call,
                lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=10),
                texts,
                args.clients,
                args.batch,
            )
            rounds.append(measured)
            latencies += round_latencies
        info = stub.GetModelInfo(embedding_pb2.GetModelInfoRequest(), timeout=10)
        channel.close()
    finally:
        core.close()
        process.terminate()
        process.wait()

    ratios = (
        "ratio_single_to_raw",
        "ratio_batch32_to_raw",
        "ceiling_single_to_raw",
        "ratio_single_to_raw_client_batch",
        "ratio_in_process_single_to_raw_client_batch",
    )
    print_json(
        {
            "benchmark": "embedding",
            "model": info.model_name,
            "device": info.device,
            "dtype": info.dtype,
            "forward_path": encoder.forward_path,  # the raw encoder's, the same rule as the service's
            "torch_threads": torch.get_num_threads(),
            "gomp_spincount": os.environ.get("GOMP_SPINCOUNT"),
            "texts_per_measurement": args.texts,
            "clients": args.clients,
            "raw_client_batch": args.clients,
            "rounds": rounds,
            "single_text_latency": percentiles_ms(latencies),
            "median": {key: median_of(rounds, key) for key in ratios},
            "acceptance": {"single_to_raw_min": 0.8, "batch32_to_raw_min": 0.9},
        }
    )


if __name__ == "__main__":
    main()
