"""The async producer API (worker.aclient) on the real database, Redis and a Celery worker."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from import_support import Counts, counts, seed_users, todos, write
from sqlalchemy import text

from worker import aclient, client, db, ledger
from worker.errors import ImportPathError, JobNotFound, UsageError

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

WAIT_S = 120.0  # a guard against a hang, not a measurement


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def aenv(worker: Any, bulkops_env: dict[str, str]) -> AsyncIterator[dict[str, str]]:
    """A worker and a fresh database; this loop's async engine closed afterwards."""
    yield bulkops_env
    await aclient.dispose_engine()


class Chunked:
    """An async reader handing out a few bytes at a time (as an UploadFile would)."""

    def __init__(self, data: bytes, step: int = 7) -> None:
        self._buf, self._step = io.BytesIO(data), step
        self.reads = 0

    async def read(self, size: int = -1) -> bytes:
        self.reads += 1
        await asyncio.sleep(0)
        return self._buf.read(min(size, self._step) if size > 0 else self._step)


def large_objects() -> int:
    with db.session_scope() as s:
        return int(s.execute(text("SELECT count(*) FROM pg_largeobject_metadata")).scalar_one())


async def no_large_objects_left() -> bool:
    """The job's task removes its upload just after the job's last commit: poll a little."""
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while large_objects() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    return large_objects() == 0


async def test_seed_wait_summary_and_one_job_per_key(aenv: dict[str, str]) -> None:
    job_id = await aclient.submit_seed(users=3, todos_per_user=4, random_seed=1, key="s-1")
    assert await aclient.submit_seed(users=3, todos_per_user=4, random_seed=1, key="s-1") == job_id
    with pytest.raises(UsageError, match="other parameters"):
        await aclient.submit_seed(users=4, todos_per_user=4, random_seed=1, key="s-1")
    seen: list[str] = []
    done = await aclient.wait(
        job_id, timeout=WAIT_S, poll_s=0.05, on_progress=lambda s: seen.append(s.state)
    )
    assert (done.state, done.rows_inserted, done.rows_rejected) == ("succeeded", 15, 0)
    assert seen[-1] == "succeeded"
    assert (await aclient.summary(job_id)).to_dict() == client.summary(job_id).to_dict()
    assert [j.id for j in await aclient.jobs()] == [job_id]
    with pytest.raises(UsageError):
        await aclient.jobs(limit=0)


async def test_import_by_path_with_rejects_read_back(aenv: dict[str, str]) -> None:
    seed_users("a@example.com")
    root = Path(aenv["BULKOPS_IMPORT_ROOT"])
    write(
        root,
        "t.csv",
        "title,status,owner_email\nok,active,a@example.com\n"
        ",active,a@example.com\nbad,nope,a@example.com\nalso ok,completed,a@example.com\n",
    )
    job_id = await aclient.submit_import("t.csv")
    done = await aclient.wait(job_id, timeout=WAIT_S, poll_s=0.05)
    assert counts(done) == Counts("partially_succeeded", read=4, inserted=2, rejected=2)
    got = await aclient.rejects(job_id)
    assert [r.line for r in got] == [3, 4]
    assert got == client.rejects(job_id)
    assert [r.line for r in await aclient.rejects(job_id, limit=1)] == [3]
    assert [t[0] for t in todos()] == ["also ok", "ok"]


async def test_refusals_happen_before_any_job(aenv: dict[str, str]) -> None:
    with pytest.raises(ImportPathError):
        await aclient.submit_import("../outside.csv")
    write(Path(aenv["BULKOPS_IMPORT_ROOT"]), "t.csv", "title,status,owner_email\n")
    with pytest.raises(UsageError):
        await aclient.submit_import("t.csv", mode="replace")
    with pytest.raises(UsageError, match="no users row with that email"):
        await aclient.submit_update_status("completed", owner_email="nobody@example.com")
    with pytest.raises(JobNotFound):
        await aclient.summary(424242)
    with pytest.raises(JobNotFound):
        await aclient.rejects(424242)
    with pytest.raises(JobNotFound):
        await aclient.cancel(424242)
    assert client.jobs() == []


async def test_upload_from_an_async_reader(aenv: dict[str, str]) -> None:
    data = b"email,name\nx@example.com,X\ny@example.com,Y\nnot-an-email,Z\n"
    reader = Chunked(data)
    sent: list[int] = []
    job_id = await aclient.submit_import(
        reader, table="users", name="users.csv", on_progress=sent.append
    )
    assert sum(sent) == len(data) and reader.reads > 2
    upload = (await aclient.summary(job_id)).params["upload"]
    assert upload["size"] == len(data) and upload["name"] == "users.csv"
    done = await aclient.wait(job_id, timeout=WAIT_S, poll_s=0.05)
    found = counts(done)
    assert (found.state, found.read, found.inserted) == ("partially_succeeded", 3, 2), done
    assert await no_large_objects_left()  # removed when the job ended


async def test_upload_of_a_local_file_and_a_second_upload_with_the_same_key(
    aenv: dict[str, str], tmp_path: Path
) -> None:
    local = tmp_path / "users.csv"
    local.write_bytes(b"email,name\np@example.com,P\n")
    first = await aclient.submit_import(local, table="users", upload=True, key="u-1")
    again = await aclient.submit_import(
        Chunked(local.read_bytes()), table="users", name="users.csv", key="u-1"
    )
    assert again == first
    done = await aclient.wait(first, timeout=WAIT_S, poll_s=0.05)
    assert counts(done) == Counts("succeeded", read=1, inserted=1)
    assert await no_large_objects_left()  # the second copy went at once, the first with its job


async def test_upload_to_an_object_store_off_the_loop(
    aenv: dict[str, str], tmp_path: Path, configure: Callable[..., None]
) -> None:
    # Given BULKOPS_UPLOAD_STORE names an fsspec URL
    store = tmp_path / "object-store"
    configure(BULKOPS_UPLOAD_STORE=f"file://{store}")
    data = b"email,name\nx@example.com,X\nnot-an-email,Z\n"
    # When an async reader is uploaded twice with one key, its reads running on the loop
    first = await aclient.submit_import(Chunked(data), table="users", name="u.csv", key="o-1")
    again = await aclient.submit_import(Chunked(data), table="users", name="u.csv", key="o-1")
    # Then one job reads one object (the second copy was removed at once), no large object
    assert again == first and len(list(store.iterdir())) == 1
    upload = (await aclient.summary(first)).params["upload"]
    assert upload["store"] == "fsspec" and large_objects() == 0
    done = await aclient.wait(first, timeout=WAIT_S, poll_s=0.05)
    assert counts(done) == Counts("partially_succeeded", read=2, inserted=1, rejected=1), done
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while any(store.iterdir()) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)  # removed by the job's task just after its last commit
    assert list(store.iterdir()) == []


async def test_update_status_and_cancel(aenv: dict[str, str]) -> None:
    seed_users("o@example.com")
    with db.session_scope() as s:
        s.execute(
            text(
                "INSERT INTO todos (title, status, owner_id) SELECT 't' || g, 'active', "
                "(SELECT id FROM users) FROM generate_series(1, 5) g"
            )
        )
    job_id = await aclient.submit_update_status(
        "completed", ["active"], owner_email="O@example.com"
    )
    done = await aclient.wait(job_id, timeout=WAIT_S, poll_s=0.05)
    assert counts(done) == Counts("succeeded", read=5, updated=5)
    # a queued job whose message never went out: cancelled at once
    queued = ledger.submit(
        "seed", {"users": 1, "todos_per_user": 1, "random_seed": 1}, lambda _job, _task: None
    )
    assert await aclient.cancel(queued) == "cancelled"
    assert (await aclient.summary(queued)).finished


async def test_the_message_is_sent_off_the_event_loop_thread(
    aenv: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    loop_thread = threading.get_ident()
    senders: list[int] = []
    real = client.send_job

    def recording(kind: str, job_id: int, task_id: str) -> None:
        senders.append(threading.get_ident())
        real(kind, job_id, task_id)

    monkeypatch.setattr(client, "send_job", recording)
    job_id = await aclient.submit_seed(users=1, todos_per_user=1)
    assert senders and senders[0] != loop_thread
    assert (await aclient.wait(job_id, timeout=WAIT_S, poll_s=0.05)).state == "succeeded"


async def test_waiting_for_a_keys_lock_leaves_the_loop_running(aenv: dict[str, str]) -> None:
    """A submit blocked on the key's lock (another producer is submitting it) is awaited."""
    holder = db.get_engine().connect()
    try:
        ledger.lock_key(holder, "busy")
        submit = asyncio.ensure_future(aclient.submit_seed(users=1, todos_per_user=1, key="busy"))
        ticks = 0
        while ticks < 20:  # 20 turns of the loop while the submit waits on PostgreSQL
            await asyncio.sleep(0.02)
            ticks += 1
        assert not submit.done()
        assert client.jobs() == []
    finally:
        ledger.unlock_key(holder, "busy")
        holder.close()
    job_id = await asyncio.wait_for(submit, WAIT_S)
    assert (await aclient.wait(job_id, timeout=WAIT_S, poll_s=0.05)).state == "succeeded"


async def test_reads_on_a_callers_session(aenv: dict[str, str]) -> None:
    job_id = await aclient.submit_seed(users=1, todos_per_user=2)
    await aclient.wait(job_id, timeout=WAIT_S, poll_s=0.05)
    async with aclient.session_scope() as session:
        summary = await aclient.summary(job_id, session=session)
        assert summary.rows_inserted == 3
        assert await aclient.rejects(job_id, session=session) == []
        assert [j.id for j in await aclient.jobs(session=session)] == [job_id]
