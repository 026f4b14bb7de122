"""Unit tests for worker.config: fail fast, name the variable, never fall back."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from worker.config import get_settings, reset_settings, sqlalchemy_url
from worker.errors import ConfigError, PermanentError

DB = "postgresql://app:secret@db.internal:5432/app"
REDIS = "redis://redis.internal:6379/0"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No bulkops variable from the surrounding shell leaks into these tests."""
    prefixes = ("DATABASE_URL", "REDIS_URL", "CELERY_", "DB_POOL_", "DB_MAX_", "BULKOPS_")
    for name in list(os.environ):
        if name.upper().startswith(prefixes):
            monkeypatch.delenv(name)
    reset_settings()
    yield
    reset_settings()


def set_urls(
    monkeypatch: pytest.MonkeyPatch, db: str | None = DB, redis: str | None = REDIS
) -> None:
    if db is not None:
        monkeypatch.setenv("DATABASE_URL", db)
    if redis is not None:
        monkeypatch.setenv("REDIS_URL", redis)


def config_error(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reset_settings()
    with pytest.raises(ConfigError) as info:
        get_settings()
    return info.value.message


def test_missing_database_url_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    set_urls(monkeypatch, db=None)
    message = config_error(monkeypatch)
    assert message.startswith("DATABASE_URL is not set")
    assert "REDIS_URL" not in message


def test_missing_redis_url_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    set_urls(monkeypatch, redis=None)
    message = config_error(monkeypatch)
    assert message.startswith("REDIS_URL is not set")
    assert "DATABASE_URL" not in message


def test_nothing_set_is_an_error_not_a_default_database() -> None:
    # Given an environment with neither URL, there is no silent fallback
    with pytest.raises(ConfigError) as info:
        get_settings()
    assert "_URL is not set" in info.value.message
    # and a configuration error is permanent: retrying will not fix it
    assert isinstance(info.value, PermanentError)


@pytest.mark.parametrize(
    "url",
    [
        "mysql://app@db/app",
        "sqlite:///app.db",
        "db.internal:5432/app",
        "postgresql+asyncpg://app@db/app",
        "",
    ],
)
def test_malformed_database_url_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    set_urls(monkeypatch, db=url)
    message = config_error(monkeypatch)
    assert message.startswith("DATABASE_URL is invalid")
    assert "postgresql://" in message


@pytest.mark.parametrize("variable", ["REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"])
def test_malformed_redis_urls_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    set_urls(monkeypatch)
    message = config_error(monkeypatch, **{variable: "amqp://guest@rabbit//"})
    assert message.startswith(f"{variable} is invalid")


@pytest.mark.parametrize(
    ("variable", "value"),
    [("DB_POOL_SIZE", "0"), ("DB_POOL_TIMEOUT", "-1"), ("BULKOPS_CHUNK_SIZE", "many")],
)
def test_malformed_numbers_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    set_urls(monkeypatch)
    assert config_error(monkeypatch, **{variable: value}).startswith(f"{variable} is invalid")


@pytest.mark.parametrize(
    ("soft", "hard", "visibility"),
    [
        ("900", "900", "3600"),  # soft == hard
        ("900", "600", "3600"),  # soft > hard
        ("600", "3600", "3600"),  # hard == visibility: redelivered while it runs
        ("600", "900", "800"),  # visibility below the hard limit
    ],
)
def test_time_limits_must_be_below_the_visibility_timeout(
    monkeypatch: pytest.MonkeyPatch, soft: str, hard: str, visibility: str
) -> None:
    set_urls(monkeypatch)
    message = config_error(
        monkeypatch,
        BULKOPS_TASK_SOFT_TIME_LIMIT=soft,
        BULKOPS_TASK_TIME_LIMIT=hard,
        BULKOPS_VISIBILITY_TIMEOUT=visibility,
    )
    for name in (
        "BULKOPS_TASK_SOFT_TIME_LIMIT",
        "BULKOPS_TASK_TIME_LIMIT",
        "BULKOPS_VISIBILITY_TIMEOUT",
    ):
        assert name in message


def test_ordered_time_limits_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    set_urls(monkeypatch)
    monkeypatch.setenv("BULKOPS_TASK_SOFT_TIME_LIMIT", "10")
    monkeypatch.setenv("BULKOPS_TASK_TIME_LIMIT", "20")
    monkeypatch.setenv("BULKOPS_VISIBILITY_TIMEOUT", "30")
    s = get_settings()
    assert (
        s.bulkops_task_soft_time_limit,
        s.bulkops_task_time_limit,
        s.bulkops_visibility_timeout,
    ) == (10, 20, 30)


def test_defaults_are_the_documented_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    set_urls(monkeypatch)
    s = get_settings()
    assert (s.db_pool_size, s.db_max_overflow, s.db_pool_timeout, s.db_pool_recycle) == (
        5,
        5,
        30.0,
        1800,
    )
    assert s.db_pool_pre_ping is True
    assert s.bulkops_chunk_size == 20_000
    assert (s.bulkops_health_interval, s.bulkops_health_retention_days) == (60.0, 7.0)
    assert (s.bulkops_stuck_after_s, s.bulkops_max_attempts) == (300.0, 3)
    assert (
        s.bulkops_task_soft_time_limit,
        s.bulkops_task_time_limit,
        s.bulkops_visibility_timeout,
    ) == (600, 900, 3600)
    # REDIS_URL is broker and result backend unless overridden
    assert s.broker_url == REDIS and s.result_backend == REDIS


def test_broker_and_backend_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    set_urls(monkeypatch)
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://broker:6379/1")
    monkeypatch.setenv("CELERY_RESULT_BACKEND", "redis://results:6379/2")
    s = get_settings()
    assert s.broker_url == "redis://broker:6379/1"
    assert s.result_backend == "redis://results:6379/2"
    assert s.redis_url == REDIS


def test_postgres_scheme_is_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    set_urls(monkeypatch, db="postgres://app:secret@db.internal:5432/app")
    s = get_settings()
    assert s.database_url == DB
    assert s.sqlalchemy_url == "postgresql+psycopg2://app:secret@db.internal:5432/app"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u@h/d", "postgresql+psycopg2://u@h/d"),
        ("postgres://u@h/d", "postgresql+psycopg2://u@h/d"),
        ("postgresql+psycopg2://u@h/d", "postgresql+psycopg2://u@h/d"),
    ],
)
def test_sqlalchemy_url_names_psycopg2(url: str, expected: str) -> None:
    assert sqlalchemy_url(url) == expected


def test_settings_are_cached_until_reset(monkeypatch: pytest.MonkeyPatch) -> None:
    set_urls(monkeypatch)
    first = get_settings()
    monkeypatch.setenv("DB_POOL_SIZE", "9")
    assert get_settings() is first
    reset_settings()
    assert get_settings().db_pool_size == 9


def test_load_settings_takes_given_values_over_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from worker.config import load_settings

    # Given an environment with its own URLs and settings
    set_urls(monkeypatch)
    monkeypatch.setenv("BULKOPS_KEEP_UPLOADS", "true")
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://elsewhere:6379/1")
    # When settings are loaded from values (environment names, any case)
    given = {"redis_url": "redis://mine:6379/2", "BULKOPS_KEEP_UPLOADS": None}
    s = load_settings({**given, "CELERY_BROKER_URL": None})
    # Then the values win, None is the default, and the rest comes from the environment
    assert (s.redis_url, s.broker_url, s.bulkops_keep_uploads) == (
        "redis://mine:6379/2",
        "redis://mine:6379/2",
        False,
    )
    assert s.database_url == DB
    # and a bad value is named like a bad variable
    with pytest.raises(ConfigError, match="BULKOPS_CHUNK_SIZE is invalid"):
        load_settings({"BULKOPS_CHUNK_SIZE": "0"})
