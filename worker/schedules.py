"""Periodic bulk jobs declared in a file (BULKOPS_SCHEDULE), run by beat exactly once per slot.

The file (JSON, or YAML when PyYAML is installed) maps a schedule's name to
``{"every": seconds, "kind": ..., "params": {...}}``, the same kind and params
as ``tasks.jobs.submit``. Beat sends ``tasks.jobs.run_schedule(name)`` every
``every`` seconds; the task submits with the idempotency key
``schedule:NAME:SLOT``, where the slot is the number of whole ``every`` periods
since the epoch. Two beats, or a beat restarted within a slot, send the task
again and get the slot's one job back.

Relative times in params (``"created_before": "30d"``) are resolved when the
slot runs, from the slot's start (see :meth:`Schedule.params_for`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from worker.errors import ConfigError


@dataclass(frozen=True)
class Schedule:
    name: str
    every: float  # seconds
    kind: str
    params: dict[str, Any]

    def slot(self, at: float | None = None) -> int:
        return int((time.time() if at is None else at) // self.every)

    def key(self, slot: int) -> str:
        return f"schedule:{self.name}:{slot}"

    def params_for(self, slot: int) -> dict[str, Any]:
        """The params of one slot: relative times taken from the slot's start.

        So every run of one slot submits the same params (the idempotency key
        refuses the same key with other params), whenever within it it runs.
        """
        from worker.updates import resolve_relative

        start = datetime.fromtimestamp(slot * self.every, UTC)
        return {
            k: resolve_relative(v, start) if k.endswith("_before") and isinstance(v, str) else v
            for k, v in self.params.items()
        }


def load(path: Path) -> dict[str, Schedule]:
    """The schedules in ``path``; ConfigError naming the file and the entry when malformed."""
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"BULKOPS_SCHEDULE {path}: cannot be read: {exc}") from None
    try:
        if path.suffix.lower() in {".yaml", ".yml"}:
            import yaml

            data = yaml.safe_load(raw)
        else:
            data = json.loads(raw)
    except ImportError:
        raise ConfigError(f"BULKOPS_SCHEDULE {path}: YAML needs PyYAML; use JSON") from None
    except ValueError as exc:  # json.JSONDecodeError and yaml.YAMLError's parse errors
        raise ConfigError(f"BULKOPS_SCHEDULE {path}: not valid: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"BULKOPS_SCHEDULE {path}: must map schedule names to entries")
    return {name: _entry(path, str(name), entry) for name, entry in data.items()}


def _entry(path: Path, name: str, entry: Any) -> Schedule:
    where = f"BULKOPS_SCHEDULE {path}, {name!r}"
    if not isinstance(entry, dict) or set(entry) - {"every", "kind", "params"}:
        raise ConfigError(f"{where}: needs only every, kind and params")
    every = entry.get("every")
    if isinstance(every, bool) or not isinstance(every, int | float) or every < 1:
        raise ConfigError(f"{where}: every must be a number of seconds, at least 1")
    kind, params = entry.get("kind"), entry.get("params", {})
    if not isinstance(kind, str) or not isinstance(params, dict):
        raise ConfigError(f"{where}: kind must be a job kind and params an object")
    return Schedule(name=name, every=float(every), kind=kind, params=params)


def beat_entries(schedules: dict[str, Schedule], queue: str) -> dict[str, dict[str, Any]]:
    """Celery beat_schedule entries: one run_schedule task per schedule, expiring with its slot."""
    return {
        f"schedule:{s.name}": {
            "task": "tasks.jobs.run_schedule",
            "schedule": s.every,
            "kwargs": {"name": s.name},
            "options": {"queue": queue, "expires": s.every},
        }
        for s in schedules.values()
    }


# --- the drop folder -------------------------------------------------------------------


# How a scan submits a job: (kind, params, key) -> job id (worker.client.submit_json_or_fail).
SubmitFn = Callable[[str, dict[str, Any], str], int]


def scan_drop_folder(
    folder: Path, settle_s: float, submit: SubmitFn, now: float | None = None
) -> list[int]:
    """Import each file in ``folder`` (under the import root) once; returns the job ids.

    A file modified less than ``settle_s`` ago may still be being written and
    waits for a later scan. The key is the file's relative path, size and
    mtime: a scan that sees it again gets the same job, and a file replaced
    with new content is a new file. ``submit`` is passed in (by the task) so
    that this module, which the Celery configuration reads, needs no client.
    """
    from worker.source import confine

    now = time.time() if now is None else now
    jobs = []
    for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
        if entry.name.startswith(".") or not entry.is_file():
            continue  # hidden files: the usual "still uploading" names (.part, rsync temp)
        stat = entry.stat()
        if now - stat.st_mtime < settle_s:
            continue
        _, relative = confine(entry)
        key = f"drop:{relative}:{stat.st_size}:{stat.st_mtime_ns}"
        jobs.append(submit("import", {"path": relative}, key))
    return jobs
