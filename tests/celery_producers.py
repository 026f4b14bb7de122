"""Point this process's Celery producers (``worker.client``) at a broker URL.

``celeryconfig`` reads REDIS_URL once per process, and Celery caches the
producer connection pool on first use; the test layers run on different
Redis databases, so each must re-point the producers when it takes over.
"""

from __future__ import annotations

import contextlib


def point_producers_at(broker_url: str) -> None:
    from worker.app import app

    app.conf.update(broker_url=broker_url, result_backend=broker_url)
    # Forget the cached pools, as Celery itself does after a fork, so the next
    # send uses the new URL. A running in-process worker keeps its own connection.
    app._pool = None
    with contextlib.suppress(AttributeError, KeyError):
        app.__dict__["amqp"]._producer_pool = None
