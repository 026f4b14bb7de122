"""Unit tests for celeryconfig: the Celery settings DESIGN.md calls not optional.

Read through an app built by ``worker.app.create_app`` from known settings, so
the assertions are about what Celery itself will use (a misspelt setting name
would fall back to Celery's default and fail here).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

import celeryconfig
from worker.app import create_app
from worker.config import Settings, load_settings

REDIS = "redis://127.0.0.1:6379/15"


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in list(os.environ):
        if name.upper().startswith(("CELERY_", "BULKOPS_")):
            monkeypatch.delenv(name)
    return load_settings(
        {"DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/postgres", "REDIS_URL": REDIS}
    )


@pytest.fixture
def app(settings: Settings) -> Iterator[Celery]:
    app = create_app(settings)
    yield app
    app.close()


@pytest.fixture
def conf(app: Celery) -> Any:
    return app.conf


def test_urls_come_from_settings(conf: Any) -> None:
    assert conf.broker_url == REDIS
    assert conf.result_backend == REDIS


def test_json_only_no_pickle(conf: Any) -> None:
    assert conf.accept_content == ["json"]
    assert conf.result_accept_content == ["json"]
    assert conf.task_serializer == "json"
    assert conf.result_serializer == "json"
    assert conf.event_serializer == "json"


def test_late_acks_and_redelivery_on_worker_loss(conf: Any) -> None:
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.worker_cancel_long_running_tasks_on_connection_loss is True


def test_time_limits_are_below_the_visibility_timeout_for_broker_and_backend(
    conf: Any,
) -> None:
    soft, hard = conf.task_soft_time_limit, conf.task_time_limit
    broker_vt = conf.broker_transport_options["visibility_timeout"]
    backend_vt = conf.result_backend_transport_options["visibility_timeout"]
    assert (soft, hard, broker_vt, backend_vt) == (600, 900, 3600, 3600)
    assert soft < hard < broker_vt
    assert hard < backend_vt


def test_time_limits_follow_the_settings(settings: Settings) -> None:
    # Given other limits
    limits = {"BULKOPS_TASK_SOFT_TIME_LIMIT": 100, "BULKOPS_TASK_TIME_LIMIT": 200}
    other = load_settings({**settings.model_dump(), **limits, "BULKOPS_VISIBILITY_TIMEOUT": 300})
    # When the configuration is built from them
    conf = celeryconfig.config(other)
    # Then it carries them, for the broker and the result backend alike
    assert (conf["task_soft_time_limit"], conf["task_time_limit"]) == (100, 200)
    assert conf["broker_transport_options"]["visibility_timeout"] == 300
    assert conf["result_backend_transport_options"]["visibility_timeout"] == 300
    # and the settings it started from keep the defaults
    assert celeryconfig.config(settings)["task_time_limit"] == 900


def test_events_on_for_flower(conf: Any) -> None:
    assert conf.worker_send_task_events is True
    assert conf.task_send_sent_event is True
    assert conf.task_track_started is True


def test_three_queues(conf: Any) -> None:
    names = sorted(q.name for q in conf.task_queues)
    assert names == ["imports", "maintenance", "updates"]
    assert conf.task_default_queue == "maintenance"


@pytest.mark.parametrize(
    ("task", "queue"),
    [
        ("tasks.seeding.run_seed", "imports"),
        ("tasks.seeding.seed_chunk", "imports"),
        ("tasks.imports.run_import", "imports"),
        ("tasks.imports.import_chunk", "imports"),
        ("tasks.updates.run_update", "updates"),
        ("tasks.updates.update_chunk", "updates"),
        ("tasks.health.run_health_check", "maintenance"),
        ("tasks.maintenance.recover_stuck_jobs", "maintenance"),
    ],
)
def test_routes_send_each_kind_of_task_to_its_queue(app: Celery, task: str, queue: str) -> None:
    # Resolved by Celery's own router, as a producer would send it.
    route = app.amqp.router.route({}, task)
    assert route["queue"].name == queue


def test_beat_runs_health_and_recovery_on_the_maintenance_queue(conf: Any) -> None:
    schedule = conf.beat_schedule
    tasks = {entry["task"]: entry for entry in schedule.values()}
    assert set(tasks) == {"tasks.health.run_health_check", "tasks.maintenance.recover_stuck_jobs"}
    assert tasks["tasks.health.run_health_check"]["schedule"] == 60.0
    for entry in tasks.values():
        assert entry["options"]["queue"] == "maintenance"


def test_a_dead_workers_chunk_is_sent_again_within_30_s_by_default(conf: Any) -> None:
    from worker import chunks

    # Given the default settings: a dead backend ends within the client check
    # interval (its locks with it), and beat's recovery runs every so often
    recovery = next(
        e for e in conf.beat_schedule.values() if e["task"].endswith("recover_stuck_jobs")
    )
    interval = float(recovery["schedule"])
    # Then a dead chunk is seen and sent again well inside 30 s (the 300 s stuck
    # period is for lost messages only), and a redelivery waits that long at most
    assert interval + chunks.CLIENT_CHECK_INTERVAL_MS / 1000 <= 15
    assert chunks.CLIENT_CHECK_INTERVAL_MS / 1000 < chunks.HOLDER_GRACE_S < 30
    assert recovery["options"]["expires"] <= interval


def test_registered_tasks_are_namespaced_by_module(app: Celery) -> None:
    # Given an application built from settings (its task modules are imported)
    from worker.app import TASK_MODULES

    ours = {name: task for name, task in app.tasks.items() if name.startswith("tasks.")}
    # Then every module contributes tasks, each named after its module and function
    assert {name.rsplit(".", 1)[0] for name in ours} == set(TASK_MODULES)
    for name, task in ours.items():
        assert name == f"{task.__module__}.{task.run.__name__}", name
    assert {
        "tasks.seeding.run_seed",
        "tasks.seeding.seed_chunk",
        "tasks.health.run_health_check",
        "tasks.maintenance.recover_stuck_jobs",
    } <= set(ours)


def test_redis_broker_uses_the_transport_that_survives_a_lost_connection(conf: Any) -> None:
    # worker.broker: kombu 5.7's channel close crashes the worker on a Redis restart
    from worker.broker import Channel, Transport

    assert conf.broker_transport == "worker.broker:Transport"
    app = Celery("bulkops-transport-test", set_as_current=False)
    app.conf.update(broker_url=conf.broker_url, broker_transport=conf.broker_transport)
    with app.connection_for_write() as connection:
        assert isinstance(connection.transport, Transport)
        assert (connection.hostname, connection.port, connection.virtual_host) == (
            "127.0.0.1",
            6379,
            "15",
        )
        assert connection.transport.Channel is Channel
    app.close()


def test_tls_broker_keeps_kombus_own_transport() -> None:
    from worker.broker import transport_for

    assert transport_for("rediss://broker:6380/0") is None
    assert transport_for("redis://broker:6379/0") == "worker.broker:Transport"
