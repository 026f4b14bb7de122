"""A scheduled status update through a real worker: one job per slot, however many beats."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from import_support import seed_users
from sqlalchemy import text

from worker import client, db
from worker.app import producer_app
from worker.queues import MAINTENANCE

EVERY = 60


def _beat(at: float) -> dict[str, Any]:
    """What beat sends for the schedule, with the moment it runs pinned."""
    result = producer_app().send_task(
        "tasks.jobs.run_schedule", kwargs={"name": "archive-old", "at": at}, queue=MAINTENANCE
    )
    reply: dict[str, Any] = result.get(timeout=60)
    return reply


def test_two_slots_give_two_jobs_and_a_second_beat_none_extra(
    worker: Any, tmp_path: Path, configure: Callable[..., None]
) -> None:
    # Given a schedule archiving completed todos created more than 30 days ago
    path = tmp_path / "schedule.json"
    params = {"to_status": "archived", "from_statuses": ["completed"], "created_before": "30d"}
    path.write_text(
        json.dumps({"archive-old": {"every": EVERY, "kind": "update_status", "params": params}})
    )
    configure(BULKOPS_SCHEDULE=str(path))
    seed_users("ann@example.com")
    with db.session_scope() as s:
        s.execute(
            text(
                "INSERT INTO todos (title, status, owner_id, created_at) "
                "SELECT t, 'completed', (SELECT id FROM users), now() - make_interval(days => d) "
                "FROM (VALUES ('old', 40), ('new', 5)) AS v(t, d)"
            )
        )
    slot_start = (datetime.now(UTC).timestamp() // EVERY) * EVERY
    # When two beats send the task in one slot, and one beat in the next slot
    first = _beat(slot_start + 1)
    twin = _beat(slot_start + EVERY - 1)
    later = _beat(slot_start + EVERY + 1)
    # Then the first slot has one job, the next slot another
    assert first["job_id"] == twin["job_id"] != later["job_id"]
    assert later["slot"] == first["slot"] + 1
    with db.session_scope() as s:
        keys = (
            s.execute(text("SELECT idempotency_key FROM bulkops_ledger.jobs ORDER BY id"))
            .scalars()
            .all()
        )
    assert keys == [
        f"schedule:archive-old:{first['slot']}",
        f"schedule:archive-old:{later['slot']}",
    ]
    # and the relative filter was resolved when the slot ran: only the old todo is archived
    done = client.wait(first["job_id"], timeout=120)
    assert (done.state, done.rows_updated) == ("succeeded", 1), done.error
    cutoff = datetime.fromisoformat(done.params["created_before"])
    assert abs(cutoff - (datetime.now(UTC) - timedelta(days=30))) < timedelta(hours=1)
    client.wait(later["job_id"], timeout=120)
    with db.session_scope() as s:
        rows = s.execute(text("SELECT title, status FROM todos ORDER BY title")).all()
    assert [tuple(r) for r in rows] == [("new", "completed"), ("old", "archived")]
