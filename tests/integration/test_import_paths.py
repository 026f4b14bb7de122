"""Import paths are confined to BULKOPS_IMPORT_ROOT, and bad options never make a job.

Every refusal raises at submit time, before a job row exists; the worker checks
the path again when it runs the job. Refusals need no worker (a database for the
job count only); the unit tests of worker.source cover confinement in depth.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from worker import client, db, ledger
from worker.errors import ImportPathError, UsageError
from worker.importer import ImportParams
from worker.models import JobKind

GOOD = "title,status,owner_email\nA,active,ann@example.com\n"


def job_count() -> int:
    with db.session_scope() as s:
        return int(s.execute(text("SELECT count(*) FROM bulkops_ledger.jobs")).scalar_one())


def todo_titles() -> list[str]:
    with db.session_scope() as s:
        return [r[0] for r in s.execute(text("SELECT title FROM todos ORDER BY title"))]


@pytest.fixture
def outside(import_root: Path) -> Path:
    """A readable, importable file next to (not inside) the import root."""
    path = import_root.parent / "outside.csv"
    path.write_text(GOOD)
    return path


@pytest.fixture
def ann(worker: Any) -> None:
    with db.session_scope() as s:
        s.execute(text("INSERT INTO users (email, name) VALUES ('ann@example.com', 'Ann')"))


def refused(path: str | Path, match: str) -> ImportPathError:
    before = job_count()
    with pytest.raises(ImportPathError, match=match) as info:
        client.submit_import(path)
    assert job_count() == before == 0
    return info.value


def test_dotdot_is_refused(bulkops_env: dict[str, str], import_root: Path, outside: Path) -> None:
    err = refused("../outside.csv", "outside the import root")
    assert err.message.startswith("../outside.csv: ")
    assert str(import_root.resolve()) in err.message and "BULKOPS_IMPORT_ROOT" in err.message
    (import_root / "sub").mkdir()
    refused("sub/../../outside.csv", "outside the import root")
    refused("./sub/../../imports/../outside.csv", "outside the import root")


def test_absolute_path_outside_is_refused(
    bulkops_env: dict[str, str], import_root: Path, outside: Path
) -> None:
    refused(str(outside), "outside the import root")
    refused(outside, "outside the import root")
    refused("/etc/passwd", "outside the import root")


def test_symlink_leading_out_is_refused(
    bulkops_env: dict[str, str], import_root: Path, outside: Path
) -> None:
    (import_root / "link.csv").symlink_to(outside)
    err = refused("link.csv", "link.csv: a symbolic link")
    assert "leading outside the import root" in err.message
    # A directory symlink leading out, with the file reached through it.
    (import_root / "out").symlink_to(outside.parent)
    refused("out/outside.csv", "out/outside.csv: out is a symbolic link .leading outside")
    # A relative symlink climbing out.
    (import_root / "rel.csv").symlink_to(Path("..") / "outside.csv")
    refused("rel.csv", "leading outside the import root")


def test_directory_is_refused(bulkops_env: dict[str, str], import_root: Path) -> None:
    (import_root / "adir.csv").mkdir()
    refused("adir.csv", "adir.csv: not a regular file")
    refused(".", "not a regular file")
    refused(import_root, "not a regular file")


def test_fifo_is_refused(bulkops_env: dict[str, str], import_root: Path) -> None:
    os.mkfifo(import_root / "pipe.csv")
    refused("pipe.csv", "pipe.csv: not a regular file")


def test_missing_file_is_refused(bulkops_env: dict[str, str], import_root: Path) -> None:
    err = refused("nope.csv", "nope.csv: no such file under the import root")
    assert str(import_root.resolve()) in err.message
    (import_root / "dangling.csv").symlink_to(import_root / "gone.csv")
    refused("dangling.csv", "dangling.csv: a symbolic link .that leads nowhere")
    refused("", "not a regular file")  # the root itself


def test_symlink_loop_is_refused(bulkops_env: dict[str, str], import_root: Path) -> None:
    (import_root / "a.csv").symlink_to(import_root / "b.csv")
    (import_root / "b.csv").symlink_to(import_root / "a.csv")
    refused("a.csv", "a.csv: a symbolic link")


def test_symlink_inside_the_root_is_refused_naming_the_real_file(
    bulkops_env: dict[str, str], import_root: Path
) -> None:
    """Every symlink is refused: the simple rule that makes opening by descriptor safe."""
    (import_root / "data").mkdir()
    (import_root / "data" / "real.csv").write_text(GOOD)
    (import_root / "alias.csv").symlink_to(import_root / "data" / "real.csv")
    err = refused("alias.csv", "alias.csv: a symbolic link")
    assert "to data/real.csv, inside the root: give that path instead" in err.message
    assert "symlinks are refused under the import root" in err.message


def test_absolute_path_inside_the_root_is_accepted(
    worker: Any, ann: None, import_root: Path
) -> None:
    (import_root / "in.csv").write_text(GOOD)
    s = client.wait(client.submit_import(import_root / "in.csv"), timeout=120)
    assert (s.state, s.rows_inserted, s.params["path"]) == ("succeeded", 1, "in.csv")
    assert todo_titles() == ["A"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"table": "projects"}, "unknown table 'projects'; known tables: users, todos"),
        ({"table": "todos; DROP TABLE users"}, "unknown table 'todos; DROP TABLE users'"),
        ({"mode": "replace"}, "--mode must be one of insert, upsert, skip, not 'replace'"),
        ({"format": "xml"}, "--format must be one of csv, jsonl, not 'xml'"),
        ({"max_errors": -1}, "--max-errors must be 0 or more"),
        ({"max_error_rate": 1.5}, "--max-error-rate must be between 0 and 1"),
    ],
)
def test_bad_options_are_usage_errors_without_a_job(
    bulkops_env: dict[str, str], import_root: Path, kwargs: dict[str, Any], match: str
) -> None:
    (import_root / "in.csv").write_text(GOOD)
    with pytest.raises(UsageError, match=match):
        client.submit_import("in.csv", **kwargs)
    assert job_count() == 0


def test_worker_checks_the_path_again(worker: Any, ann: None, outside: Path) -> None:
    """A job row that names a path outside the root (not made by submit_import) fails."""
    params = ImportParams(path="../outside.csv").to_params()
    job_id = ledger.submit(
        JobKind.IMPORT, params, lambda jid, tid: client.send_job(JobKind.IMPORT, jid, tid)
    )
    s = client.wait(job_id, timeout=120)
    assert (s.state, s.rows_read, s.rows_inserted) == ("failed", 0, 0)
    assert s.error is not None and "outside the import root" in s.error
    assert todo_titles() == []


def test_file_replaced_by_an_outside_symlink_after_submit(
    worker: Any, ann: None, import_root: Path, outside: Path
) -> None:
    """The path is checked again when the worker opens it: a swap after submit is refused."""
    (import_root / "swap.csv").write_text(GOOD)
    params = ImportParams(path="swap.csv").to_params()
    sent: list[tuple[int, str]] = []
    job_id = ledger.submit(JobKind.IMPORT, params, lambda jid, tid: sent.append((jid, tid)))
    (import_root / "swap.csv").unlink()
    (import_root / "swap.csv").symlink_to(outside)
    client.send_job(JobKind.IMPORT, *sent[0])
    s = client.wait(job_id, timeout=120)
    assert (s.state, s.rows_read) == ("failed", 0)
    assert s.error is not None and "swap.csv: a symbolic link" in s.error
    assert "leading outside the import root" in s.error
    assert todo_titles() == []
