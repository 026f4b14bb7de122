"""The connection budget: does every worker's pool fit PostgreSQL's max_connections?

Each worker process may open up to ``DB_POOL_SIZE + DB_MAX_OVERFLOW``
connections; a worker node runs ``concurrency`` processes. At start-up a
worker adds its own budget to that of the other workers it can see (Celery
``inspect stats``) and warns when the sum passes what PostgreSQL allows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, text

from worker.config import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Budget:
    nodes: int
    processes: int
    per_process: int
    available: int  # max_connections - superuser_reserved_connections

    @property
    def needed(self) -> int:
        return self.processes * self.per_process

    @property
    def fits(self) -> bool:
        return self.needed <= self.available

    def describe(self) -> str:
        return (
            f"{self.nodes} worker node(s), {self.processes} processes x "
            f"(DB_POOL_SIZE + DB_MAX_OVERFLOW = {self.per_process}) = {self.needed} connections; "
            f"PostgreSQL allows {self.available}"
        )


def available_connections(engine: Engine) -> int:
    with engine.connect() as conn:
        total = int(conn.execute(text("SHOW max_connections")).scalar_one())
        reserved = int(conn.execute(text("SHOW superuser_reserved_connections")).scalar_one())
    return total - reserved


def compute(
    settings: Settings, own_concurrency: int, others: dict[str, Any], engine: Engine
) -> Budget:
    """``others``: ``inspect().stats()`` replies of the other workers (may be empty)."""
    processes = own_concurrency + sum(
        int(s.get("pool", {}).get("max-concurrency", 0) or 0) for s in others.values()
    )
    return Budget(
        nodes=1 + len(others),
        processes=processes,
        per_process=settings.db_pool_size + settings.db_max_overflow,
        available=available_connections(engine),
    )


def warn_if_over(budget: Budget) -> bool:
    """Log a warning when the budget does not fit; returns whether it fits."""
    if not budget.fits:
        logger.warning(
            "connection budget does not fit: %s. Lower concurrency or the pool, raise "
            "max_connections, or put PgBouncer in front (README, Operations).",
            budget.describe(),
        )
    else:
        logger.info("connection budget: %s", budget.describe())
    return budget.fits
