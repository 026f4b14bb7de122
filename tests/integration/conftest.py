"""A real Celery worker (threads) in this process, on the test Redis and PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from celery_producers import point_producers_at


@pytest.fixture(scope="session")
def celery_worker_thread(redis_available: str, service_urls: Any) -> Iterator[Any]:
    from worker.app import app
    from worker.config import reset_settings
    from worker.queues import QUEUES

    # celeryconfig reads the settings once; give it the test services.
    os.environ.setdefault("DATABASE_URL", service_urls.admin_database_url)
    os.environ["REDIS_URL"] = redis_available
    reset_settings()
    point_producers_at(redis_available)
    app.loader.import_default_modules()
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


@pytest.fixture
def worker(bulkops_env: dict[str, str], celery_worker_thread: Any, redis_available: str) -> Any:
    """A running worker, and a fresh migrated database for this test."""
    point_producers_at(redis_available)  # another layer may have re-pointed them
    return celery_worker_thread
