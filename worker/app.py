"""The Celery application. Nothing here connects to a broker at import time."""

from __future__ import annotations

import gc
import logging
from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown, worker_ready
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from worker import db

logger = logging.getLogger(__name__)

GC_THRESHOLD = 100_000  # allocations before a young-generation collection (default 700)

TASK_MODULES = [
    "tasks.seeding",
    "tasks.imports",
    "tasks.updates",
    "tasks.health",
    "tasks.maintenance",
    "tasks.jobs",
]

app = Celery("bulkops", include=TASK_MODULES)
app.config_from_object("celeryconfig")


@worker_process_init.connect
def _engine_per_process(**_: Any) -> None:
    """A forked pool process builds its own engine: pooled sockets never cross a fork."""
    db.init_engine()
    # Chunks allocate hundreds of thousands of short-lived objects (rows, records)
    # and no cycles worth collecting per row: with the default threshold the
    # cyclic GC ran constantly (measured: ~3 us of 13-17 us of Python per row).
    gc.set_threshold(GC_THRESHOLD, 50, 100)


@worker_process_shutdown.connect
def _dispose_engine(**_: Any) -> None:
    db.dispose_engine()


@worker_ready.connect
def _check_connection_budget(sender: Any = None, **_: Any) -> None:
    """Warn when all visible workers' pools cannot fit PostgreSQL's max_connections."""
    from worker import budget
    from worker.config import get_settings

    try:
        hostname = getattr(sender, "hostname", None)
        # A connection of its own, closed here: a pooled one left waiting on a
        # BRPOP would be inherited by every pool process forked later, whose
        # after-fork cleanup then blocks on it and never reports UP.
        with app.connection_for_read() as conn:
            replies = app.control.inspect(timeout=1.0, connection=conn).stats() or {}
        others = {name: stats for name, stats in replies.items() if name != hostname}
        concurrency = int(getattr(getattr(sender, "controller", None), "concurrency", 1) or 1)
        settings = get_settings()
        engine = create_engine(settings.sqlalchemy_url, poolclass=NullPool)
        try:
            budget.warn_if_over(budget.compute(settings, concurrency, others, engine))
        finally:
            engine.dispose()
    except Exception as exc:  # never stop a worker over a check
        logger.warning("connection budget not checked: %s", exc)
