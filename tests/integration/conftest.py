"""A real Celery worker (threads) in this process, on the test Redis and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker


@pytest.fixture(scope="session")
def celery_worker_thread(redis_available: str, service_urls: Any) -> Iterator[Any]:
    """The worker, on an app of its own (``create_app``); each test's ``bulkops_env``
    gives its threads the test's database (``worker.app.using`` is process-wide)."""
    from worker.app import create_app
    from worker.config import load_settings
    from worker.queues import QUEUES

    settings = load_settings(
        {
            "DATABASE_URL": service_urls.admin_database_url,
            "REDIS_URL": redis_available,
            "CELERY_BROKER_URL": None,
            "CELERY_RESULT_BACKEND": None,
        }
    )
    app = create_app(settings)
    with start_worker(
        app,
        pool="threads",
        concurrency=4,
        perform_ping_check=False,
        queues=list(QUEUES),
        loglevel="WARNING",
        shutdown_timeout=60,
    ) as worker:
        yield worker
    app.close()


@pytest.fixture
def worker(bulkops_env: dict[str, str], celery_worker_thread: Any) -> Any:
    """A running worker, and a fresh migrated database for this test."""
    return celery_worker_thread
