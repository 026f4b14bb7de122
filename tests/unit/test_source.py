"""Confinement to the import root by descriptor (worker.source), without a worker.

Symlinks anywhere under the root are refused (the rule that makes the
descriptor walk safe), every open is checked against the identity recorded
at the first check, and a file that changed is a FileChangedError.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from worker import parsing
from worker.errors import ImportPathError, PermanentError
from worker.source import ConfinedFile, FileChangedError, FileIdentity, confine

INSIDE = b"title,status,owner_email\nA,active,ann@example.com\n"
OUTSIDE = b"title,status,owner_email\nSECRET,active,eve@example.com\n"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "imports"
    root.mkdir()
    (tmp_path / "outside.csv").write_bytes(OUTSIDE)
    return root


def refused(path: str | Path, root: Path, match: str) -> ImportPathError:
    with pytest.raises(ImportPathError, match=match) as info:
        confine(path, root)
    return info.value


def test_a_regular_file_is_confined_with_its_identity(root: Path) -> None:
    (root / "data").mkdir()
    (root / "data" / "in.csv").write_bytes(INSIDE)
    real, rel = confine("data/in.csv", root)
    st = os.stat(root / "data" / "in.csv")
    assert rel == real.relpath == "data/in.csv" and real.name == "in.csv"
    assert real.identity == FileIdentity(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    assert FileIdentity.from_json(real.identity.to_json()) == real.identity
    with real.open("rb") as f:
        assert f.read() == INSIDE
    # the same file by an absolute path inside the root, and with a ".." that stays inside
    assert confine(root / "data" / "in.csv", root)[1] == "data/in.csv"
    assert confine("data/../data/in.csv", root)[1] == "data/in.csv"


def test_the_parsers_read_a_confined_file(root: Path) -> None:
    (root / "in.csv").write_bytes(INSIDE)
    real, _ = confine("in.csv", root)
    header, _ = parsing.read_header(real, "csv")
    spans = parsing.plan_chunks(real, "csv", 10)
    recs = [r for s in spans for r in parsing.read_chunk(real, "csv", s, header)]
    assert [r.values for r in recs] == [
        {"title": "A", "status": "active", "owner_email": "ann@example.com"}
    ]


def test_paths_leading_out_are_refused(root: Path) -> None:
    refused("../outside.csv", root, "../outside.csv: outside the import root")
    refused("/etc/passwd", root, "outside the import root")
    refused(root.parent / "outside.csv", root, "outside the import root")
    (root / "sub").mkdir()
    refused("sub/../../outside.csv", root, "outside the import root")


@pytest.mark.parametrize(
    ("make", "path", "hint"),
    [
        (lambda r: (r / "l.csv").symlink_to(r.parent / "outside.csv"), "l.csv", "leading outside"),
        (lambda r: (r / "out").symlink_to(r.parent), "out/outside.csv", "leading outside"),
        (lambda r: (r / "l.csv").symlink_to(r / "in.csv"), "l.csv", "to in.csv, inside the root"),
        (lambda r: (r / "l.csv").symlink_to(r / "gone.csv"), "l.csv", "leads nowhere"),
        (lambda r: (r / "l.csv").symlink_to("l.csv"), "l.csv", "leads nowhere"),  # a loop
    ],
)
def test_every_symlink_is_refused_and_the_message_says_so(
    root: Path, make: object, path: str, hint: str
) -> None:
    (root / "in.csv").write_bytes(INSIDE)
    make(root)  # type: ignore[operator]
    err = refused(path, root, "symbolic link")
    assert err.message.startswith(f"{path}: ") and hint in err.message
    assert "symlinks are refused under the import root" in err.message


def test_non_regular_files_are_refused(root: Path) -> None:
    (root / "adir.csv").mkdir()
    refused("adir.csv", root, "adir.csv: not a regular file")
    refused("", root, "not a regular file")
    refused(root, root, "not a regular file")
    os.mkfifo(root / "pipe.csv")  # must be refused at once, not block waiting for a writer
    refused("pipe.csv", root, "pipe.csv: not a regular file")
    refused("nope.csv", root, f"nope.csv: no such file under the import root {root.resolve()}")
    (root / "f.csv").write_bytes(INSIDE)
    refused("f.csv/x.csv", root, "f.csv is not a directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_file_is_refused(root: Path) -> None:
    (root / "secret.csv").write_bytes(INSIDE)
    (root / "secret.csv").chmod(0)
    refused("secret.csv", root, "secret.csv: not readable")


def test_file_replaced_after_confine_is_a_file_changed_error(root: Path) -> None:
    # Given a file confined (its identity recorded, as when a job is planned)
    (root / "in.csv").write_bytes(INSIDE)
    real, _ = confine("in.csv", root)
    # When it is replaced by another file of the same size under the same name
    (root / "new.csv").write_bytes(OUTSIDE[: len(INSIDE)])
    os.replace(root / "new.csv", root / "in.csv")
    # Then opening it, or checking it against the recorded identity, fails and says why
    with pytest.raises(FileChangedError, match="in.csv: the file changed after the job was"):
        real.open("rb")
    with pytest.raises(FileChangedError, match="inode"):
        confine("in.csv", root, expect=real.identity)
    assert issubclass(FileChangedError, PermanentError)


@pytest.mark.parametrize("change", ["append", "truncate", "touch"])
def test_file_modified_after_confine_is_a_file_changed_error(root: Path, change: str) -> None:
    (root / "in.csv").write_bytes(INSIDE)
    real, _ = confine("in.csv", root)
    if change == "append":
        with open(root / "in.csv", "ab") as f:
            f.write(b"B,active,ann@example.com\n")
    elif change == "truncate":
        os.truncate(root / "in.csv", 10)
    else:
        st = os.stat(root / "in.csv")
        os.utime(root / "in.csv", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    with pytest.raises(FileChangedError, match="nothing of the new content was loaded"):
        real.open("rb")
    with pytest.raises(FileChangedError):
        confine("in.csv", root, expect=real.identity)


def test_a_change_while_reading_is_caught_when_the_read_ends(root: Path) -> None:
    (root / "in.csv").write_bytes(INSIDE)
    real, _ = confine("in.csv", root)
    with pytest.raises(FileChangedError, match="size"):
        with real.open("rb") as f:
            f.read(5)
            with open(root / "in.csv", "ab") as g:
                g.write(b"more\n")
    # an exception inside the block is not masked by the check
    with pytest.raises(KeyError):
        with ConfinedFile(real.root, "in.csv", confine("in.csv", root)[0].identity).open() as f:
            raise KeyError("x")


def test_swapping_in_a_symlink_never_reads_outside_the_root(root: Path) -> None:
    """The race of issue 8 defect 3: check, then open by name, read the outside file."""
    # Given a file under the root that a thread keeps swapping (atomically) for a
    # symlink to a file outside the root, and back (a hard link: the same inode)
    (root / "keep.csv").write_bytes(INSIDE)
    outside = root.parent / "outside.csv"
    stop = threading.Event()
    swaps = [0]

    def swapper() -> None:
        while not stop.is_set():
            os.symlink(outside, root / "tmp-link")
            os.replace(root / "tmp-link", root / "race.csv")
            os.link(root / "keep.csv", root / "tmp-file")
            os.replace(root / "tmp-file", root / "race.csv")
            swaps[0] += 1

    os.link(root / "keep.csv", root / "race.csv")
    thread = threading.Thread(target=swapper)
    thread.start()
    reads: list[bytes] = []
    refusals = tries = 0
    # When it is confined, opened and read many times meanwhile: until both
    # sides of the race were seen often (threads share the GIL, so how many
    # tries that takes depends on the scheduler and the machine's load)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        while (refusals < 20 or len(reads) < 20) and tries < 200_000:
            tries += 1
            try:
                real, _ = confine("race.csv", root)
                with real.open("rb") as f:
                    reads.append(f.read())
            except ImportPathError:
                refusals += 1
    finally:
        sys.setswitchinterval(switch)
        stop.set()
        thread.join()
    # Then no read ever returned the outside file's content
    assert OUTSIDE not in reads
    assert set(reads) == {INSIDE}
    assert swaps[0] > 0 and refusals > 0 and reads  # the race really ran both ways
