"""The Grafana dashboard names only metrics the real exporter serves, and they count right."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from worker import client, metrics
from worker.embedded import free_port

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "bulkops.json"
# What an operator must find on it (the list): queue depth, jobs by state,
# rows/s per kind, rejects/s, stuck jobs, pool, database latency.
REQUIRED = {
    "bulkops_queue_depth",
    "bulkops_jobs",
    "bulkops_rows_total",
    "bulkops_jobs_stuck",
    "bulkops_pool_connections",
    "bulkops_database_connections",
    "bulkops_database_latency_seconds",
}
STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
METRIC = re.compile(r"\bbulkops_[a-zA-Z0-9_]+\b")


def _scrape() -> str:
    """``/metrics`` of the real exporter over HTTP, on this test's database and Redis."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics.HealthCollector())
    port = free_port()
    server, _ = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
            return str(r.read().decode())
    finally:
        server.shutdown()


def _samples(body: str) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def _queries(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_every_dashboard_query_names_a_served_metric(worker: Any) -> None:
    # Given a finished job, so every family has data
    job_id = client.submit_seed(5, 3, 1)
    assert client.wait(job_id, timeout=120).state == "succeeded"
    served = _samples(_scrape())
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["panels"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    named: set[str] = set()
    for expr in _queries(dashboard):
        # the metric names are outside the label values' quotes
        names = set(METRIC.findall(STRING.sub('""', expr)))
        assert names, f"no bulkops metric in {expr!r}"
        assert names <= set(served), f"{expr!r} names {sorted(names - set(served))}"
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr
        named |= names
    assert REQUIRED <= named, sorted(REQUIRED - named)


def test_rows_and_chunks_counters_are_the_ledger_totals(worker: Any) -> None:
    # Given two seed jobs (5 users x 3 todos each: a chunk of users, one of todos)
    for seed in (1, 2):
        assert client.wait(client.submit_seed(5, 3, seed), timeout=120).state == "succeeded"
    # Then the counters are the sums of the jobs' counters, every kind and outcome served
    served = _samples(_scrape())
    rows = {(s.labels["kind"], s.labels["outcome"]): s.value for s in served["bulkops_rows_total"]}
    assert rows[("seed", "read")] == rows[("seed", "inserted")] == 2 * (5 + 5 * 3)
    assert rows[("seed", "rejected")] == 0
    assert rows[("import", "read")] == 0  # served before the first import, so rate() sees it
    chunks = {s.labels["kind"]: s.value for s in served["bulkops_chunks_total"]}
    assert chunks["seed"] == 4
    by_kind = {
        (s.labels["kind"], s.labels["state"]): s.value for s in served["bulkops_jobs_by_kind"]
    }
    assert by_kind[("seed", "succeeded")] == 2 and by_kind[("import", "running")] == 0
    connections = sum(s.value for s in served["bulkops_database_connections"])
    assert 1 <= connections <= served["bulkops_database_max_connections"][0].value
