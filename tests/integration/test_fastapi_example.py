"""examples/fastapi_app.py through httpx's ASGI transport, on the real database and a worker."""

from __future__ import annotations

import asyncio
import csv
import importlib.util
import io
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from import_support import seed_users, todos, write

from worker import aclient, client

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fastapi_app.py"
WAIT_S = 120.0  # a guard against a hang, not a measurement


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bulkops_fastapi_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def http(worker: Any, bulkops_env: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    app = load_example().create_app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bulkops.test") as c:
        yield c
    await aclient.dispose_engine()


async def finished(http: httpx.AsyncClient, job_id: int) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while True:
        r = await http.get(f"/imports/{job_id}")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        if body["finished_at"] is not None or asyncio.get_running_loop().time() > deadline:
            return body
        await asyncio.sleep(0.05)


async def test_post_a_file_read_the_summary_and_the_rejects_fix_and_post_again(
    http: httpx.AsyncClient,
) -> None:
    seed_users("a@example.com")
    data = (
        'title,status,owner_email\n"fix roof, then ""bank""",active,a@example.com\n'
        "second,nope,a@example.com\nthird,active,nobody@example.com\n"
    )
    r = await http.post("/imports/upload", files={"file": ("todos.csv", data.encode(), "text/csv")})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert r.json()["state"] in {"queued", "running", "partially_succeeded"}
    body = await finished(http, job_id)
    assert body["state"] == "partially_succeeded", body
    assert (body["rows_read"], body["rows_inserted"], body["rows_rejected"]) == (3, 1, 2)
    assert body["params"]["path"] == "upload:todos.csv"
    assert body == client.summary(job_id).to_dict()

    r = await http.get(f"/imports/{job_id}/rejects")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert f"job-{job_id}-rejects.csv" in r.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == ["title", "status", "owner_email", "_line", "_error"]
    assert [(row[0], row[3]) for row in rows[1:]] == [("second", "3"), ("third", "4")]

    # fixed as the rejects file says, and posted back as it is (_ columns are ignored)
    rows[1][1] = "completed"
    rows[2][2] = "a@example.com"
    fixed = io.StringIO()
    csv.writer(fixed).writerows(rows)
    r = await http.post(
        "/imports/upload", files={"file": ("fixed.csv", fixed.getvalue().encode(), "text/csv")}
    )
    assert r.status_code == 202, r.text
    again = await finished(http, r.json()["id"])
    assert (again["state"], again["rows_inserted"]) == ("succeeded", 2), again
    assert [t[:2] for t in todos()] == [
        ('fix roof, then "bank"', "active"),
        ("second", "completed"),
        ("third", "active"),
    ]


async def test_post_a_path_under_the_import_root(
    http: httpx.AsyncClient, bulkops_env: dict[str, str]
) -> None:
    write(
        Path(bulkops_env["BULKOPS_IMPORT_ROOT"]),
        "u.jsonl",
        '{"email": "j@example.com", "name": "J"}\n{"email": "bad", "name": "B"}\n',
    )
    r = await http.post("/imports", json={"path": "u.jsonl", "table": "users", "key": "k1"})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    r2 = await http.post("/imports", json={"path": "u.jsonl", "table": "users", "key": "k1"})
    assert r2.json()["id"] == job_id  # the same key: the same job
    body = await finished(http, job_id)
    assert (body["state"], body["rows_inserted"], body["rows_rejected"]) == (
        "partially_succeeded",
        1,
        1,
    )
    r = await http.get(f"/imports/{job_id}/rejects")
    assert r.headers["content-type"].startswith("application/x-ndjson")
    assert '"_line": 2' in r.text and '"email": "bad"' in r.text


async def test_errors_are_http_statuses(http: httpx.AsyncClient) -> None:
    r = await http.get("/imports/424242")
    assert r.status_code == 404 and "424242" in r.json()["error"]
    r = await http.get("/imports/424242/rejects")
    assert r.status_code == 404
    r = await http.post("/imports", json={"path": "../../etc/passwd"})
    assert r.status_code == 422 and "import root" in r.json()["error"]
    r = await http.post(
        "/imports/upload", files={"file": ("x.csv", b"a\n")}, data={"mode": "replace"}
    )
    assert r.status_code == 422, r.text
    assert client.jobs() == []
