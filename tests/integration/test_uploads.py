"""Uploads on real PostgreSQL: stored as a large object, read exactly like the local file."""

from __future__ import annotations

import io
import random
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from upload_streams import MIB, Failing, Filler

from worker import client, db, parsing, uploads
from worker.errors import ImportPathError, UsageError


def _large_objects() -> int:
    with db.session_scope() as s:
        return int(s.execute(text("SELECT count(*) FROM pg_largeobject_metadata")).scalar_one())


def _csv(rows: int, seed: int = 7) -> bytes:
    """A CSV with quoted fields holding newlines and commas, so records straddle reads."""
    rnd = random.Random(seed)
    lines = ["title,status,owner_email"]
    for i in range(rows):
        title = (
            f'"row {i}, with\nnewline ""q""{"x" * rnd.randint(0, 300)}"' if i % 7 == 0 else f"t{i}"
        )
        lines.append(f"{title},active,u{i % 50}@example.com")
    return ("\n".join(lines) + "\n").encode()


def test_an_upload_reads_back_byte_for_byte_with_seek_tell_readline(
    bulkops_env: dict[str, str], tmp_path: Path
) -> None:
    # Given data larger than several store writes and read buffers
    data = _csv(80_000)
    assert len(data) > 3 * uploads.WRITE_BYTES
    ref = uploads.store(io.BytesIO(data), "todos.csv")
    assert (ref.size, ref.name) == (len(data), "todos.csv")
    # When it is read through the reader, as a file would be
    upload = uploads.UploadedFile(ref)
    with upload.open("rb") as f, io.BytesIO(data) as expected:
        # Then whole reads, seeks, tells and readline agree with the bytes
        assert f.read(10) == expected.read(10)
        for offset in (0, 5, uploads.WRITE_BYTES - 3, len(data) - 100, len(data), len(data) + 9):
            assert f.seek(offset) == expected.seek(offset)
            assert f.readline() == expected.readline()
            assert f.tell() == expected.tell()
        assert f.seek(-50, io.SEEK_END) == expected.seek(-50, io.SEEK_END)
        assert f.read() == expected.read()
        f.seek(0)
        assert f.read() == data
        f.seek(0)
        assert list(f) == data.splitlines(keepends=True)


def test_parsing_reads_an_upload_exactly_as_the_local_file(
    bulkops_env: dict[str, str], tmp_path: Path
) -> None:
    # Given the same CSV as a local file and as an upload
    data = _csv(12_000)
    local = tmp_path / "todos.csv"
    local.write_bytes(data)
    upload = uploads.UploadedFile(uploads.store(io.BytesIO(data), "todos.csv"))
    # When worker.parsing plans and reads both
    header = parsing.read_header(local, "csv")
    assert parsing.read_header(upload, "csv") == header  # type: ignore[arg-type]
    spans = parsing.plan_chunks(local, "csv", 1000)
    # Then the chunks and every record in them are the same
    assert parsing.plan_chunks(upload, "csv", 1000) == spans  # type: ignore[arg-type]
    assert len(spans) == 12
    for span in spans:
        mine = list(parsing.read_chunk(upload, "csv", span, header[0]))  # type: ignore[arg-type]
        assert mine == list(parsing.read_chunk(local, "csv", span, header[0]))


def test_memory_stays_bounded_while_storing_and_reading(bulkops_env: dict[str, str]) -> None:
    # Given a 48 MiB stream that is never held whole
    # When it is stored and then read back in 1 MiB reads
    tracemalloc.start()
    try:
        ref = uploads.store(io.BufferedReader(Filler(48 * MIB)), "zeros.csv")
        with uploads.UploadedFile(ref).open("rb") as f:
            total = sum(len(block) for block in iter(lambda: f.read(MIB), b""))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Then all of it went through, and the peak stayed a few buffers, not the data
    assert (ref.size, total) == (48 * MIB, 48 * MIB)
    assert peak < 8 * MIB, f"peak {peak / MIB:.1f} MiB"


def test_a_stream_that_breaks_part_way_leaves_nothing_stored(
    bulkops_env: dict[str, str],
) -> None:
    before = _large_objects()
    with pytest.raises(OSError, match="connection reset"):
        uploads.store(io.BufferedReader(Failing()), "broken.csv")
    assert _large_objects() == before


def test_discard_removes_the_data_once_and_the_setting_keeps_it(
    configure: Callable[..., None],
) -> None:
    # Given two uploads
    kept = uploads.store(io.BytesIO(b"a\n"), "kept.csv")
    gone = uploads.store(io.BytesIO(b"b\n"), "gone.csv")
    # When jobs end with BULKOPS_KEEP_UPLOADS set, then unset
    configure(BULKOPS_KEEP_UPLOADS="true")
    assert uploads.discard_for_job({"path": "upload:kept.csv", "upload": kept.to_params()}) is False
    configure(BULKOPS_KEEP_UPLOADS=None)
    assert uploads.discard_for_job({"path": "upload:gone.csv", "upload": gone.to_params()}) is True
    # Then only the kept one is there; discarding again is harmless, reading a gone one says so
    assert (uploads.exists(kept), uploads.exists(gone)) == (True, False)
    assert uploads.discard(gone) is False
    assert uploads.discard_for_job({"path": "todos.csv"}) is False
    with pytest.raises(ImportPathError, match="gone.csv .* no longer stored"):
        uploads.UploadedFile(gone).open("rb")


def test_open_source_gives_a_path_under_the_root_or_the_upload(
    bulkops_env: dict[str, str], import_root: Path
) -> None:
    (import_root / "local.csv").write_bytes(b"title\n")
    local = uploads.open_source({"path": "local.csv"})
    assert (
        local.relpath == "local.csv"
        and local.open("rb").read() == (import_root / "local.csv").read_bytes()
    )
    ref = uploads.store(io.BytesIO(b"title\nx\n"), "up.csv")
    source = uploads.open_source({"path": "upload:up.csv", "upload": ref.to_params()})
    with source.open("rb") as f:
        assert (source.name, f.read()) == ("up.csv", b"title\nx\n")
    with pytest.raises(ImportPathError, match="outside the import root"):
        uploads.open_source({"path": "/etc/passwd"})


def test_submit_import_of_a_stream_uploads_it_and_one_key_keeps_one_upload(
    worker: Any, configure: Callable[..., None], tmp_path: Path
) -> None:
    # Given uploads are kept after their job (so the count below is the store's alone)
    configure(BULKOPS_KEEP_UPLOADS="true")
    before = _large_objects()
    local = tmp_path / "elsewhere.csv"  # not under the import root
    local.write_bytes(b"title,status,owner_email\n")
    # When a producer submits a local file, the same content again as a stream,
    # and other content, all with one key
    first = client.submit_import(local, upload=True, key="up-1")
    again = client.submit_import(io.BytesIO(local.read_bytes()), name="elsewhere.csv", key="up-1")
    with pytest.raises(UsageError, match=f"already belongs to job {first}"):
        client.submit_import(io.BytesIO(b"other"), name="elsewhere.csv", key="up-1")
    # Then one job, whose params name the first upload, and the later uploads were removed
    assert first == again
    params = client.summary(first).params
    assert params["path"] == "upload:elsewhere.csv"
    assert params["upload"]["size"] == len(local.read_bytes())
    assert _large_objects() == before + 1
    assert uploads.exists(uploads.UploadRef.from_params(params["upload"]))


def test_the_job_end_hook_removes_the_upload_only_once_the_job_finished(
    bulkops_env: dict[str, str],
) -> None:
    from worker import ledger

    # Given a queued import job that reads an upload
    ref = uploads.store(io.BytesIO(b"title\n"), "hook.csv")
    params = {"path": "upload:hook.csv", "upload": ref.to_params()}
    job_id = ledger.submit("import", params, lambda _job, _task: None)
    # When the hook runs while it is queued, then after it failed
    assert uploads.discard_if_finished(job_id) is False
    assert uploads.exists(ref)
    ledger.fail(job_id, "stopped")
    # Then the data goes only after the end, and a second call finds nothing left
    assert uploads.discard_if_finished(job_id) is True
    assert not uploads.exists(ref)
    assert uploads.discard_if_finished(job_id) is False
