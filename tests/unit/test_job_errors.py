"""The retry-or-fail decision every job task makes (tasks.jobs.job_errors), without services."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from tasks import jobs
from worker.errors import DatabaseUnavailable, UsageError


class Retried(Exception):
    def __init__(self, countdown: int, exc: BaseException) -> None:
        super().__init__(countdown)
        self.countdown, self.exc = countdown, exc


def task_at(retries: int) -> Any:
    def retry(countdown: int, exc: BaseException) -> Retried:
        return Retried(countdown, exc)

    return SimpleNamespace(request=SimpleNamespace(retries=retries), retry=retry)


@pytest.fixture
def failed(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str]]:
    calls: list[tuple[int, str]] = []
    monkeypatch.setattr(
        jobs.ledger, "fail", lambda job_id, error: calls.append((job_id, str(error)))
    )
    return calls


@pytest.mark.parametrize("error", [DatabaseUnavailable("db gone"), SoftTimeLimitExceeded()])
def test_a_transient_error_is_retried_with_a_growing_backoff(
    error: BaseException, failed: list[tuple[int, str]]
) -> None:
    for retries, countdown in [(0, 2), (1, 4), (3, 16)]:
        with pytest.raises(Retried) as retried, jobs.job_errors(task_at(retries), 7):
            raise error
        assert (retried.value.countdown, retried.value.exc) == (countdown, error)
    assert failed == []


def test_the_backoff_is_bounded() -> None:
    assert [jobs.backoff(n) for n in range(8)] == [2, 4, 8, 16, 32, 60, 60, 60]


def test_a_transient_error_past_the_last_retry_fails_the_job(failed: list[tuple[int, str]]) -> None:
    with pytest.raises(DatabaseUnavailable), jobs.job_errors(task_at(jobs.MAX_RETRIES), 7):
        raise DatabaseUnavailable("db gone")
    assert failed == [(7, f"gave up after {jobs.MAX_RETRIES} retries: db gone")]


def test_a_permanent_error_fails_the_job_at_once_and_the_task_ends(
    failed: list[tuple[int, str]],
) -> None:
    with jobs.job_errors(task_at(0), 7):
        raise UsageError("--mode must be one of insert, upsert, skip")
    assert failed == [(7, "--mode must be one of insert, upsert, skip")]


def test_an_unexpected_error_fails_the_job_naming_it_and_is_raised(
    failed: list[tuple[int, str]],
) -> None:
    with pytest.raises(KeyError), jobs.job_errors(task_at(0), 7):
        raise KeyError("chunks")
    assert failed == [(7, "internal error: KeyError: 'chunks'")]
