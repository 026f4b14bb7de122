"""worker.app: an app built from settings, the environment's app, and ``using``."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from worker import db
from worker.app import app, create_app, producer_app, using
from worker.config import get_settings, load_settings, reset_settings

DB = "postgresql://postgres@127.0.0.1:5432/"
REDIS = "redis://127.0.0.1:6379/"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.upper().startswith(("DATABASE_URL", "REDIS_URL", "CELERY_", "BULKOPS_")):
            monkeypatch.delenv(name)
    reset_settings()
    yield
    reset_settings()


def test_using_installs_settings_engine_and_producers_and_restores_them() -> None:
    outer, inner = (
        load_settings({"DATABASE_URL": DB + name, "REDIS_URL": REDIS + n})
        for name, n in (("outer", "3"), ("inner", "4"))
    )
    # Given a block on the outer settings
    with using(outer) as outer_app:
        outer_engine = db.get_engine()
        assert (get_settings(), producer_app()) == (outer, outer_app)
        assert outer_engine.url.database == "outer"
        assert outer_app.conf.broker_url == REDIS + "3"
        # When a block on other settings runs inside it
        with using(inner) as inner_app:
            # Then the inner block has its own settings, engine and producers' app
            assert (get_settings(), producer_app()) == (inner, inner_app)
            assert db.get_engine().url.database == "inner"
            assert inner_app.conf.broker_url == REDIS + "4"
        # and after it the outer ones are back
        assert (get_settings(), producer_app(), db.get_engine()) == (
            outer,
            outer_app,
            outer_engine,
        )
    # and after both, the environment's app sends the jobs again
    assert producer_app() is app


def test_an_app_built_from_settings_reads_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", REDIS + "9")
    built = create_app(load_settings({"DATABASE_URL": DB, "REDIS_URL": REDIS + "5"}))
    try:
        assert (built.conf.broker_url, built.conf.result_backend) == (REDIS + "5", REDIS + "5")
        assert "tasks.seeding.seed_chunk" in built.tasks  # a worker can run it
    finally:
        built.close()


def test_the_environments_app_reads_it_on_first_use_and_names_a_missing_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env_app, other = create_app(), create_app()  # no DATABASE_URL yet: nothing fails yet
    try:
        with pytest.raises(SystemExit, match="bulkops: DATABASE_URL is not set"):
            _ = env_app.conf.broker_url
        # and once the environment has the URLs, what it says wins over Celery's defaults
        monkeypatch.setenv("DATABASE_URL", DB)
        monkeypatch.setenv("REDIS_URL", REDIS + "6")
        reset_settings()
        conf = other.conf
        assert (conf.broker_url, conf.task_default_queue) == (REDIS + "6", "maintenance")
        assert {"health-check", "recover-stuck-jobs"} <= set(conf.beat_schedule)
        assert conf.accept_content == ["json"]
    finally:
        env_app.close()
        other.close()
        app.set_current()  # the environment's app is Celery's current app again
