"""End to end: a producer with no folder shared with the workers uploads its file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from import_support import Counts, counts, seed_users
from sqlalchemy import text

from worker import client, db, uploads

ROWS = 100_000
OWNERS = [f"owner{i}@example.com" for i in range(20)]


def _file() -> tuple[bytes, set[int]]:
    """100k rows, every 100th one bad (unknown owner or status); the bad lines."""
    lines, bad = ["title,status,owner_email"], set()
    for i in range(ROWS):
        line_no = i + 2
        if i % 100 == 50:
            bad.add(line_no)
            status, owner = ("nope", OWNERS[0]) if i % 200 == 50 else ("active", "x@nowhere.org")
        else:
            status, owner = "active", OWNERS[i % len(OWNERS)]
        lines.append(f"task {i},{status},{owner}")
    return ("\n".join(lines) + "\n").encode(), bad


def _bulkops(*args: str) -> list[str]:
    script = Path(sys.executable).parent / "bulkops"
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "worker.cli", *args]


def _large_objects() -> int:
    with db.session_scope() as s:
        return int(s.execute(text("SELECT count(*) FROM pg_largeobject_metadata")).scalar_one())


@pytest.mark.parametrize("how", ["--upload", "stdin", "object store"])
def test_a_producer_elsewhere_uploads_100k_rows_and_gets_the_exact_result(
    worker: Any, bulkops_env: dict[str, str], tmp_path: Path, how: str
) -> None:
    # Given owners, and a file in a directory that is not under the import root
    # (for "object store": uploads go to an fsspec file:// store, as they would to s3://)
    seed_users(*OWNERS)
    data, bad = _file()
    elsewhere = tmp_path / "laptop"
    elsewhere.mkdir()
    (elsewhere / "todos.csv").write_bytes(data)
    store = tmp_path / "object-store"
    env = {**bulkops_env, "BULKOPS_UPLOAD_STORE": f"file://{store}"}
    before = _large_objects()
    # When the producer runs `bulkops import` from there, uploading the file
    args = ["import", "-"] if how == "stdin" else ["import", "todos.csv", "--upload"]
    done = subprocess.run(
        _bulkops(*args, "--wait", "--json"),
        input=data if how == "stdin" else None,
        env=env if how == "object store" else bulkops_env,
        cwd=elsewhere,
        capture_output=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr.decode()
    # Then the result and rejects are exact, as for a file under the root
    job_id = client.jobs(limit=1)[0].id
    summary = client.summary(job_id)
    assert counts(summary) == Counts(
        "partially_succeeded", read=ROWS, inserted=ROWS - len(bad), rejected=len(bad)
    )
    rejects = client.rejects(job_id)
    assert {r.line for r in rejects} == bad
    with db.session_scope() as s:
        assert s.execute(text("SELECT count(*) FROM todos")).scalar_one() == ROWS - len(bad)
    # and the rejects export to a file to fix and re-import
    out = elsewhere / "rejects.csv"
    exported = subprocess.run(
        _bulkops("rejects", str(job_id), "--out", str(out)), env=bulkops_env, capture_output=True
    )
    assert exported.returncode == 0, exported.stderr.decode()
    assert len(out.read_text().splitlines()) == 1 + len(bad)
    # and the data went to the store named, and is gone once the job ended
    upload = summary.params["upload"]
    if how == "object store":
        assert (upload["store"], upload["size"]) == ("fsspec", len(data))
        assert upload["url"].startswith(f"file://{store}/")
        assert list(store.iterdir()) == []
    else:
        assert (upload["store"], upload["size"]) == ("postgres", len(data))
    assert _large_objects() == before
    assert not uploads.exists(uploads.UploadRef.from_params(upload))
