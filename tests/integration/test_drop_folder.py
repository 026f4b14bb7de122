"""The watched drop folder through a real worker: each settled file imported once."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from import_support import Counts, counts, seed_users
from sqlalchemy import text

from worker import client, db
from worker.app import producer_app
from worker.queues import MAINTENANCE

CSV = "title,status,owner_email\nBuy milk,active,ann@example.com\n"


def _scan() -> list[int]:
    result = producer_app().send_task("tasks.jobs.watch_drop_folder", queue=MAINTENANCE)
    jobs: list[int] = result.get(timeout=60)["jobs"]
    return jobs


def test_a_settled_file_is_imported_once_and_one_being_written_waits(
    worker: Any, import_root: Path, configure: Callable[..., None]
) -> None:
    # Given a drop folder with a file written a minute ago, one still being written,
    # and a hidden partial upload
    seed_users("ann@example.com")
    drop = import_root / "drop"
    drop.mkdir()
    (drop / "done.csv").write_text(CSV)
    past = time.time() - 60
    os.utime(drop / "done.csv", (past, past))
    (drop / "writing.csv").write_text(CSV)
    (drop / ".part.csv").write_text(CSV)
    os.utime(drop / ".part.csv", (past, past))
    configure(BULKOPS_DROP_FOLDER="drop", BULKOPS_DROP_SETTLE_S="30")
    # When beat's scan runs twice
    first, second = _scan(), _scan()
    # Then only the settled file has a job, the same one both times, and it imported its row
    assert len(first) == 1 and second == first
    summary = client.wait(first[0], timeout=120)
    assert counts(summary) == Counts("succeeded", read=1, inserted=1)
    assert summary.params["path"] == "drop/done.csv"
    # and once the other file has settled, the next scan imports it, and only it
    os.utime(drop / "writing.csv", (past, past))
    third = _scan()
    assert len(third) == 2 and third[0] == first[0]
    client.wait(third[1], timeout=120)
    with db.session_scope() as s:
        assert s.execute(text("SELECT count(*) FROM bulkops_ledger.jobs")).scalar_one() == 2
