"""Prometheus metrics and the connection budget, against the real services."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from sqlalchemy import text

from worker import budget, db, metrics
from worker.config import get_settings
from worker.embedded import free_port


def _scrape(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def test_metrics_report_queue_depths_and_jobs_by_state(
    configure: Callable[..., None], idle_redis_url: str
) -> None:
    import redis

    # Given two messages waiting in the imports queue and jobs in two states
    # (on a Redis database no worker consumes: the worker thread would take them)
    url = idle_redis_url
    configure(REDIS_URL=url)
    client = redis.Redis.from_url(url)
    client.rpush("imports", "a", "b")
    with db.session_scope() as s:
        s.execute(
            text(
                "INSERT INTO bulkops_ledger.jobs (kind, state) VALUES ('seed', 'queued'), "
                "('seed', 'succeeded'), ('seed', 'succeeded')"
            )
        )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics.HealthCollector())
    # When Prometheus scrapes the exporter over HTTP
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        body = (
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        )
    finally:
        server.shutdown()
        client.delete("imports")
        client.close()
    # Then the depths, the jobs by state and health are there
    failing = [line for line in body.splitlines() if line.startswith("bulkops_check_ok")]
    assert "bulkops_healthy 1.0" in body, failing
    assert 'bulkops_queue_depth{queue="imports"} 2.0' in body
    assert 'bulkops_queue_depth{queue="updates"} 0.0' in body
    assert 'bulkops_jobs{state="succeeded"} 2.0' in body
    assert 'bulkops_jobs{state="queued"} 1.0' in body
    assert "bulkops_healthy 1.0" in body
    assert "bulkops_database_latency_seconds" in body


def test_metrics_say_unhealthy_when_redis_is_down(
    configure: Callable[..., None],
) -> None:
    configure(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics.HealthCollector())
    body = _scrape(registry)
    assert "bulkops_healthy 0.0" in body
    assert 'bulkops_check_ok{check="redis"} 0.0' in body
    assert 'bulkops_check_ok{check="database"} 1.0' in body


def test_connection_budget_fits_or_warns(
    bulkops_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    settings = get_settings()
    engine = db.get_engine()
    available = budget.available_connections(engine)
    # A small node fits
    small = budget.compute(settings, 2, {}, engine)
    assert small.needed == 2 * (settings.db_pool_size + settings.db_max_overflow)
    assert small.fits and budget.warn_if_over(small)
    # Many visible workers do not, and the warning says what to do
    others = {f"w{i}@h": {"pool": {"max-concurrency": 8}} for i in range(10)}
    big = budget.compute(settings, 8, others, engine)
    assert big.nodes == 11 and big.processes == 88
    assert big.needed > available
    assert not budget.warn_if_over(big)
    assert "connection budget does not fit" in caplog.text
    assert "PgBouncer" in caplog.text
