"""Messages a dead worker took from Redis: handed back at once, not an hour later.

kombu's Redis transport keeps each delivered message in its ``unacked`` hash
(its delivery time in ``unacked_index``) until the message is acknowledged. A
worker that is killed (SIGKILL, the OOM killer, a lost node) never acknowledges
nor restores them; kombu puts them back only once the visibility timeout (an
hour by default) has passed. Until then a job whose message the dead worker
had reserved stays ``queued`` (nothing in PostgreSQL says it started), and a
chunk it had reserved but not started has no start to be found dead by.

Redis does not record which worker holds a message; the live workers say which
tasks they hold (celery's ``query_task``: active, reserved, scheduled or not yet
acknowledged). A ledger task's message delivered more than ``GRACE_S`` ago that
no live worker holds is a dead worker's: it goes back to the head of its queue
through kombu's own ``restore_by_tag`` (a WATCH transaction: an acknowledgement
racing with it wins, so nothing is restored twice). Only ledger tasks (a job's
start and its chunks) are restored early: if a live worker failed to answer in
time, their second delivery is a no-op (the claim and ``job_chunks`` are
atomic). Every other task keeps kombu's visibility timeout.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from celery import Celery

logger = logging.getLogger(__name__)

# A message younger than this may still be on its way into a live worker's
# reserved requests (kombu writes ``unacked`` just before celery sees it).
GRACE_S = 5.0
# How long to wait for the live workers' answers (each answers from its main
# process, which tasks never block).
INSPECT_TIMEOUT_S = 1.0


@dataclass(frozen=True, order=True)
class Orphan:
    task_id: str
    task: str
    args: tuple[Any, ...]  # positional, then job_id and chunk_no if sent by keyword
    delivery_tag: str


def unacked(client: Any, unacked_key: str, index_key: str, older_than_s: float) -> list[Orphan]:
    """Messages delivered and not acknowledged, delivered more than ``older_than_s`` ago."""
    ceiling = time.time() - older_than_s
    tags = [
        t.decode() if isinstance(t, bytes) else str(t)
        for t in client.zrangebyscore(index_key, "-inf", ceiling)
    ]
    if not tags:
        return []
    found = []
    for tag, raw in zip(tags, client.hmget(unacked_key, tags), strict=True):
        if raw is None:  # acknowledged meanwhile
            continue
        try:
            payload = json.loads(raw)[0]
            headers = payload["headers"]
            task_id, task = str(headers["id"]), str(headers["task"])
            args = _arguments(json.loads(_body(payload)))
        except (ValueError, KeyError, IndexError, TypeError):
            continue  # not a celery task message in JSON: not ours to judge
        found.append(Orphan(task_id, task, args, tag))
    return sorted(found)


# Ledger tasks may name these by keyword (to be searchable in Flower).
_KEYWORD_ARGS = ("job_id", "chunk_no")


def _arguments(body: Any) -> tuple[Any, ...]:
    """A task's positional arguments, then ``job_id`` and ``chunk_no`` if given by keyword."""
    args, kwargs = body[0], body[1]
    return (*args, *(kwargs[k] for k in _KEYWORD_ARGS if k in kwargs))


def _body(payload: dict[str, Any]) -> bytes | str:
    body = payload["body"]
    if payload.get("properties", {}).get("body_encoding") == "base64":
        return base64.b64decode(body)
    return str(body)


def held_by_live_workers(
    app: Celery, task_ids: Collection[str], timeout_s: float
) -> set[str] | None:
    """Which of ``task_ids`` a live worker holds now; None if no worker answered."""
    replies = app.control.inspect(timeout=timeout_s).query_task(*task_ids)
    if not replies:
        return None
    return {task_id for held in replies.values() for task_id in (held or {})}


def restore_orphans(
    app: Celery,
    task_names: Collection[str],
    grace_s: float = GRACE_S,
    timeout_s: float = INSPECT_TIMEOUT_S,
) -> list[Orphan]:
    """Put back the messages of ``task_names`` that a dead worker held; returns them.

    Does nothing on a broker other than Redis, or when no worker answers (not
    even the one running this: nothing can be told apart then).
    """
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        qos: Any = getattr(channel, "qos", None)
        if not hasattr(qos, "restore_by_tag") or not hasattr(channel, "unacked_key"):
            return []  # not kombu's Redis transport
        client = channel.client
        candidates = [
            o
            for o in unacked(client, channel.unacked_key, channel.unacked_index_key, grace_s)
            if o.task in task_names
        ]
        if not candidates:
            return []
        held = held_by_live_workers(app, {o.task_id for o in candidates}, timeout_s)
        if held is None:
            logger.warning("no worker answered: dead workers' messages not restored")
            return []
        restored = []
        for orphan in candidates:
            if orphan.task_id in held:
                continue
            if client.hexists(channel.unacked_key, orphan.delivery_tag):
                qos.restore_by_tag(orphan.delivery_tag, client=client)
                restored.append(orphan)
    if restored:
        logger.warning(
            "restored messages of dead workers",
            extra={"tasks": [(o.task, list(o.args)) for o in restored]},
        )
    return restored
