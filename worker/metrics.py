"""Prometheus metrics: queue depths, jobs by state, latencies, pool, health.

Flower's own metrics have no queue depth, so ``bulkops metrics`` serves these
on ``/metrics`` (``prometheus_client``); every scrape runs the health checks
once, so the numbers are never older than the scrape.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from worker.health import HealthReport, run_checks

PREFIX = "bulkops"


def families(report: HealthReport) -> Iterator[GaugeMetricFamily]:
    """The metric families for one health report."""
    checks = {c.name: c for c in report.checks}
    healthy = GaugeMetricFamily(f"{PREFIX}_healthy", "1 when every check passes", value=0)
    healthy.add_metric([], 1.0 if report.healthy else 0.0)
    yield healthy
    check_ok = GaugeMetricFamily(f"{PREFIX}_check_ok", "1 when the check passes", labels=["check"])
    for c in report.checks:
        check_ok.add_metric([c.name], 1.0 if c.ok else 0.0)
    yield check_ok
    for name in ("database", "redis"):
        latency = checks[name].data.get("latency_ms")
        if latency is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_{name}_latency_seconds",
                f"{name} round trip in seconds",
                value=latency / 1000,
            )
    depth = GaugeMetricFamily(
        f"{PREFIX}_queue_depth", "messages waiting in each queue", labels=["queue"]
    )
    for queue, n in checks["queues"].data.get("depth", {}).items():
        depth.add_metric([queue], float(n))
    yield depth
    jobs = checks["jobs"].data
    by_state = GaugeMetricFamily(f"{PREFIX}_jobs", "jobs in the ledger by state", labels=["state"])
    for state, n in jobs.get("by_state", {}).items():
        by_state.add_metric([state], float(n))
    yield by_state
    stuck = GaugeMetricFamily(
        f"{PREFIX}_jobs_stuck", "jobs queued or running past the threshold", labels=["state"]
    )
    for state in ("queued", "running"):
        if f"stuck_{state}" in jobs:
            stuck.add_metric([state], float(jobs[f"stuck_{state}"]))
    yield stuck
    pool = GaugeMetricFamily(f"{PREFIX}_pool_connections", "this exporter's pool", labels=["kind"])
    for kind, n in checks["pool"].data.items():
        pool.add_metric([kind], float(n))
    yield pool


class HealthCollector(Collector):
    """Runs the health checks on every scrape."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from families(run_checks())


def serve(port: int, address: str = "0.0.0.0") -> None:  # noqa: S104 - an exporter listens
    """Serve /metrics until interrupted."""
    import time

    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(HealthCollector())
    start_http_server(port, addr=address, registry=registry)
    while True:
        time.sleep(3600)
