"""Security: pickled messages are refused and never executed; the worker keeps working."""

from __future__ import annotations

import os
import pickle
import uuid
from pathlib import Path

from kombu import Connection, Exchange, Producer

from worker import client
from worker.queues import IMPORTS
from worker.supervisor import background, worker_command


class _Exploit:
    """Unpickling this would create a file: proof of code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def test_pickle_message_on_our_queue_is_refused_and_never_executed(
    bulkops_env: dict[str, str], tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    # Given a message on the imports queue serialized with pickle, whose body
    # would run a command if it were ever unpickled
    body = pickle.dumps(((_Exploit(marker),), {}, {}))
    task_id = str(uuid.uuid4())
    with Connection(bulkops_env["REDIS_URL"]) as conn:
        Producer(conn).publish(
            body,
            exchange=Exchange(IMPORTS, type="direct"),
            routing_key=IMPORTS,
            content_type="application/x-python-serialize",
            content_encoding="binary",
            headers={"task": "tasks.imports.run_import", "id": task_id, "lang": "py"},
            declare=[],
        )
    logs = tmp_path / "logs"
    with background([worker_command(f"sec-{task_id[:6]}", 1)], bulkops_env, logs):
        # When a worker consumes the queue (and then a normal job after it)
        summary = client.wait(client.submit_seed(2, 2, 1), timeout=120)
    # Then the pickle was refused, never run, and the worker went on working
    assert summary.state == "succeeded"
    assert not marker.exists(), "the pickled payload was executed"
    text = "".join(p.read_text(errors="replace") for p in logs.glob("*.log"))
    assert "ContentDisallowed" in text or "Refusing to deserialize" in text
