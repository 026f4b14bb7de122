"""A dead worker's unacknowledged messages are handed back at once (worker.orphans).

Real Redis, the real kombu transport and a real Celery worker (threads) that
answers for what it holds. A message is taken from Redis by a consumer that
then dies without acknowledging or restoring it, as a SIGKILLed worker does.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kombu import Connection, Consumer, Exchange, Queue

from worker import chunks
from worker.app import producer_app
from worker.orphans import held_by_live_workers, restore_orphans
from worker.queues import IMPORTS

pytestmark = pytest.mark.usefixtures("worker")

CHUNK_TASK = "tasks.imports.import_chunk"


@pytest.fixture
def queue() -> Iterator[Queue]:
    """A queue no worker consumes, so that what is restored stays there to be seen."""
    name = f"orphans-{uuid.uuid4().hex[:8]}"
    q = Queue(name, Exchange(name, type="direct"), routing_key=name)
    yield q
    with producer_app().connection_for_write() as conn:
        client = conn.default_channel.client
        for tag, raw in client.hgetall("unacked").items():  # what the test left unacknowledged
            if json.loads(raw)[2] == name:
                client.hdel("unacked", tag)
                client.zrem("unacked_index", tag)
        q(conn.default_channel).delete()


def send(
    queue: Queue | str, task: str, args: list[Any], kwargs: dict[str, Any] | None = None
) -> str:
    task_id = str(uuid.uuid4())
    producer_app().send_task(
        task, args=args, kwargs=kwargs, task_id=task_id, queue=queue, ignore_result=True
    )
    return task_id


def taken_by_a_dead_consumer(queue: Queue, count: int) -> None:
    """``count`` messages delivered to a consumer that dies holding them."""
    conn: Connection = producer_app().connection_for_read()
    channel = conn.channel()
    got: list[Any] = []
    channel.basic_qos(0, count, False)
    Consumer(channel, [queue], callbacks=[lambda _b, m: got.append(m)], accept=["json"]).consume()
    deadline = time.monotonic() + 30
    while len(got) < count and time.monotonic() < deadline:
        conn.drain_events(timeout=1)
    assert len(got) == count
    channel.do_restore = False  # it dies: nothing acknowledged, nothing restored
    conn.close()


def queued_ids(queue: Queue) -> list[str]:
    with producer_app().connection_for_write() as conn:
        client = conn.default_channel.client
        return [json.loads(m)["headers"]["id"] for m in client.lrange(queue.name, 0, -1)]


def unacked_ids() -> set[str]:
    with producer_app().connection_for_write() as conn:
        client = conn.default_channel.client
        return {json.loads(v)[0]["headers"]["id"] for v in client.hvals("unacked")}


def test_a_dead_consumers_ledger_message_goes_back_to_its_queue_at_once(queue: Queue) -> None:
    # Given a chunk's message and a non-ledger task's, both held by a dead consumer
    chunk = send(queue, CHUNK_TASK, [1, 0])
    other = send(queue, "tasks.health.run_health_check", [])
    taken_by_a_dead_consumer(queue, 2)
    assert {chunk, other} <= unacked_ids() and queued_ids(queue) == []
    # When recovery looks for them (no grace: delivered just now)
    restored = restore_orphans(producer_app(), {CHUNK_TASK}, grace_s=0)
    # Then the chunk's message is back in its queue, no longer unacknowledged;
    # the other task keeps kombu's visibility timeout
    assert [(o.task_id, o.task, o.args) for o in restored] == [(chunk, CHUNK_TASK, (1, 0))]
    assert queued_ids(queue) == [chunk]
    assert chunk not in unacked_ids() and other in unacked_ids()
    # and a second look restores nothing again
    assert restore_orphans(producer_app(), {CHUNK_TASK}, grace_s=0) == []
    assert queued_ids(queue) == [chunk]


def test_a_chunk_sent_by_keyword_is_restored_with_its_job_and_chunk(queue: Queue) -> None:
    chunk = send(queue, CHUNK_TASK, [], {"job_id": 3, "chunk_no": 4})
    taken_by_a_dead_consumer(queue, 1)
    restored = restore_orphans(producer_app(), {CHUNK_TASK}, grace_s=0)
    assert [(o.task_id, o.args) for o in restored] == [(chunk, (3, 4))]
    assert queued_ids(queue) == [chunk]


def test_a_message_younger_than_the_grace_is_left(queue: Queue) -> None:
    chunk = send(queue, CHUNK_TASK, [2, 0])
    taken_by_a_dead_consumer(queue, 1)
    assert restore_orphans(producer_app(), {CHUNK_TASK}, grace_s=3600) == []
    assert chunk in unacked_ids() and queued_ids(queue) == []


def test_a_message_a_live_worker_holds_is_never_restored() -> None:
    # Given a job's message running on the live worker, its planner waiting on a
    # lock this test holds
    job_id = 987_654_321
    with chunks.holding(job_id, chunks.PLANNER) as conn:
        assert conn is not None
        task_id = send(IMPORTS, "tasks.imports.run_import", [job_id])
        deadline = time.monotonic() + 30
        while task_id not in unacked_ids() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert task_id in unacked_ids()
        # When recovery looks for dead workers' messages
        restored = restore_orphans(producer_app(), {"tasks.imports.run_import"}, grace_s=0)
        # Then the live worker's is not one of them: it says it holds it
        assert task_id in (held_by_live_workers(producer_app(), {task_id}, 2.0) or set())
        assert task_id not in {o.task_id for o in restored}
        assert task_id in unacked_ids()
