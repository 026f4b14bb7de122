"""Health checks: database, pool, Redis, queue depths, stuck jobs.

A job is "stuck running" when it is running and stuck or dead as
:mod:`worker.chunks` defines them (the same definition recovery acts on).
Each check catches its own failure and says why, so an unreachable Redis or
PostgreSQL is a failed check with a reason, never a traceback. The beat task
records every run in ``health_checks`` and prunes old rows; ``bulkops health``
runs the same checks in-process and exits 0 or 1.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import redis
from sqlalchemy import Engine, text

from worker import chunks
from worker.config import Settings, get_settings
from worker.db import get_engine, session_scope, translated
from worker.errors import BulkopsError
from worker.queues import QUEUES


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HealthReport:
    healthy: bool
    checks: list[Check]

    def to_dict(self) -> dict[str, Any]:
        return {"healthy": self.healthy, "checks": [asdict(c) for c in self.checks]}


def _guard(name: str, fn: Callable[[], Check]) -> Check:
    try:
        return fn()
    except BulkopsError as exc:
        return Check(name, False, exc.message)
    except Exception as exc:  # a check must report, never raise
        return Check(name, False, f"{type(exc).__name__}: {exc}")


def check_database(engine: Engine) -> Check:
    def run() -> Check:
        started = time.perf_counter()
        with translated(), engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            version = conn.execute(text("SHOW server_version")).scalar()
        ms = (time.perf_counter() - started) * 1000
        return Check(
            "database",
            True,
            f"round trip {ms:.1f} ms",
            {"latency_ms": round(ms, 2), "version": version},
        )

    return _guard("database", run)


def check_pool(engine: Engine) -> Check:
    def run() -> Check:
        pool: Any = engine.pool
        data = {
            "size": pool.size(),
            "checked_out": pool.checkedout(),
            "overflow": pool.overflow(),
            "checked_in": pool.checkedin(),
        }
        max_open = pool.size() + max(0, getattr(pool, "_max_overflow", 0))
        ok = data["checked_out"] < max_open
        detail = f"{data['checked_out']} of {max_open} connections checked out"
        return Check("pool", ok, detail + ("" if ok else " (pool exhausted)"), data)

    return _guard("pool", run)


def redis_client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.broker_url, socket_connect_timeout=3, socket_timeout=3)


def check_redis(client: redis.Redis) -> Check:
    def run() -> Check:
        started = time.perf_counter()
        client.ping()
        ms = (time.perf_counter() - started) * 1000
        return Check("redis", True, f"ping {ms:.1f} ms", {"latency_ms": round(ms, 2)})

    return _guard("redis", run)


def check_queues(client: redis.Redis) -> Check:
    def run() -> Check:
        # kombu's Redis transport keeps each queue as a list named after it.
        depths = {name: int(client.llen(name)) for name in QUEUES}
        detail = ", ".join(f"{name}={depth}" for name, depth in depths.items())
        return Check("queues", True, detail, {"depth": depths})

    return _guard("queues", run)


def check_jobs(engine: Engine, stuck_after_s: float) -> Check:
    def run() -> Check:
        with session_scope(engine) as session:
            by_state, queued, running = chunks.health_counts(session, stuck_after_s)
        ok = queued == 0 and running == 0
        detail = f"{queued} stuck queued, {running} stuck running"
        return Check(
            "jobs",
            ok,
            detail,
            {"by_state": by_state, "stuck_queued": queued, "stuck_running": running},
        )

    return _guard("jobs", run)


def run_checks(engine: Engine | None = None, settings: Settings | None = None) -> HealthReport:
    """Run every check now."""
    s = settings or get_settings()
    eng = engine or get_engine()
    client = redis_client(s)
    try:
        database = check_database(eng)
        checks = [database, check_pool(eng), check_redis(client)]
        checks.append(
            check_queues(client) if checks[-1].ok else Check("queues", False, "redis unreachable")
        )
        checks.append(
            check_jobs(eng, s.bulkops_stuck_after_s)
            if database.ok
            else Check("jobs", False, "database unreachable")
        )
    finally:
        client.close()
    return HealthReport(all(c.ok for c in checks), checks)


def record(report: HealthReport, retention_days: float, engine: Engine | None = None) -> None:
    """Store one health_checks row and prune rows older than the retention."""
    import json

    with session_scope(engine) as session:
        session.execute(
            text(
                "INSERT INTO bulkops_ledger.health_checks (healthy, details) "
                "VALUES (:h, CAST(:d AS jsonb))"
            ),
            {"h": report.healthy, "d": json.dumps(report.to_dict())},
        )
        session.execute(
            text(
                "DELETE FROM bulkops_ledger.health_checks WHERE checked_at < now() - "
                "make_interval(secs => :s)"
            ),
            {"s": retention_days * 86400},
        )
