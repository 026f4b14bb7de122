"""The Celery application, built from a ``Settings``. Nothing here connects at import time.

* :func:`create_app` builds a Celery app from settings (a producer's, or an
  in-process worker's: the task modules are imported, so it has every task).
* ``app`` is the one ``celery -A worker ...`` runs: configured from the
  environment the first time it reads its configuration.
* :func:`using` installs settings, an engine and a producers' app built from
  them for a block (the demo, the tests), as procrastinate's ``App(connector=...)``
  or arq's ``RedisSettings`` pass the configuration in instead of re-pointing it.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
from collections.abc import Iterator
from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown, worker_ready
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

import celeryconfig
from worker import config, db
from worker.config import Settings
from worker.errors import ConfigError

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


def _from_environment() -> dict[str, Any]:
    try:
        return celeryconfig.config(config.get_settings())
    except ConfigError as exc:  # one line naming the variable, not a traceback
        raise SystemExit(f"bulkops: {exc.message}") from None


def create_app(settings: Settings | None = None) -> Celery:
    """A Celery app configured from ``settings`` (None: the environment, on first use).

    Raises ConfigError for a bad BULKOPS_SCHEDULE file.
    """
    if settings is None:
        env_app = Celery("bulkops", include=TASK_MODULES)
        env_app.add_defaults(_from_environment)  # read when the app first needs it
        return env_app
    built = Celery("bulkops", include=TASK_MODULES, set_as_current=False)
    built.conf.update(celeryconfig.config(settings))
    for name in TASK_MODULES:  # their tasks are added to every app finalized after
        importlib.import_module(name)
    return built


app = create_app()

# The producers' app installed by `using` (innermost last); `app` when none is.
_producers: list[Celery] = []


def producer_app() -> Celery:
    """The app ``worker.client`` sends jobs with: the one :func:`using` installed, else ``app``."""
    return _producers[-1] if _producers else app


@contextlib.contextmanager
def using(settings: Settings) -> Iterator[Celery]:
    """Run the block on ``settings``: ``get_settings()``, the engine and the producers' app.

    Everything is built from ``settings`` and the previous ones are back after
    the block (blocks nest). Process-wide, not per thread: an in-process worker's
    threads see it. Yields the producers' app (closed after the block).
    """
    producers = create_app(settings)
    with config.installed(settings), db.installed(db.build_engine(settings)):
        _producers.append(producers)
        try:
            yield producers
        finally:
            _producers.pop()
            # kombu keeps connections per broker URL for the process (kombu.pools), so
            # another app on the same URL reuses them: nothing of them to close here.
            producers.close()


@worker_process_init.connect
def _engine_per_process(**_: Any) -> None:
    """A forked pool process builds its own engine: pooled sockets never cross a fork."""
    db.init_engine()
    # Chunks allocate hundreds of thousands of short-lived objects (rows, records)
    # and no cycles worth collecting per row: with the default threshold the
    # cyclic GC ran constantly (measured: ~3 us of 13-17 us of Python per row).
    # While a chunk runs it is paused altogether (runner.cyclic_gc_paused).
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
        worker_app = getattr(sender, "app", None) or app
        # A connection of its own, closed here: a pooled one left waiting on a
        # BRPOP would be inherited by every pool process forked later, whose
        # after-fork cleanup then blocks on it and never reports UP.
        with worker_app.connection_for_read() as conn:
            replies = worker_app.control.inspect(timeout=1.0, connection=conn).stats() or {}
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
