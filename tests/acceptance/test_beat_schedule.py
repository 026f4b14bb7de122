"""A BULKOPS_SCHEDULE status update under two real ``celery beat`` processes and a real worker.

The schedule runs every 2 s, so a few slots pass in a test. Both beats send
the slot's task; the key ``schedule:NAME:SLOT`` gives each slot one job.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from acceptance_support import query, query_rows, wait_for
from sqlalchemy import text

from worker import client, db
from worker.supervisor import background, celery_command, worker_command

EVERY = 2
NAME = "archive-stale"
SENT = re.compile(rf"Sending due task schedule:{NAME} \(tasks\.jobs\.run_schedule\)")


def _todos(*rows: tuple[str, str, int]) -> None:
    """(title, status, days since last change); old updated_at written with the trigger off."""
    with db.session_scope() as s:
        owner = s.execute(
            text("INSERT INTO users (email, name) VALUES ('ann@example.com', 'Ann') RETURNING id")
        ).scalar_one()
        s.execute(text("SET LOCAL session_replication_role = replica"))
        for title, status, days in rows:
            s.execute(
                text(
                    "INSERT INTO todos (title, status, owner_id, updated_at) "
                    "VALUES (:t, :s, :o, now() - make_interval(days => :d))"
                ),
                {"t": title, "s": status, "o": owner, "d": days},
            )


def _schedule_jobs(env: dict[str, str]) -> list[tuple[int, str, str]]:
    return [
        (int(r[0]), str(r[1]), str(r[2]))
        for r in query_rows(
            env,
            "SELECT id, idempotency_key, state FROM bulkops_ledger.jobs "
            "WHERE idempotency_key LIKE 'schedule:%' ORDER BY id",
        )
    ]


def test_two_beats_give_one_job_per_slot(bulkops_env: dict[str, str], tmp_path: Path) -> None:
    # Given a schedule archiving completed todos untouched for a day, every 2 s
    _todos(("stale", "completed", 3), ("fresh", "completed", 0), ("open", "active", 3))
    schedule = tmp_path / "schedule.json"
    params = {"to_status": "archived", "from_statuses": ["completed"], "updated_before": "1d"}
    schedule.write_text(
        json.dumps({NAME: {"every": EVERY, "kind": "update_status", "params": params}})
    )
    env = {**bulkops_env, "BULKOPS_SCHEDULE": str(schedule)}
    logs = tmp_path / "logs"
    beats = [
        celery_command("beat", "--loglevel=INFO", "-s", str(tmp_path / f"beat-{i}"))
        for i in (1, 2)
    ]
    # When a worker runs and two beats run side by side for a few slots
    with background([worker_command("sched", 2)], env, logs / "worker"):
        with background(beats, env, logs / "beats"):
            wait_for(lambda: len(_schedule_jobs(env)) >= 3, what="three scheduled slots")
        # (beats stopped: let the worker finish what they sent)
        wait_for(
            lambda: (
                query(env, "SELECT count(*) FROM bulkops_ledger.jobs WHERE finished_at IS NULL")
                == 0
            ),
            what="every job finished",
        )
    jobs = _schedule_jobs(env)
    sends = [len(SENT.findall(log.read_text())) for log in sorted((logs / "beats").glob("*.log"))]
    # Then each beat sent the task every slot, but each slot has exactly one job
    assert len(sends) == 2 and min(sends) >= 2, sends
    slots = [int(key.rsplit(":", 1)[1]) for _, key, _ in jobs]
    assert len(slots) == len(set(slots)) >= 3
    assert len(jobs) <= max(sends) + 1 < sum(sends), (jobs, sends)
    assert {state for _, _, state in jobs} == {"succeeded"}
    # and the first slot archived the stale row only; the later slots found nothing to do
    first = client.summary(jobs[0][0])
    assert (first.rows_updated, first.rows_rejected) == (1, 0)
    assert all(client.summary(j).rows_updated == 0 for j, _, _ in jobs[1:])
    rows = query_rows(env, "SELECT title, status FROM todos ORDER BY title")
    assert [tuple(r) for r in rows] == [
        ("fresh", "completed"),
        ("open", "active"),
        ("stale", "archived"),
    ]
