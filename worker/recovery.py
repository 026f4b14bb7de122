"""Recovery from the ledger: send again what a lost message or a dead worker left.

What is dead and what is stuck is defined once, next to its statements, in
:mod:`worker.chunks`; this module decides what to send and sends it:

- a chunk whose worker died (its start is counted, its lock is gone) runs
  again at once; a slow chunk holds its lock and is never sent twice;
- a job whose planner died is sent again (its claim counts an attempt) or,
  past ``max_attempts``, ends ``failed``;
- a job queued this long, or running with nothing in flight and no progress
  this long (Redis lost its messages), is sent again;
- a cancelling job with nothing in flight any more becomes ``cancelled``;
- what only a running job reads (``job_key_dups``) is deleted once it finished.

Before this runs, the task hands back the messages dead workers had taken
from Redis (:mod:`worker.orphans`): a job a killed worker had reserved but not
yet claimed is ``queued`` and not stuck, so only its own message can start it
before ``BULKOPS_STUCK_AFTER_S``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from worker import chunks, duplicates

logger = logging.getLogger(__name__)

SendJob = Callable[[str, int, str], None]  # (kind, job id, task id)
SendChunk = Callable[[str, int, int], None]  # (kind, job id, chunk number)


@dataclass(frozen=True)
class RecoveryReport:
    resent: list[int]
    failed: list[int]
    chunks: list[tuple[int, int]] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)
    pruned: int = 0  # job_key_dups rows of finished jobs deleted


def recover_stuck_jobs(
    stuck_after_s: float,
    max_attempts: int,
    send: SendJob,
    send_chunk: SendChunk | None = None,
) -> RecoveryReport:
    """Send again what died or got lost; fail poison plans; settle cancels.

    Everything sent is marked as sent first (committed), so a send that fails
    is tried again a period later, and a job or chunk is never sent twice at once.
    """
    failed = chunks.fail_dead_planners(max_attempts)
    cancelled = chunks.settle_cancels()
    resent = []
    for job in chunks.take_resends(stuck_after_s):
        try:
            send(job.kind, job.job_id, job.task_id)
            resent.append(job.job_id)
        except Exception as exc:
            logger.warning("re-send failed: %s", exc, extra={"job_id": job.job_id})
    sent_chunks = []
    if send_chunk is not None:
        for dead in chunks.take_dead(stuck_after_s):
            try:
                send_chunk(dead.kind, dead.job_id, dead.chunk_no)
                sent_chunks.append((dead.job_id, dead.chunk_no))
            except Exception as exc:
                logger.warning(
                    "re-send of a dead chunk failed: %s",
                    exc,
                    extra={"job_id": dead.job_id, "chunk": dead.chunk_no},
                )
    if resent or failed or sent_chunks or cancelled:
        logger.warning(
            "recovered jobs",
            extra={
                "resent": resent,
                "failed": failed,
                "chunks": sent_chunks,
                "cancelled": cancelled,
            },
        )
    pruned = duplicates.prune_finished()
    return RecoveryReport(resent, failed, sent_chunks, cancelled, pruned)
