"""The Celery configuration (lowercase setting names), every value from a ``Settings``.

``worker.app.create_app`` passes it to the Celery app it builds; nothing here
reads the environment or connects to a broker.
"""

from __future__ import annotations

from typing import Any

from kombu.entity import Exchange, Queue

from worker.broker import transport_for
from worker.config import Settings
from worker.queues import IMPORTS, MAINTENANCE, QUEUES, UPDATES

# Recovery runs this often: a dead worker's chunk (its lock gone as soon as
# PostgreSQL ends its backend, within CLIENT_CHECK_INTERVAL_MS) runs again within
# about this interval plus that check, well inside 30 s. Stuck jobs (lost
# messages) still wait BULKOPS_STUCK_AFTER_S.
RECOVERY_INTERVAL_S = 10.0


def config(s: Settings) -> dict[str, Any]:
    """Celery's settings for ``s``; raises ConfigError for a bad BULKOPS_SCHEDULE file."""
    return {
        "broker_url": s.broker_url,
        # kombu's Redis transport with a channel that survives closing on a lost
        # connection: without it a Redis restart kills the worker's main process.
        "broker_transport": transport_for(s.broker_url),
        "result_backend": s.result_backend,
        # JSON only: a pickled message is refused, never executed.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "event_serializer": "json",
        # A task is acknowledged after it ran, and re-delivered if its worker dies; the
        # job ledger (exactly-once chunks) makes the second run harmless.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # soft < hard < visibility timeout (validated in worker.config): a chunk that
        # outlives the Redis visibility timeout would be delivered again while it runs.
        "task_soft_time_limit": s.bulkops_task_soft_time_limit,
        "task_time_limit": s.bulkops_task_time_limit,
        "broker_transport_options": {
            "visibility_timeout": s.bulkops_visibility_timeout,
            # Sweep for messages of dead workers every 10 s (kombu's default scans only
            # every 10th sweep); a message is restored once its visibility timeout passed.
            "unacked_restore_interval": 10,
            "unacked_restore_throttle": 1,
        },
        "result_backend_transport_options": {"visibility_timeout": s.bulkops_visibility_timeout},
        "result_expires": 24 * 3600,
        # Producers fail fast when Redis is down instead of hanging the CLI.
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 5,
        "redis_socket_connect_timeout": 5,
        "redis_socket_timeout": 30,
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 1,
        },
        # Separate queues, so a health check never waits behind a million-row import.
        "task_default_queue": MAINTENANCE,
        # Each queue has its own direct exchange and routing key: bound to one shared
        # default exchange and key, every message would be copied into every queue.
        "task_queues": [_queue(name) for name in QUEUES],
        "task_default_exchange": MAINTENANCE,
        "task_default_routing_key": MAINTENANCE,
        "task_routes": {
            "tasks.imports.*": {"queue": IMPORTS},
            "tasks.seeding.*": {"queue": IMPORTS},
            "tasks.updates.*": {"queue": UPDATES},
            "tasks.health.*": {"queue": MAINTENANCE},
            "tasks.maintenance.*": {"queue": MAINTENANCE},
            "tasks.jobs.submit": {"queue": MAINTENANCE},
        },
        # Events for Flower.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_track_started": True,
        "timezone": "UTC",
        "enable_utc": True,
        "beat_schedule": beat_schedule(s),
    }


def _queue(name: str) -> Queue:
    exchange = Exchange(name, type="direct")  # type: ignore[no-untyped-call]
    return Queue(name, exchange, routing_key=name)  # type: ignore[no-untyped-call]


def beat_schedule(s: Settings) -> dict[str, Any]:
    """Health, recovery, and the periodic jobs and drop folder ``s`` names."""
    schedule: dict[str, Any] = {
        "health-check": {
            "task": "tasks.health.run_health_check",
            "schedule": s.bulkops_health_interval,
            "options": {"queue": MAINTENANCE, "expires": s.bulkops_health_interval},
        },
        "recover-stuck-jobs": {
            "task": "tasks.maintenance.recover_stuck_jobs",
            "schedule": min(RECOVERY_INTERVAL_S, max(1.0, s.bulkops_stuck_after_s / 4)),
            "options": {"queue": MAINTENANCE, "expires": RECOVERY_INTERVAL_S},
        },
    }
    if s.bulkops_schedule is not None:  # periodic bulk jobs (worker/schedules.py)
        from worker import schedules

        schedule.update(schedules.beat_entries(schedules.load(s.bulkops_schedule), MAINTENANCE))
    if s.bulkops_drop_folder is not None:  # a watched drop folder (worker/schedules.py)
        schedule["drop-folder"] = {
            "task": "tasks.jobs.watch_drop_folder",
            "schedule": s.bulkops_drop_settle_s,
            "options": {"queue": MAINTENANCE, "expires": s.bulkops_drop_settle_s},
        }
    return schedule
