"""Acceptance: the ``bulkops`` CLI and ``celery -A worker worker`` as a user runs them.

Every program runs as a real subprocess against the test PostgreSQL (a fresh
migrated database per test) and this layer's own Redis database.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from acceptance_support import (
    CONFIG_VARS,
    describe,
    free_closed_port,
    query,
    run_bulkops,
    run_program,
    without,
)

from worker import client
from worker.queues import IMPORTS, QUEUES
from worker.supervisor import worker_command

pytestmark = pytest.mark.acceptance

CHECK_NAMES = ["database", "pool", "redis", "queues", "jobs"]
SUMMARY_KEYS = {
    "id",
    "kind",
    "state",
    "rows_read",
    "rows_inserted",
    "rows_updated",
    "rows_skipped",
    "rows_rejected",
    "elapsed_s",
    "error",
}
WAIT_TIMEOUT_S = 180.0


def one_json_object(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """stdout is exactly one JSON object on one line, and nothing else."""
    assert result.stdout.endswith("\n") and result.stdout.count("\n") == 1, describe(result)
    data = json.loads(result.stdout)
    assert isinstance(data, dict), describe(result)
    return data


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """stderr is one line, no traceback; stdout is empty."""
    assert "Traceback" not in result.stderr, describe(result)
    assert result.stdout == "", describe(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, describe(result)
    return lines[0]


def table_fingerprint(env: dict[str, str]) -> tuple[Any, ...]:
    """Row counts and a digest of every column of users and todos."""
    return (
        query(env, "SELECT count(*) FROM users"),
        query(env, "SELECT count(*) FROM todos"),
        query(
            env,
            "SELECT md5(string_agg(concat_ws('|', id, email, name, created_at, updated_at), "
            "',' ORDER BY id)) FROM users",
        ),
        query(
            env,
            "SELECT md5(string_agg(concat_ws('|', id, title, status, owner_id, created_at, "
            "updated_at), ',' ORDER BY id)) FROM todos",
        ),
    )


def checks_by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    assert [c["name"] for c in report["checks"]] == CHECK_NAMES, report
    return {c["name"]: c for c in report["checks"]}


# --- 1. seed --wait --json -------------------------------------------------------------


def test_seed_wait_json_loads_every_row_once_and_a_second_run_adds_nothing(
    bulkops_env: dict[str, str], celery_worker_process: Any
) -> None:
    # Given a running worker and a freshly migrated, empty database
    assert query(bulkops_env, "SELECT count(*) FROM users") == 0
    args = ("seed", "--users", "40", "--todos-per-user", "30", "--random-seed", "7")

    # When a user seeds 40 users x 30 todos and waits for the job
    first = run_bulkops(bulkops_env, *args, "--wait", "--json", timeout=WAIT_TIMEOUT_S)

    # Then the command succeeds and prints one JSON summary of the finished job
    assert first.returncode == 0, describe(first)
    summary = one_json_object(first)
    assert SUMMARY_KEYS <= summary.keys(), summary
    assert summary["kind"] == "seed"
    assert summary["state"] == "succeeded"
    assert summary["error"] is None
    assert summary["rows_read"] == 40 + 40 * 30
    assert summary["rows_inserted"] == 40 + 40 * 30
    assert summary["rows_skipped"] == 0
    assert summary["rows_rejected"] == 0
    assert isinstance(summary["elapsed_s"], int | float) and summary["elapsed_s"] >= 0
    # ... and the database holds exactly the seeded rows
    assert query(bulkops_env, "SELECT count(*) FROM users") == 40
    assert query(bulkops_env, "SELECT count(*) FROM todos") == 1200
    before = table_fingerprint(bulkops_env)

    # When the same seed runs again
    second = run_bulkops(bulkops_env, *args, "--wait", "--json", timeout=WAIT_TIMEOUT_S)

    # Then it is a new job that inserts nothing, skips every row, and changes no row
    assert second.returncode == 0, describe(second)
    again = one_json_object(second)
    assert again["id"] != summary["id"]
    assert again["state"] == "succeeded"
    assert again["rows_inserted"] == 0
    assert again["rows_skipped"] == 40 + 40 * 30
    assert again["rows_rejected"] == 0
    assert table_fingerprint(bulkops_env) == before


# --- 2. seed without --wait --------------------------------------------------------------


def _queued_messages(redis_url: str, queue: str) -> list[dict[str, Any]]:
    with redis.Redis.from_url(redis_url) as r:
        return [json.loads(raw) for raw in r.lrange(queue, 0, -1)]


def test_seed_without_wait_prints_the_queued_job_which_a_worker_started_later_runs(
    bulkops_env: dict[str, str], request: pytest.FixtureRequest
) -> None:
    # Given no worker is running yet
    # When a user submits a seed without --wait
    result = run_bulkops(bulkops_env, "seed", "--users", "2", "--json")

    # Then it exits 0 and prints just the submitted job: its id and state "queued"
    assert result.returncode == 0, describe(result)
    submitted = one_json_object(result)
    assert set(submitted) == {"id", "state"}
    assert isinstance(submitted["id"], int)
    assert submitted["state"] == "queued"
    job_id = submitted["id"]
    # ... the ledger has the job queued, and Redis holds one JSON message carrying only its id
    assert (
        query(bulkops_env, "SELECT state FROM bulkops_ledger.jobs WHERE id = :id", id=job_id)
        == "queued"
    )
    messages = _queued_messages(bulkops_env["REDIS_URL"], IMPORTS)
    assert len(messages) == 1
    message = messages[0]
    assert message["content-type"] == "application/json"
    assert message["headers"]["task"] == "tasks.seeding.run_seed"
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert (args, kwargs) == ([job_id], {})

    # When a worker starts afterwards
    request.getfixturevalue("celery_worker_process")

    # Then the job that waited in Redis runs to completion
    done = client.wait(job_id, timeout=WAIT_TIMEOUT_S)
    assert done.state == "succeeded"
    assert done.rows_inserted == 2 + 2 * 5  # defaults: 5 todos per user
    assert query(bulkops_env, "SELECT count(*) FROM todos") == 10


# --- 3. job / jobs ------------------------------------------------------------------------


def test_job_and_jobs_show_a_finished_job(
    bulkops_env: dict[str, str], celery_worker_process: Any
) -> None:
    # Given a finished seeding job
    seeded = run_bulkops(
        bulkops_env,
        "seed",
        "--users",
        "3",
        "--todos-per-user",
        "2",
        "--wait",
        "--json",
        timeout=WAIT_TIMEOUT_S,
    )
    assert seeded.returncode == 0, describe(seeded)
    summary = one_json_object(seeded)
    job_id = summary["id"]

    # When a user asks for that job as JSON
    shown = run_bulkops(bulkops_env, "job", str(job_id), "--json")
    # Then it is the same summary --wait printed
    assert shown.returncode == 0, describe(shown)
    assert one_json_object(shown) == summary

    # When a user asks for it as text
    plain = run_bulkops(bulkops_env, "job", str(job_id))
    # Then one line tells its kind, state and counters
    assert plain.returncode == 0, describe(plain)
    assert plain.stdout.startswith(f"job {job_id} (seed): succeeded"), describe(plain)
    assert "inserted=9" in plain.stdout

    # When a user lists jobs as JSON
    listed = run_bulkops(bulkops_env, "jobs", "--json")
    # Then the list holds the job with the same summary
    assert listed.returncode == 0, describe(listed)
    jobs = json.loads(listed.stdout)
    assert isinstance(jobs, list)
    assert [j for j in jobs if j["id"] == job_id] == [summary]

    # When filtering by state
    succeeded = run_bulkops(bulkops_env, "jobs", "--state", "succeeded", "--json")
    failed = run_bulkops(bulkops_env, "jobs", "--state", "failed", "--json")
    # Then only matching jobs are listed
    assert succeeded.returncode == 0 and failed.returncode == 0, describe(failed)
    assert job_id in {j["id"] for j in json.loads(succeeded.stdout)}
    assert json.loads(failed.stdout) == []


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_unknown_job_is_a_usage_error_on_one_line(
    bulkops_env: dict[str, str], as_json: bool
) -> None:
    # Given a database with no job 999999
    # When a user asks for it
    result = run_bulkops(bulkops_env, "job", "999999", *(["--json"] if as_json else []))
    # Then exit 2, one line on stderr naming the id, nothing on stdout, no traceback
    assert result.returncode == 2, describe(result)
    assert "999999" in one_line_error(result)


def test_a_long_usage_error_stays_on_one_line(bulkops_env: dict[str, str]) -> None:
    # Given an invalid state filter long enough to pass 80 columns in the message
    state = "no-such-state-" + "x" * 70
    # When a user filters jobs by it
    result = run_bulkops(without(bulkops_env, "COLUMNS"), "jobs", "--state", state)
    # Then exit 2 and the whole message is one line on stderr
    assert result.returncode == 2, describe(result)
    assert state in one_line_error(result)


# --- 4. health ------------------------------------------------------------------------------


def test_health_json_is_healthy_with_every_check_and_is_recorded(
    bulkops_env: dict[str, str],
) -> None:
    # Given reachable PostgreSQL and Redis
    recorded_before = query(bulkops_env, "SELECT count(*) FROM bulkops_ledger.health_checks")

    # When a user checks health as JSON
    result = run_bulkops(bulkops_env, "health", "--json")

    # Then exit 0, healthy, and every named check passed with a detail
    assert result.returncode == 0, describe(result)
    report = one_json_object(result)
    assert report["healthy"] is True
    checks = checks_by_name(report)
    for name, check in checks.items():
        assert check["ok"] is True, check
        assert isinstance(check["detail"], str) and check["detail"], name
    assert set(checks["queues"]["data"]["depth"]) == set(QUEUES)
    # ... and the run was recorded in the ledger as healthy
    assert (
        query(bulkops_env, "SELECT count(*) FROM bulkops_ledger.health_checks")
        == recorded_before + 1
    )
    assert query(
        bulkops_env, "SELECT healthy FROM bulkops_ledger.health_checks ORDER BY id DESC LIMIT 1"
    )


def test_health_with_redis_unreachable_is_unhealthy_and_says_why(
    bulkops_env: dict[str, str],
) -> None:
    # Given REDIS_URL points at a port nothing listens on
    env = {**bulkops_env, "REDIS_URL": f"redis://127.0.0.1:{free_closed_port()}/0"}

    # When a user checks health as JSON
    result = run_bulkops(env, "health", "--json")

    # Then exit 1, unhealthy, the redis check explains the refusal; no traceback
    assert result.returncode == 1, describe(result)
    assert "Traceback" not in result.stderr, describe(result)
    report = one_json_object(result)
    assert report["healthy"] is False
    checks = checks_by_name(report)
    assert checks["redis"]["ok"] is False
    assert "refused" in checks["redis"]["detail"].lower(), checks["redis"]
    assert checks["queues"]["ok"] is False
    assert checks["database"]["ok"] is True

    # When the same check runs without --json
    text = run_bulkops(env, "health")

    # Then one line per check (redis failed), then "unhealthy", and exit 1
    assert text.returncode == 1, describe(text)
    assert "Traceback" not in text.stderr, describe(text)
    lines = text.stdout.splitlines()
    assert len(lines) == len(CHECK_NAMES) + 1, describe(text)
    marks = {line.split()[1]: line.split()[0] for line in lines[:-1]}
    assert list(marks) == CHECK_NAMES, describe(text)
    assert marks["redis"] == "FAIL" and marks["database"] == "ok", describe(text)
    assert lines[-1] == "unhealthy"


def test_health_with_database_unreachable_is_unhealthy_and_says_why(
    bulkops_env: dict[str, str],
) -> None:
    # Given DATABASE_URL points at a port nothing listens on
    env = {
        **bulkops_env,
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_closed_port()}/bulkops",
    }

    # When a user checks health as JSON
    result = run_bulkops(env, "health", "--json")

    # Then exit 1, unhealthy, the database check failed with the reason; no traceback
    assert result.returncode == 1, describe(result)
    assert "Traceback" not in result.stderr, describe(result)
    report = one_json_object(result)
    assert report["healthy"] is False
    checks = checks_by_name(report)
    assert checks["database"]["ok"] is False
    assert "refused" in checks["database"]["detail"].lower(), checks["database"]
    assert checks["jobs"]["ok"] is False
    assert checks["redis"]["ok"] is True


# --- 5. missing configuration -------------------------------------------------------------


@pytest.mark.parametrize("missing", ["DATABASE_URL", "REDIS_URL"])
def test_seed_without_a_required_variable_names_it_on_one_line(
    bulkops_env: dict[str, str], missing: str
) -> None:
    # Given the environment lacks one required URL (and no override stands in for it)
    env = without(bulkops_env, missing, "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")

    # When a user seeds
    result = run_bulkops(env, "seed")

    # Then exit 2 with one line naming the variable, and no job was written
    assert result.returncode == 2, describe(result)
    assert missing in one_line_error(result)
    assert query(bulkops_env, "SELECT count(*) FROM bulkops_ledger.jobs") == 0


@pytest.fixture(scope="module")
def worker_without_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """``celery -A worker worker`` started with a DATABASE_URL but no REDIS_URL."""
    # It must stop before connecting anywhere, so no database needs to exist.
    env = without(os.environ, *CONFIG_VARS)
    env["DATABASE_URL"] = f"postgresql://postgres@127.0.0.1:{free_closed_port()}/unused"
    cwd: Path = tmp_path_factory.mktemp("no-redis-url")
    yield run_program(worker_command("acceptance-noredis", 2), env, timeout=60, cwd=cwd)


def test_worker_without_redis_url_exits_and_names_it(worker_without_redis_url: Any) -> None:
    # Given REDIS_URL is not set
    # When celery -A worker worker starts
    result = worker_without_redis_url
    # Then it exits non-zero (within the run's timeout) and its output names REDIS_URL
    assert result.returncode != 0, describe(result)
    assert "REDIS_URL" in result.stdout + result.stderr, describe(result)


def test_worker_without_redis_url_says_so_in_one_clear_line(
    worker_without_redis_url: Any,
) -> None:
    # Given/When as above
    result = worker_without_redis_url
    output = (result.stdout + result.stderr).strip()
    # Then the message is clear: no traceback, the variable named as not set
    assert "Traceback" not in output, describe(result)
    assert "REDIS_URL is not set" in output
    assert len(output.splitlines()) <= 3, describe(result)


# --- 6. Redis unreachable on submit -------------------------------------------------------


@pytest.fixture
def seed_with_redis_down(
    bulkops_env: dict[str, str],
) -> tuple[dict[str, str], subprocess.CompletedProcess[str]]:
    env = {**bulkops_env, "REDIS_URL": f"redis://127.0.0.1:{free_closed_port()}/0"}
    return env, run_bulkops(env, "seed", "--json")


def test_seed_with_redis_unreachable_fails_and_leaves_no_queued_job(
    seed_with_redis_down: tuple[dict[str, str], subprocess.CompletedProcess[str]],
) -> None:
    # Given REDIS_URL points at a port nothing listens on
    # When a user seeds
    env, result = seed_with_redis_down
    # Then exit 1 (broker unavailable), nothing on stdout, and no job is left queued
    assert result.returncode == 1, describe(result)
    assert result.stdout == "", describe(result)
    assert query(env, "SELECT count(*) FROM bulkops_ledger.jobs WHERE state = 'queued'") == 0


def test_seed_with_redis_unreachable_says_so_in_one_line(
    seed_with_redis_down: tuple[dict[str, str], subprocess.CompletedProcess[str]],
) -> None:
    # Given/When as above
    _, result = seed_with_redis_down
    # Then one clear line about Redis on stderr, no traceback
    assert result.returncode == 1, describe(result)
    assert "redis" in one_line_error(result).lower()
