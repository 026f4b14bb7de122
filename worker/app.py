"""The Celery application. Nothing here connects to a broker at import time."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown

from worker import db

logger = logging.getLogger(__name__)

TASK_MODULES = [
    "tasks.seeding",
    "tasks.imports",
    "tasks.updates",
    "tasks.health",
    "tasks.maintenance",
]

app = Celery("bulkops", include=TASK_MODULES)
app.config_from_object("celeryconfig")


@worker_process_init.connect
def _engine_per_process(**_: Any) -> None:
    """A forked pool process builds its own engine: pooled sockets never cross a fork."""
    db.init_engine()


@worker_process_shutdown.connect
def _dispose_engine(**_: Any) -> None:
    db.dispose_engine()
