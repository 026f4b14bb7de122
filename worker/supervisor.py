"""Processes bulkops runs beside itself: ``celery`` workers, beat and Flower as subprocesses.

Each starts in its own process group, logs to a file, and is stopped as a
whole group (so no pool child outlives it). Used by the demo and dev stack,
the acceptance tests and the benchmarks.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from worker.queues import QUEUES

STOP_GRACE_S = 20.0


def celery_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "worker", *args]


def worker_command(name: str = "bulkops", concurrency: int = 2) -> list[str]:
    return celery_command(
        "worker",
        "-Q",
        ",".join(QUEUES),
        "-c",
        str(concurrency),
        "-n",
        f"{name}@%h",
        "--loglevel=INFO",
        "--without-gossip",
        "--without-mingle",
    )


@contextlib.contextmanager
def background(
    commands: Sequence[Sequence[str]], env: dict[str, str], log_dir: Path
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start each command in its own process group; stop every group on exit."""
    log_dir.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i, cmd in enumerate(commands):
            with open(log_dir / f"{_log_name(cmd)}-{i}.log", "ab") as log:
                procs.append(
                    subprocess.Popen(
                        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                    )
                )
        yield procs
    finally:
        stop_processes(procs)


def _log_name(cmd: Sequence[str]) -> str:
    """``worker``, ``beat``, ``flower`` for a :func:`celery_command`, else the program's name."""
    prefix = celery_command()
    if len(cmd) > len(prefix) and list(cmd[: len(prefix)]) == prefix:
        return Path(cmd[len(prefix)]).name
    return Path(cmd[0]).name


def stop_processes(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:  # a reaped pid may belong to someone else by now
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=5)
