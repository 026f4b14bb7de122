"""``bulkops jobs --watch`` under a pseudo-terminal, as an operator over SSH runs it."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pexpect
from acceptance_support import HeldLocks, bulkops_command, describe, execute, run_bulkops

from worker import client

JOB_TIMEOUT_S = 120  # generous: a bound against hanging, not a speed claim
CHUNK = 1000  # BULKOPS_CHUNK_SIZE of the test environment (tests/conftest.py)
HELD = "held@example.com"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-Za-z]|\r")


class Screen:
    """What a terminal program wrote, without its escape codes, read as it comes."""

    def __init__(self, child: pexpect.spawn) -> None:
        self.child = child
        self.text = ""

    def wait_for(self, pattern: str, what: str) -> re.Match[str]:
        """The first line (of every frame so far) that matches ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + JOB_TIMEOUT_S
        start = 0
        while time.monotonic() < deadline:
            try:
                self.text += ANSI.sub("", self.child.read_nonblocking(65536, timeout=0.5))
            except pexpect.TIMEOUT:
                pass
            lines = self.text.split("\n")
            for line in lines[start:]:
                if match := regex.search(line):
                    return match
            start = max(0, len(lines) - 1)
        raise AssertionError(f"timed out waiting for {what}; last output:\n{self.text[-3000:]}")


def test_jobs_watch_shows_a_running_job_then_its_end(
    celery_worker_process: Any, bulkops_env: dict[str, str], import_root: Path
) -> None:
    env = bulkops_env
    execute(
        env,
        "INSERT INTO users (email, name) VALUES ('ann@example.com', 'Ann'), (:h, 'Held')",
        h=HELD,
    )
    owners = ["ann@example.com"] * (4 * CHUNK)
    owners[2 * CHUNK + 10] = HELD  # the third chunk waits while the test holds this user
    lines = ["title,status,owner_email"] + [f"todo {i},active,{o}" for i, o in enumerate(owners)]
    (import_root / "watched.csv").write_text("\n".join(lines) + "\n")
    command = bulkops_command("jobs", "--watch")
    held = HeldLocks(env, "SELECT id FROM users WHERE email = :e FOR UPDATE", e=HELD)
    child = None
    try:
        # Given an import that runs up to its held chunk
        job_id = client.submit_import("watched.csv")
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while client.summary(job_id).chunks_done < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        # When an operator watches the jobs in a terminal
        child = pexpect.spawn(
            command[0], command[1:], env=env, dimensions=(50, 200), encoding="utf-8"
        )
        screen = Screen(child)
        # Then the running job is there with its progress, rows, rate, rejects, ETA and worker
        row = screen.wait_for(
            rf"[│|]\s*{job_id}\s*[│|]\s*import\s*[│|]\s*running\s*[│|][^│|]*[│|]"
            r"\s*([23])/4\s*[│|]\s*([\d,]+)\s*[│|]\s*([\d,]+)\s*[│|]\s*0\s*[│|]"
            r"\s*(\d+:\d\d:\d\d)\s*[│|]\s*(\S+)",
            "the running job's row",
        )
        assert int(row.group(2).replace(",", "")) >= 2 * CHUNK
        assert int(row.group(3).replace(",", "")) > 0  # rows/s
        assert row.group(5).startswith("acceptance-")  # the worker's node name
        # When the held chunk goes on and the job ends
        held.release()
        summary = client.wait(job_id, timeout=JOB_TIMEOUT_S)
        assert summary.state == "succeeded", summary.error
        # Then the view shows its end among the finished jobs
        screen.wait_for(
            rf"[│|]\s*{job_id}\s*[│|]\s*import\s*[│|]\s*succeeded\s*[│|]\s*4,000\s*[│|]",
            "the job's end",
        )
        # And Ctrl-C ends the view cleanly
        child.sendintr()
        child.expect(pexpect.EOF, timeout=JOB_TIMEOUT_S)
        child.close()
        assert child.exitstatus == 0, screen.text[-2000:]
    finally:
        held.release()
        if child is not None and child.isalive():
            child.terminate(force=True)
    # And without a terminal it prints one frame and exits
    once = run_bulkops(env, "jobs", "--watch")
    assert once.returncode == 0, describe(once)
    assert "recently finished" in once.stdout and "no queued or running jobs" in once.stdout
    assert re.search(rf"[│|]\s*{job_id}\s*[│|]\s*import\s*[│|]\s*succeeded", once.stdout)
