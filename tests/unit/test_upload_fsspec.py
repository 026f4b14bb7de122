"""The fsspec upload store on fsspec's own memory and local filesystems (no services)."""

from __future__ import annotations

import io
import sys
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

import pytest
from fsspec.implementations.memory import MemoryFileSystem
from upload_streams import MIB, Failing, Filler

from worker import parsing, upload_fsspec, uploads
from worker.config import Settings
from worker.errors import ConfigError, ImportPathError
from worker.upload_fsspec import FsspecStore
from worker.upload_store import FSSPEC, UploadRef


def _base() -> str:
    return f"memory://uploads-{uuid.uuid4().hex}"


def _csv(rows: int) -> bytes:
    lines = ["title,status,owner_email"]
    for i in range(rows):
        title = f'"row {i}, with\nnewline ""q""{"x" * (i % 300)}"' if i % 7 == 0 else f"t{i}"
        lines.append(f"{title},active,u{i % 50}@example.com")
    return ("\n".join(lines) + "\n").encode()


def test_reads_are_byte_ranges_of_the_object_and_agree_with_the_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given data larger than several read buffers, stored under a memory:// base
    data = _csv(70_000)
    assert len(data) > 3 * uploads.READ_BUFFER_BYTES
    ref = FsspecStore(_base()).write(io.BytesIO(data), "todos.csv")
    assert (ref.store, ref.size, ref.name) == (FSSPEC, len(data), "todos.csv")
    assert ref.url is not None and ref.url.startswith("memory:///uploads-")
    assert UploadRef.from_params(ref.to_params()) == ref
    ranges: list[tuple[int, int]] = []
    real_cat = MemoryFileSystem.cat_file

    def cat_file(self: Any, path: str, start: int, end: int, **kw: Any) -> bytes:
        ranges.append((start, end))
        return bytes(real_cat(self, path, start=start, end=end, **kw))

    monkeypatch.setattr(MemoryFileSystem, "cat_file", cat_file)
    # When it is read through the store, as a file would be
    with uploads.UploadedFile(ref).open("rb") as f, io.BytesIO(data) as expected:
        # Then whole reads, seeks, tells and readline agree with the bytes
        assert f.read(10) == expected.read(10)
        for offset in (0, 5, uploads.READ_BUFFER_BYTES - 3, len(data) - 100, len(data)):
            assert f.seek(offset) == expected.seek(offset)
            assert f.readline() == expected.readline()
            assert f.tell() == expected.tell()
        assert f.seek(-50, io.SEEK_END) == expected.seek(-50, io.SEEK_END)
        assert f.read() == expected.read()
        ranges.clear()
        f.seek(0)
        assert f.read() == data
    # and each read asked for one range of at most a read buffer, never past the end
    assert ranges[0][0] == 0 and ranges[-1][1] == len(data)
    assert all(0 < end - start <= uploads.READ_BUFFER_BYTES for start, end in ranges)
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))


def test_parsing_plans_and_reads_chunks_from_the_object_as_from_the_file(tmp_path: Path) -> None:
    data = _csv(6_000)
    local = tmp_path / "todos.csv"
    local.write_bytes(data)
    upload = uploads.UploadedFile(FsspecStore(_base()).write(io.BytesIO(data), "todos.csv"))
    header = parsing.read_header(local, "csv")
    assert parsing.read_header(upload, "csv") == header  # type: ignore[arg-type]
    spans = parsing.plan_chunks(local, "csv", 500)
    assert parsing.plan_chunks(upload, "csv", 500) == spans  # type: ignore[arg-type]
    last = spans[-1]
    mine = list(parsing.read_chunk(upload, "csv", last, header[0]))  # type: ignore[arg-type]
    assert mine == list(parsing.read_chunk(local, "csv", last, header[0]))


def test_a_stream_that_breaks_part_way_leaves_no_object(tmp_path: Path) -> None:
    base = tmp_path / "store"
    with pytest.raises(OSError, match="connection reset"):
        FsspecStore(f"file://{base}").write(io.BufferedReader(Failing()), "broken.csv")
    assert list(base.iterdir()) == []


def test_remove_once_then_reading_says_it_is_gone(tmp_path: Path) -> None:
    store = FsspecStore(f"file://{tmp_path}/store")
    ref = store.write(io.BytesIO(b"title\nx\n"), "../../etc/odd name.csv")
    # the object is under the base, whatever the producer's name was
    stored = list((tmp_path / "store").iterdir())
    assert len(stored) == 1 and stored[0].name.endswith("-.._.._etc_odd_name.csv")
    assert uploads.exists(ref) and uploads.discard(ref) is True
    assert (uploads.exists(ref), uploads.discard(ref)) == (False, False)
    with pytest.raises(ImportPathError, match="odd name.csv .* no longer stored"):
        uploads.UploadedFile(ref).open("rb")


def test_memory_stays_bounded_while_storing_and_reading(tmp_path: Path) -> None:
    tracemalloc.start()
    try:
        ref = FsspecStore(f"file://{tmp_path}").write(io.BufferedReader(Filler(32 * MIB)), "n.csv")
        with uploads.UploadedFile(ref).open("rb") as f:
            total = sum(len(block) for block in iter(lambda: f.read(MIB), b""))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (ref.size, total) == (32 * MIB, 32 * MIB)
    assert peak < 8 * MIB, f"peak {peak / MIB:.1f} MiB"


def test_a_scheme_whose_package_is_missing_is_a_config_error_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    try:
        import s3fs  # noqa: F401

        pytest.skip("s3fs is installed here")
    except ImportError:
        pass
    with pytest.raises(ConfigError, match="upload store s3://bucket/up: Install s3fs"):
        FsspecStore("s3://bucket/up").write(io.BytesIO(b"x"), "x.csv")
    with pytest.raises(ConfigError, match="Protocol not known: nosuch"):
        upload_fsspec.filesystem("nosuch://x")
    # and without fsspec itself, the error says which extra to install
    monkeypatch.setitem(sys.modules, "fsspec", None)
    with pytest.raises(ConfigError, match=r"needs fsspec \(pip install 'bulkops\[fsspec\]'\)"):
        upload_fsspec.filesystem("file:///tmp/x")


def test_the_setting_is_postgres_by_default_or_a_url(monkeypatch: pytest.MonkeyPatch) -> None:
    urls = {"database_url": "postgresql://x@h/db", "redis_url": "redis://h/0"}
    assert Settings(**urls).bulkops_upload_store is None
    assert Settings(**urls, bulkops_upload_store="postgres").bulkops_upload_store is None
    given = Settings(**urls, bulkops_upload_store="s3://bucket/prefix")
    assert given.bulkops_upload_store == "s3://bucket/prefix"
    with pytest.raises(ValueError, match="fsspec URL"):
        Settings(**urls, bulkops_upload_store="/shared/uploads")
