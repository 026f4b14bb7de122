"""Bulk status updates through a real worker: filters, rules, batches, dry run, ids files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from worker import client, db
from worker.errors import UsageError


def _make(statuses: list[str], owner: str = "ann@example.com") -> list[int]:
    with db.session_scope() as s:
        uid = s.execute(
            text(
                "INSERT INTO users (email, name) VALUES (:e, 'x') ON CONFLICT (email) "
                "DO UPDATE SET name = users.name RETURNING id"
            ),
            {"e": owner},
        ).scalar_one()
        return [
            int(
                s.execute(
                    text(
                        "INSERT INTO todos (title, status, owner_id) "
                        "VALUES (:t, :s, :o) RETURNING id"
                    ),
                    {"t": f"{owner} {i}", "s": st, "o": uid},
                ).scalar_one()
            )
            for i, st in enumerate(statuses)
        ]


def _statuses() -> dict[int, str]:
    with db.session_scope() as s:
        return {int(i): str(st) for i, st in s.execute(text("SELECT id, status FROM todos"))}


def test_update_from_active_to_completed_in_batches(
    worker: Any, configure: Callable[..., None]
) -> None:
    configure(BULKOPS_UPDATE_BATCH_SIZE="7")
    ids = _make(["active"] * 30 + ["archived"] * 5 + ["completed"] * 3)
    s = client.wait(client.submit_update_status("completed", ["active"]), timeout=60)
    assert s.state == "succeeded", s.error
    assert (s.rows_read, s.rows_updated, s.rows_skipped, s.rows_rejected) == (30, 30, 0, 0)
    assert s.chunks_total == 5
    assert s.longest_batch_s is not None and s.to_dict()["longest_batch_s"] >= 0
    after = _statuses()
    assert [after[i] for i in ids] == ["completed"] * 30 + ["archived"] * 5 + ["completed"] * 3


def test_disallowed_transitions_are_reported_not_changed(worker: Any) -> None:
    ids = _make(["active", "archived", "completed", "in_progress"])
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
    ann = _make(["active"] * 3)
    bob = _make(["active"] * 3, owner="bob@example.com")
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
