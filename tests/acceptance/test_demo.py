"""Acceptance: ``bulkops demo`` on a machine with no DATABASE_URL/REDIS_URL at all.

The demo starts an embedded PostgreSQL and Redis, a real worker and beat, runs
its jobs and must stop everything it started. Processes it started are
recognised by a marker variable in their environment (inherited by every
descendant) or by the demo's unique data directory on their command line
(the embedded PostgreSQL runs with ``-D <data dir>/pgdata``), so workers of
other tests or other runs are never counted.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import time
import uuid
from pathlib import Path

import pytest
from acceptance_support import CONFIG_VARS, describe, run_bulkops, without

pytestmark = [
    pytest.mark.acceptance,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="scans /proc for leftovers"),
]

MARKER_VAR = "BULKOPS_ACCEPTANCE_DEMO_MARKER"
EXIT_GRACE_S = 5.0  # processes killed just before the demo returned may still be dying


def processes_started_by(marker: str, data_dir: Path) -> dict[int, str]:
    """pid -> command line of every live process carrying the marker or the data dir."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:  # exited meanwhile, or not ours to read
            continue
        if str(data_dir).encode() in cmdline or f"{MARKER_VAR}={marker}".encode() in environ:
            found[int(entry.name)] = cmdline.replace(b"\0", b" ").decode(errors="replace")
    return found


def test_demo_runs_on_embedded_services_and_leaves_nothing_running(tmp_path: Path) -> None:
    # Given a user's own directory and an environment without DATABASE_URL/REDIS_URL
    marker = uuid.uuid4().hex
    data_dir = tmp_path / f"demo-data-{marker[:12]}"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = without(os.environ, *CONFIG_VARS, "BULKOPS_IMPORT_ROOT")
    env[MARKER_VAR] = marker

    # When the user runs the demo
    try:
        result = run_bulkops(
            env,
            "demo",
            "--users",
            "20",
            "--todos-per-user",
            "5",
            "--data-dir",
            str(data_dir),
            timeout=240,
            cwd=cwd,
            kill_group=False,  # anything left behind must be seen below, not killed
        )
        # Then it succeeds and says every step did what it should
        assert result.returncode == 0, describe(result)
        out = result.stdout
        assert "all steps as expected" in out, describe(result)
        job = r"job \d+ \(\w+\): "  # the one summary line (worker.console)
        assert re.search(rf"^seed\s+{job}succeeded\s+read=120\s+inserted=120\b", out, re.M), out
        assert re.search(
            rf"^seed again\s+{job}succeeded\s+read=120\s+inserted=0\s+updated=0\s+skipped=120\b",
            out,
            re.M,
        ), out
        assert not re.search(r"^\s+FAIL ", out, re.M), out
        # The import shows its rejects, and the status update ran in batches
        assert re.search(
            rf"^import\s+{job}partially_succeeded\s+read=9\s+inserted=4\b", out, re.M
        )
        assert out.count("rejected line ") == 5, out
        assert re.search(rf"^update-status\s+{job}succeeded", out, re.M), out
        # ... it kept its data where it was told, not in the working directory
        assert (data_dir / "pgdata").is_dir()
        assert list(cwd.iterdir()) == []

        # Then no process it started is left running
        deadline = time.monotonic() + EXIT_GRACE_S
        left = processes_started_by(marker, data_dir)
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = processes_started_by(marker, data_dir)
        assert left == {}, f"bulkops demo left processes running: {left}"
    finally:
        # Never leak them into other tests, whatever failed above.
        for pid in processes_started_by(marker, data_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
