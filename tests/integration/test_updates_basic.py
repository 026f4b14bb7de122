"""Bulk status updates through a real worker: filters, rules, batches, dry run, ids files."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from import_support import make_todos
from jobs_support import no_send
from sqlalchemy import text

from worker import client, db, ledger
from worker.errors import UsageError


def _statuses() -> dict[int, str]:
    with db.session_scope() as s:
        return {int(i): str(st) for i, st in s.execute(text("SELECT id, status FROM todos"))}


def test_update_from_active_to_completed_in_batches(
    worker: Any, configure: Callable[..., None]
) -> None:
    configure(BULKOPS_UPDATE_BATCH_SIZE="7")
    ids = make_todos(["active"] * 30 + ["archived"] * 5 + ["completed"] * 3)
    s = client.wait(client.submit_update_status("completed", ["active"]), timeout=60)
    assert s.state == "succeeded", s.error
    assert (s.rows_read, s.rows_updated, s.rows_skipped, s.rows_rejected) == (30, 30, 0, 0)
    assert s.chunks_total == 5
    assert s.longest_batch_s is not None and s.to_dict()["longest_batch_s"] >= 0
    after = _statuses()
    assert [after[i] for i in ids] == ["completed"] * 30 + ["archived"] * 5 + ["completed"] * 3


def test_disallowed_transitions_are_reported_not_changed(worker: Any) -> None:
    ids = make_todos(["active", "archived", "completed", "in_progress"])
    s = client.wait(client.submit_update_status("in_progress"), timeout=60)
    assert (s.rows_read, s.rows_updated, s.rows_skipped, s.rows_rejected) == (4, 2, 1, 1)
    rejects = client.rejects(s.id)
    assert len(rejects) == 1 and "archived -> in_progress" in rejects[0].reason
    assert rejects[0].raw == str(ids[1])
    assert [_statuses()[i] for i in ids] == [
        "in_progress",
        "archived",
        "in_progress",
        "in_progress",
    ]


def test_owner_and_ids_file_and_dry_run(worker: Any, import_root: Path) -> None:
    ann = make_todos(["active"] * 3)
    bob = make_todos(["active"] * 3, owner="bob@example.com")
    s = client.wait(client.submit_update_status("archived", owner_email="BOB@example.com"), 60)
    assert s.rows_updated == 3
    assert all(_statuses()[i] == "archived" for i in bob)
    (import_root / "ids.txt").write_text(f"{ann[0]}\nnot-an-id\n999999\n{ann[0]}\n\n{ann[2]}\n")
    s = client.wait(client.submit_update_status("completed", ids_file="ids.txt"), 60)
    assert (s.rows_read, s.rows_updated, s.rows_rejected) == (5, 2, 3)
    assert sorted((r.line, r.column) for r in client.rejects(s.id)) == [
        (2, "id"),
        (3, "id"),
        (4, "id"),
    ]
    before = _statuses()
    d = client.wait(client.submit_update_status("active", dry_run=True), 60)
    assert _statuses() == before
    assert d.params["dry_run_breakdown"] == {
        "active": {"rows": 1, "outcome": "unchanged"},
        "archived": {"rows": 3, "outcome": "would change"},
        "completed": {"rows": 2, "outcome": "would change"},
    }
    assert (d.rows_updated, d.rows_skipped) == (5, 1)


# A status update's params as releases before --owner became an alias of --where stored them.
_LEGACY = {
    "to_status": "archived",
    "from_statuses": [],
    "owner_email": None,
    "ids_file": None,
    "created_before": None,
    "dry_run": False,
    "table": "todos",
    "where": [],
}


def test_a_job_stored_with_owner_email_runs_with_that_filter(worker: Any) -> None:
    # Given ann's and bob's todos, and a queued job stored with the old owner_email key
    ann = make_todos(["active"] * 2)
    bob = make_todos(["active"] * 2, owner="bob@example.com")
    stored = {**_LEGACY, "owner_email": "bob@example.com"}
    job = ledger.submit(
        "update_status", stored, lambda j, t: client.send_job("update_status", j, t)
    )
    # When a worker runs it, only bob's todos move
    s = client.wait(job, 60)
    assert (s.state, s.rows_read, s.rows_updated) == ("succeeded", 2, 2), s.error
    after = _statuses()
    assert [after[i] for i in ann + bob] == ["active", "active", "archived", "archived"]


def test_a_key_of_a_job_stored_with_owner_email_is_the_same_request(bulkops_env: Any) -> None:
    make_todos(["active"])
    make_todos(["active"], owner="bob@example.com")

    plain = ledger.submit("update_status", _LEGACY, no_send, key="before-1")
    owned = ledger.submit(
        "update_status", {**_LEGACY, "owner_email": "bob@example.com"}, no_send, key="before-2"
    )
    # The same requests after the upgrade return those jobs, not a refusal
    assert client.submit_update_status("archived", key="before-1") == plain
    again = client.submit_update_status("archived", owner_email="bob@example.com", key="before-2")
    assert again == owned
    with pytest.raises(UsageError, match="other parameters \\(where\\)"):
        client.submit_update_status("archived", owner_email="ann@example.com", key="before-2")


def test_bad_input_is_refused_before_any_job(worker: Any) -> None:
    with pytest.raises(UsageError, match="unknown status 'done'"):
        client.submit_update_status("done")
    with pytest.raises(UsageError, match="no user"):
        client.submit_update_status("active", owner_email="ghost@example.com")
    with pytest.raises(UsageError, match="ISO 8601"):
        client.submit_update_status("active", created_before="yesterday")
    assert client.jobs() == []
    s = client.wait(client.submit_update_status("completed", ["active"]), 60)
    assert (s.state, s.rows_read) == ("succeeded", 0)


def _age(ids: list[int], days: int) -> None:
    """Make rows last changed ``days`` ago.

    The BEFORE UPDATE trigger sets updated_at to now() on every UPDATE, so the
    old value is written with the trigger off for this session (replica role).
    """
    with db.session_scope() as s:
        s.execute(text("SET LOCAL session_replication_role = replica"))
        s.execute(
            text(
                "UPDATE todos SET updated_at = now() - make_interval(days => :d) "
                "WHERE id = ANY(:i)"
            ),
            {"d": days, "i": ids},
        )


def test_updated_before_changes_only_rows_untouched_since(worker: Any) -> None:
    # Given completed todos last changed 40 and 20 days ago, and one changed today
    old = make_todos(["completed"] * 3)
    recent = make_todos(["completed"] * 2, owner="bob@example.com")
    today = make_todos(["completed"], owner="cy@example.com")
    _age(old, 40)
    _age(recent, 20)
    # When a relative --updated-before 30d archives the completed ones
    job = client.submit_update_status("archived", ["completed"], updated_before="30d")
    s = client.wait(job, 60)
    # Then only the rows untouched for 30 days moved, and the cutoff was resolved at submit
    assert (s.state, s.rows_read, s.rows_updated, s.rows_rejected) == ("succeeded", 3, 3, 0)
    cutoff = datetime.fromisoformat(s.params["updated_before"])
    assert abs(cutoff - (datetime.now(UTC) - timedelta(days=30))) < timedelta(minutes=5)
    after = _statuses()
    assert [after[i] for i in old + recent + today] == ["archived"] * 3 + ["completed"] * 3
    # and the update touched them: they no longer match the same filter
    with db.session_scope() as s2:
        fresh = s2.execute(
            text(
                "SELECT count(*) FROM todos "
                "WHERE id = ANY(:i) AND updated_at > now() - interval '1 hour'"
            ),
            {"i": old},
        ).scalar_one()
    assert fresh == 3
    # When an ISO cutoff 10 days ago is combined with another filter
    iso = (datetime.now(UTC) - timedelta(days=10)).isoformat()
    s = client.wait(
        client.submit_update_status(
            "archived", ["completed"], owner_email="bob@example.com", updated_before=iso
        ),
        60,
    )
    # Then bob's 20-day-old rows moved, today's row did not
    assert (s.state, s.rows_updated) == ("succeeded", 2), s.error
    assert [_statuses()[i] for i in recent + today] == ["archived", "archived", "completed"]


def test_update_status_cli_takes_updated_before(worker: Any, bulkops_env: dict[str, str]) -> None:
    import json
    import subprocess
    import sys

    old = make_todos(["active"] * 2)
    new = make_todos(["active"], owner="bob@example.com")
    _age(old, 3)
    script = Path(sys.executable).parent / "bulkops"
    done = subprocess.run(
        [str(script), "update-status", "--to", "completed", "--updated-before", "2d"]
        + ["--wait", "--json"],
        env=bulkops_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["state"], summary["rows_updated"]) == ("succeeded", 2)
    assert [_statuses()[i] for i in old + new] == ["completed", "completed", "active"]
    bad = subprocess.run(
        [str(script), "update-status", "--to", "completed", "--updated-before", "soon"],
        env=bulkops_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "--updated-before 'soon' is not an ISO 8601" in bad.stderr
