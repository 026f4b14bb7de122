"""Messages land in exactly one queue: the one their task is routed to."""

from __future__ import annotations

import redis

from worker.app import create_app
from worker.client import JOB_TASKS
from worker.config import load_settings
from worker.queues import IMPORTS, MAINTENANCE, QUEUES, UPDATES


def test_each_message_lands_in_its_own_queue_only(
    bulkops_env: dict[str, str], idle_redis_url: str
) -> None:
    # Given our Celery configuration on a Redis database with no consumer
    url = idle_redis_url
    client = redis.Redis.from_url(url)
    client.delete(*QUEUES)
    broker = {"REDIS_URL": url, "CELERY_BROKER_URL": None, "CELERY_RESULT_BACKEND": None}
    producer = create_app(load_settings({**bulkops_env, **broker}))
    # A worker declares its queues (and their bindings) when it starts.
    with producer.connection_for_write() as conn:
        for queue in producer.amqp.queues.values():
            queue.bind(conn.default_channel).declare()
    try:
        # When one job message of each kind and one health check are sent
        for name, queue_name in JOB_TASKS.values():
            producer.send_task(name, args=[0], queue=queue_name)
        producer.send_task("tasks.health.run_health_check")
        # Then each queue holds exactly the messages routed to it (none copied)
        depths = {q: client.llen(q) for q in QUEUES}
        assert depths == {IMPORTS: 2, UPDATES: 1, MAINTENANCE: 1}
    finally:
        client.delete(*QUEUES)
        client.close()
        producer.close()
