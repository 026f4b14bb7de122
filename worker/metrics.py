"""Prometheus metrics: queue depths, jobs by state, rows, latencies, pool, health.

Flower's own metrics have no queue depth, so ``bulkops metrics`` serves these
on ``/metrics`` (``prometheus_client``); every scrape runs the health checks
once and reads the ledger's totals, so the numbers are never older than the
scrape. Rows and chunks are counters (sums over the ledger's jobs), so
``rate(bulkops_rows_total[5m])`` is rows per second; they drop only when jobs
are deleted from the ledger, which Prometheus reads as a counter reset. The
dashboard over these is ``deploy/grafana/bulkops.json``; README lists them all.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, text

from worker import ledger
from worker.db import get_engine
from worker.health import HealthReport, run_checks
from worker.models import JobKind, JobState

logger = logging.getLogger(__name__)

PREFIX = "bulkops"


def families(report: HealthReport) -> Iterator[Metric]:
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


def ledger_families(totals: ledger.LedgerTotals) -> Iterator[Metric]:
    """Rows and chunks (counters) and jobs by kind and state, from the ledger's totals.

    Every kind (and outcome, and state) is served, 0 where there is none yet:
    a series that appears only with its first job makes ``rate()`` miss it.
    """
    kinds = sorted({k.value for k in JobKind} | {k for k, _ in totals.rows} | set(totals.chunks))
    rows = CounterMetricFamily(
        f"{PREFIX}_rows",
        "input rows of every job in the ledger, by job kind and outcome (read = "
        "inserted + updated + skipped + rejected)",
        labels=["kind", "outcome"],
    )
    for kind in kinds:
        for outcome in ledger.ROW_OUTCOMES:
            rows.add_metric([kind, outcome], float(totals.rows.get((kind, outcome), 0)))
    yield rows
    chunks = CounterMetricFamily(
        f"{PREFIX}_chunks", "chunks committed, by job kind", labels=["kind"]
    )
    for kind in kinds:
        chunks.add_metric([kind], float(totals.chunks.get(kind, 0)))
    yield chunks
    jobs = GaugeMetricFamily(
        f"{PREFIX}_jobs_by_kind", "jobs in the ledger by kind and state", labels=["kind", "state"]
    )
    for kind in kinds:
        for state in JobState:
            jobs.add_metric([kind, state.value], float(totals.jobs.get((kind, state.value), 0)))
    yield jobs


def database_families(engine: Engine) -> Iterator[Metric]:
    """PostgreSQL's own view of its connections (every pool of every worker, not only ours)."""
    with engine.connect() as conn:
        by_state = conn.execute(
            text(
                "SELECT coalesce(state, 'unknown') AS state, count(*) AS n FROM pg_stat_activity "
                "WHERE datname = current_database() AND backend_type = 'client backend' "
                "GROUP BY 1 ORDER BY 1"
            )
        ).all()
        limit = int(conn.execute(text("SHOW max_connections")).scalar_one())
    connections = GaugeMetricFamily(
        f"{PREFIX}_database_connections",
        "client connections to this database, by state (pg_stat_activity)",
        labels=["state"],
    )
    for row in by_state:
        connections.add_metric([str(row.state)], float(row.n))
    yield connections
    yield GaugeMetricFamily(
        f"{PREFIX}_database_max_connections", "PostgreSQL's max_connections", value=limit
    )


class HealthCollector(Collector):
    """Runs the health checks and reads the ledger's totals on every scrape."""

    def collect(self) -> Iterator[Metric]:
        report = run_checks()
        yield from families(report)
        if not report.checks[0].ok:  # no database: health says so, the rest is unknown
            return
        try:
            yield from ledger_families(ledger.totals())
            yield from database_families(get_engine())
        except Exception as exc:  # a scrape reports what it has, never a 500
            logger.warning("ledger metrics not read: %s", exc)


def serve(port: int, address: str = "0.0.0.0") -> None:  # noqa: S104 - an exporter listens
    """Serve /metrics until interrupted."""
    import time

    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(HealthCollector())
    start_http_server(port, addr=address, registry=registry)
    while True:
        time.sleep(3600)
