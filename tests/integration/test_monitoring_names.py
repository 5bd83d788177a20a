"""Every metric that the alerting rules and the Grafana dashboard name is one the running
services export: the five services' /metrics (EmbeddingService, ScoringService, PolicyService,
MetricsService, and `tuner run`) scraped over HTTP, families that have no sample yet included
(a labelled counter with no child still declares its name and type)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import MOVIELENS
from tests.unit.test_monitoring import alert_and_dashboard_metric_names

pytestmark = pytest.mark.integration

# The sample names each metric type exposes, from its family name.
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",), "untyped": ("",)}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        return str(answer.read().decode())


def exposed_names(text: str) -> set[str]:
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(sample.name for sample in family.samples)
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


@pytest.fixture
def tuner_run(start_service, tmp_path) -> Iterator[tuple[int, list[int]]]:
    """The services with Prometheus ports, and `tuner run` against them with its own."""
    ports = {name: free_port() for name in ("embedding", "scoring", "metrics", "policy", "tuner")}
    embedding = start_service("embedding", prometheus_port=ports["embedding"])
    scoring = start_service(
        "scoring", dataset=str(MOVIELENS), embedding_address=embedding.address, prometheus_port=ports["scoring"]
    )
    metrics = start_service("metrics", prometheus_port=ports["metrics"])
    policy = start_service(
        "policy", scoring_address=scoring.address, metrics_address=metrics.address, prometheus_port=ports["policy"]
    )
    tuner = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tuner",
            "run",
            f"--policy-address={policy.address}",
            f"--scoring-address={scoring.address}",
            f"--metrics-address={metrics.address}",
            f"--database-url=sqlite:///{tmp_path / 'tuner.db'}",
            f"--prometheus-port={ports['tuner']}",
            "--proposer=random",
            "--interval-seconds=3600",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    yield ports["tuner"], [ports[name] for name in ("embedding", "scoring", "metrics", "policy")]
    tuner.terminate()
    tuner.wait(timeout=30)


def first_cycle_done(port: int) -> str:
    """The tuner's scrape once its first cycle succeeded (it has no champion: an empty plan)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            text = scrape(port)
        except OSError:  # not listening yet
            time.sleep(0.5)
            continue
        if 'rectune_tuner_cycles_total{outcome="ok"} 1.0' in text:
            return text
        time.sleep(0.5)
    raise AssertionError("tuner run did not finish a cycle in 120 s")


def test_every_name_in_the_alerts_and_the_dashboard_is_exported(tuner_run) -> None:
    tuner_port, service_ports = tuner_run
    by_source = {"tuner": exposed_names(first_cycle_done(tuner_port))}
    for name, port in zip(("embedding", "scoring", "metrics", "policy"), service_ports, strict=True):
        by_source[name] = exposed_names(scrape(port))
    named = alert_and_dashboard_metric_names()
    assert named - set().union(*by_source.values()) == set()
    # The check can fail: without any one source's scrape, names the alerts or the dashboard
    # use go missing (each source exports something only it has, and something is named from it).
    for source in by_source:
        others = set().union(*(names for other, names in by_source.items() if other != source))
        assert named - others, f"no alert or panel reads a name that only {source} exports"
