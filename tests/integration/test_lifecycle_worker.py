"""Job lifecycle through a real worker thread: fan-out without Redis, batch sizes, ids files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from import_support import TableRows, make_todos, table_rows
from sqlalchemy import text

from worker import client, db, ledger, runner
from worker.seeding import SEED


def test_redis_lost_while_chunks_fan_out_is_retried_and_nothing_doubles(
    worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kombu.exceptions import OperationalError

    seed_chunk = worker.app.tasks["tasks.seeding.seed_chunk"]  # the worker's own app's task
    # Given Redis refuses the first two sends of a todos chunk (the users' chunk
    # sends them when it commits; a task's own retry is sent as it is)
    real = seed_chunk.apply_async
    refused: list[Any] = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        chunk_no = (kwargs.get("kwargs") or {}).get("chunk_no")
        if chunk_no is not None and chunk_no >= 1 and len(refused) < 2:
            refused.append(chunk_no)
            raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        return real(*args, **kwargs)

    monkeypatch.setattr(seed_chunk, "apply_async", flaky)
    # When 30 users x 70 todos are seeded (users in 1 chunk, todos in 3 at chunk size 1000)
    summary = client.wait(client.submit_seed(30, 70, 7), timeout=120)
    # Then the job task retried (a broker error is transient) and finished exactly
    assert refused == [1, 1]
    assert summary.state == "succeeded", summary.error
    assert (summary.rows_read, summary.rows_inserted, summary.rows_skipped) == (2130, 2130, 0)
    assert summary.chunks_done == summary.chunks_total == 4
    assert table_rows() == TableRows(users=30, todos=2100)


def test_update_batch_size_one_updates_every_row(
    worker: Any, configure: Callable[..., None]
) -> None:
    # Given BULKOPS_UPDATE_BATCH_SIZE=1
    configure(BULKOPS_UPDATE_BATCH_SIZE="1")
    ids = make_todos(["active", "active", "completed"])
    # When every active todo is completed
    s = client.wait(client.submit_update_status("completed", ["active"]), timeout=60)
    # Then each row is its own batch, and both were updated
    assert s.state == "succeeded", s.error
    assert (s.chunks_total, s.rows_read, s.rows_updated) == (2, 2, 2)
    with db.session_scope() as sess:
        statuses = dict(sess.execute(text("SELECT id, status FROM todos")).all())
    assert [statuses[i] for i in ids] == ["completed"] * 3


def test_ids_file_ids_stay_out_of_the_job_params_and_summary(
    worker: Any, import_root: Path, configure: Callable[..., None]
) -> None:
    configure(BULKOPS_UPDATE_BATCH_SIZE="2")
    ids = make_todos(["active"] * 5)
    # Given an ids file with every id, a repeated one, a bad line and an unknown id
    lines = [*map(str, reversed(ids)), str(ids[0]), "x1", "987654321"]
    (import_root / "ids.txt").write_text("\n".join(lines) + "\n")
    # When the update runs
    s = client.wait(client.submit_update_status("completed", ids_file="ids.txt"), timeout=60)
    # Then every line is accounted for
    assert (s.rows_read, s.rows_updated, s.rows_rejected) == (8, 5, 3)
    reasons = {r.line: r.reason for r in client.rejects(s.id)}
    assert reasons == {
        6: "duplicate of line 5",
        7: "not a todo id: 'x1'",
        8: "no todo with id 987654321",
    }
    # and no id is in the job's params or its JSON summary: chunks name their batch only
    assert s.params["chunks"] == [{"ids_chunk": 0}, {"ids_chunk": 1}, {"ids_chunk": 2}]
    with db.session_scope() as sess:
        batches = sess.execute(
            text(
                "SELECT chunk_no, array_agg(row_id ORDER BY row_id) FROM "
                "bulkops_ledger.job_update_ids "
                "WHERE job_id = :id AND chunk_no IS NOT NULL GROUP BY chunk_no ORDER BY chunk_no"
            ),
            {"id": s.id},
        ).all()
    assert [list(b[1]) for b in batches] == [[*ids[0:2]], [*ids[2:4]], [ids[4], 987654321]]


def test_a_large_ids_file_keeps_the_json_summary_small(worker: Any, import_root: Path) -> None:
    # Given 3,000 todos and an ids file naming each of them
    with db.session_scope() as sess:
        owner = sess.execute(
            text("INSERT INTO users (email, name) VALUES ('big@example.com', 'b') RETURNING id")
        ).scalar_one()
        ids = (
            sess.execute(
                text(
                    "INSERT INTO todos (title, owner_id) SELECT 't' || g, :o "
                    "FROM generate_series(1, 3000) g RETURNING id"
                ),
                {"o": owner},
            )
            .scalars()
            .all()
        )
    (import_root / "many.txt").write_text("".join(f"{i}\n" for i in ids))
    # When the update runs
    s = client.wait(client.submit_update_status("archived", ids_file="many.txt"), timeout=60)
    # Then every id was updated, and the summary (what --json prints) holds none of them
    assert (s.state, s.rows_read, s.rows_updated) == ("succeeded", 3000, 3000)
    assert len(json.dumps(s.to_dict())) < 2000


def test_seed_plan_writes_nothing_and_parents_come_first(bulkops_env: Any) -> None:
    # Given a seed job of 30 users x 70 todos, planned
    job_id = ledger.submit(
        "seed", {"users": 30, "todos_per_user": 70, "random_seed": 7}, lambda j, t: None
    )
    sent: list[int] = []
    assert runner.start_job(job_id, SEED, lambda j, c: sent.append(c)) == 1
    # Then the plan wrote nothing; the users' chunk comes first, then the todos'
    assert table_rows() == TableRows(users=0, todos=0)
    runner.run_chunk(job_id, sent[0], SEED, enqueue=lambda j, c: sent.append(c))
    assert table_rows() == TableRows(users=30, todos=0) and sent == [0, 1, 2, 3]
    for n in sent[1:]:
        runner.run_chunk(job_id, n, SEED)
    s = ledger.get_summary(job_id)
    assert (s.state, s.rows_read, s.rows_inserted) == ("succeeded", 2130, 2130)
    assert table_rows() == TableRows(users=30, todos=2100)
