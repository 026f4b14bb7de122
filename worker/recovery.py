"""Recovery from the ledger: re-send jobs whose message or worker was lost.

Redis without persistence loses every queued message on restart, and a
worker killed mid-job leaves its job ``running`` with a stale heartbeat.
Both are found here and sent again, a bounded number of times: a job that
has been claimed ``max_attempts`` times and still died ends ``failed``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import text

from worker.db import session_scope

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecoveryReport:
    resent: list[int]
    failed: list[int]


def recover_stuck_jobs(
    stuck_after_s: float, max_attempts: int, send: Callable[[str, int, str], None]
) -> RecoveryReport:
    """Re-send stuck jobs (``send(kind, job_id, task_id)``); fail those out of attempts."""
    with session_scope() as session:
        failed = [
            int(r.id)
            for r in session.execute(
                text(
                    "UPDATE jobs SET state = 'failed', finished_at = now(), error = "
                    "'worker lost ' || attempts || ' times; giving up (max attempts ' "
                    "|| :max || ')' WHERE state = 'running' AND attempts >= :max "
                    "AND heartbeat_at < now() - make_interval(secs => :s) RETURNING id"
                ),
                {"s": stuck_after_s, "max": max_attempts},
            )
        ]
        # Touch updated_at (trigger) so a job is re-sent at most once per period.
        stuck = session.execute(
            text(
                "UPDATE jobs SET cancel_requested = cancel_requested "
                "WHERE (state = 'queued' AND updated_at < now() - make_interval(secs => :s)) "
                "OR (state = 'running' AND heartbeat_at < now() - make_interval(secs => :s) "
                "AND updated_at < now() - make_interval(secs => :s)) "
                "RETURNING id, kind, celery_task_id"
            ),
            {"s": stuck_after_s},
        ).all()
    resent = []
    for row in stuck:
        try:
            send(str(row.kind), int(row.id), str(row.celery_task_id))
            resent.append(int(row.id))
        except Exception as exc:
            logger.warning("re-send failed: %s", exc, extra={"job_id": row.id})
    if resent or failed:
        logger.warning("recovered jobs", extra={"resent": resent, "failed": failed})
    return RecoveryReport(resent, failed)
