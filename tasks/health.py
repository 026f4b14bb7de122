"""The periodic health check (celery beat, ``maintenance`` queue)."""

from __future__ import annotations

from typing import Any

from celery.utils.log import get_task_logger

from worker import health
from worker.app import app
from worker.config import get_settings

logger = get_task_logger(__name__)


@app.task(name="tasks.health.run_health_check")
def run_health_check() -> dict[str, Any]:
    report = health.run_checks()
    try:
        health.record(report, get_settings().bulkops_health_retention_days)
    except Exception as exc:  # the database check already says why
        logger.warning("health check not recorded: %s", exc)
    if not report.healthy:
        failing = [f"{c.name}: {c.detail}" for c in report.checks if not c.ok]
        logger.warning("unhealthy: %s", "; ".join(failing))
    return report.to_dict()
