"""Every environment variable bulkops reads, in one typed object.

Nothing else in the project calls ``os.environ`` for configuration. A missing
or malformed URL raises :class:`worker.errors.ConfigError` with one line that
names the variable; there is never a silent default database or broker.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Mapping
from pathlib import Path

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.errors import ConfigError

# Environment variable -> what it is for; README's configuration table mirrors it.
REQUIRED_URLS = ("DATABASE_URL", "REDIS_URL")


class Settings(BaseSettings):
    """bulkops configuration, read from the environment (names are upper case)."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    database_url: str = Field(description="PostgreSQL URL (postgresql://...)")
    redis_url: str = Field(description="Redis URL (redis://...)")
    celery_broker_url: str | None = None
    celery_result_backend: str | None = None

    db_pool_size: int = Field(5, ge=1)
    db_max_overflow: int = Field(5, ge=0)
    db_pool_timeout: float = Field(30.0, gt=0)
    db_pool_recycle: int = Field(1800, ge=-1)
    db_pool_pre_ping: bool = True

    bulkops_import_root: Path = Path(".")
    bulkops_chunk_size: int = Field(20_000, ge=1, le=1_000_000)
    # Rows per status-update batch: one short transaction each (aim: well under 1 s).
    bulkops_update_batch_size: int = Field(10_000, ge=1, le=1_000_000)
    bulkops_health_interval: float = Field(60.0, gt=0)
    bulkops_health_retention_days: float = Field(7.0, gt=0)
    # A job queued this long without a claim, or running without a heartbeat
    # this long, is re-sent by the maintenance task (bounded by max attempts).
    bulkops_stuck_after_s: float = Field(300.0, gt=0)
    bulkops_max_attempts: int = Field(3, ge=1)
    # Celery time limits per chunk task; both must stay under the Redis
    # visibility timeout or a slow chunk is delivered twice while it runs.
    bulkops_task_soft_time_limit: int = Field(600, gt=0)
    bulkops_task_time_limit: int = Field(900, gt=0)
    bulkops_visibility_timeout: int = Field(3600, gt=0)
    # Keep an uploaded import file (a PostgreSQL large object) after its job
    # ends, e.g. to re-run or audit it; by default it is removed.
    bulkops_keep_uploads: bool = False
    # Where `bulkops import --upload`/`-` and worker.client stream uploads:
    # unset (or "postgres"), PostgreSQL large objects; else an fsspec URL
    # every worker can read (s3://bucket/prefix, gs://…, file:///shared/uploads).
    bulkops_upload_store: str | None = None
    # A JSON (or YAML) file of periodic bulk jobs for beat (worker/schedules.py).
    bulkops_schedule: Path | None = None
    # A folder under the import root whose new files beat imports once each,
    # once unchanged for BULKOPS_DROP_SETTLE_S (so a file being written waits).
    bulkops_drop_folder: Path | None = None
    bulkops_drop_settle_s: float = Field(10.0, gt=0)
    # module:attribute naming the team's declared targets (worker/targets.py);
    # unset: the built-in todos/users example.
    bulkops_targets: str | None = None
    # "development" marks a database that `bulkops reset` may drop and rebuild;
    # anything else (the default: unset) makes reset refuse.
    bulkops_env: str = ""

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgresql+psycopg2://", "postgres://")):
            raise ValueError("must be a postgresql:// URL")
        if value.startswith("postgres://"):
            value = "postgresql://" + value[len("postgres://") :]
        return value

    @field_validator("bulkops_upload_store")
    @classmethod
    def _store_url(cls, value: str | None) -> str | None:
        if value is None or value.strip() in ("", "postgres"):
            return None
        if "://" not in value:
            raise ValueError("must be postgres or an fsspec URL (s3://…, gs://…, file:///…)")
        return value.strip()

    @field_validator("redis_url", "celery_broker_url", "celery_result_backend")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis:// URL")
        return value

    @model_validator(mode="after")
    def _limits_ordered(self) -> Settings:
        if not (
            self.bulkops_task_soft_time_limit
            < self.bulkops_task_time_limit
            < self.bulkops_visibility_timeout
        ):
            raise ValueError(
                "BULKOPS_TASK_SOFT_TIME_LIMIT < BULKOPS_TASK_TIME_LIMIT < "
                "BULKOPS_VISIBILITY_TIMEOUT must hold"
            )
        return self

    @property
    def broker_url(self) -> str:
        return self.celery_broker_url or self.redis_url

    @property
    def result_backend(self) -> str:
        return self.celery_result_backend or self.redis_url

    @property
    def sqlalchemy_url(self) -> str:
        return sqlalchemy_url(self.database_url)

    @property
    def import_root(self) -> Path:
        return self.bulkops_import_root.expanduser().resolve()


def sqlalchemy_url(url: str) -> str:
    """The URL with the psycopg2 driver named (SQLAlchemy 2.1 defaults to psycopg 3)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url


def _explain(exc: ValidationError) -> str:
    first = exc.errors()[0]
    name = str(first["loc"][0]).upper() if first["loc"] else "configuration"
    if first["type"] == "missing":
        return f"{name} is not set (see README, Configuration)"
    return f"{name} is invalid: {first['msg']}"


def load_settings(values: Mapping[str, object] | None = None) -> Settings:
    """Settings from ``values`` (variable names, any case), the environment for the rest.

    Raises ConfigError naming the bad variable. A value of None unsets a variable.
    """
    fields = Settings.model_fields
    given = {k.lower(): v for k, v in (values or {}).items() if k.lower() in fields}
    for name, value in given.items():
        if value is None and not fields[name].is_required():  # unset: its default
            given[name] = fields[name].get_default(call_default_factory=True)
    try:
        return Settings(**given)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(_explain(exc)) from None


# Settings installed by worker.app.using (a stack, innermost last): process-wide,
# not per thread, so an in-process worker's threads see what the test installed.
_installed: list[Settings] = []


@functools.cache
def _from_environment() -> Settings:
    return load_settings()


def get_settings() -> Settings:
    """The settings in use: those installed by ``worker.app.using``, else the environment's."""
    return _installed[-1] if _installed else _from_environment()


@contextlib.contextmanager
def installed(settings: Settings) -> Iterator[Settings]:
    """``get_settings()`` returns ``settings`` inside the block (see ``worker.app.using``)."""
    _installed.append(settings)
    try:
        yield settings
    finally:
        _installed.pop()


class _TargetsSetting(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")
    bulkops_targets: str | None = None


def targets_reference() -> str | None:
    """``BULKOPS_TARGETS`` alone: listing targets needs no database or broker URL."""
    if _installed:
        return _installed[-1].bulkops_targets or None
    return _TargetsSetting().bulkops_targets or None


def reset_settings() -> None:
    """Forget the environment's cached settings (the environment changed)."""
    _from_environment.cache_clear()
