"""Schedule files, slots and keys, beat entries, relative times (no services)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from worker import schedules
from worker.errors import ConfigError
from worker.updates import resolve_relative

ARCHIVE = {
    "every": 86400,
    "kind": "update_status",
    "params": {"to_status": "archived", "from_statuses": ["completed"], "created_before": "30d"},
}


def test_a_schedule_file_becomes_one_beat_entry_per_schedule(tmp_path: Path) -> None:
    path = tmp_path / "schedule.json"
    path.write_text(json.dumps({"archive-old": ARCHIVE}))
    loaded = schedules.load(path)
    assert loaded["archive-old"].params == ARCHIVE["params"]
    assert schedules.beat_entries(loaded, "maintenance") == {
        "schedule:archive-old": {
            "task": "tasks.jobs.run_schedule",
            "schedule": 86400.0,
            "kwargs": {"name": "archive-old"},
            "options": {"queue": "maintenance", "expires": 86400.0},
        }
    }


def test_yaml_is_read_like_json(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    path = tmp_path / "schedule.yaml"
    path.write_text("archive-old:\n  every: 60\n  kind: seed\n  params: {users: 2}\n")
    assert schedules.load(path)["archive-old"] == schedules.Schedule(
        "archive-old", 60.0, "seed", {"users": 2}
    )


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("[1, 2]", "must map schedule names"),
        ("{not json", "not valid"),
        ('{"a": {"every": 0, "kind": "seed"}}', "'a': every must be a number of seconds"),
        ('{"a": {"every": true, "kind": "seed"}}', "every must be a number"),
        ('{"a": {"every": 5, "kind": "seed", "cron": "* * *"}}', "needs only every, kind"),
        ('{"a": {"every": 5, "kind": "seed", "params": []}}', "params an object"),
    ],
)
def test_a_malformed_file_names_the_entry(tmp_path: Path, content: str, error: str) -> None:
    path = tmp_path / "schedule.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=error) as raised:
        schedules.load(path)
    assert str(path) in raised.value.message


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        schedules.load(tmp_path / "nope.json")


def test_one_slot_one_key_whatever_the_moment_within_it() -> None:
    s = schedules.Schedule("nightly", 3600.0, "seed", {})
    assert s.slot(7200.0) == s.slot(10799.9) == 2
    assert s.slot(10800.0) == 3
    assert s.key(2) == "schedule:nightly:2"


def test_relative_times_resolve_against_now_and_others_pass_through() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert resolve_relative("30d", now) == "2026-11-01T12:00:00+00:00"
    assert resolve_relative(" 2h ", now) == "2026-12-01T10:00:00+00:00"
    assert resolve_relative("1w", now) == "2026-11-24T12:00:00+00:00"
    assert resolve_relative("2026-01-01T00:00:00Z", now) == "2026-01-01T00:00:00Z"
    assert resolve_relative("30x", now) == "30x"
    assert resolve_relative(None, now) is None


def test_celeryconfig_adds_the_schedules_to_beat_and_refuses_a_bad_file(tmp_path: Path) -> None:
    import celeryconfig
    from worker.config import load_settings

    # Given BULKOPS_SCHEDULE naming a file with one schedule
    path = tmp_path / "schedule.json"
    path.write_text(json.dumps({"archive-old": ARCHIVE}))
    env = {
        "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/postgres",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "BULKOPS_SCHEDULE": str(path),
        "BULKOPS_DROP_FOLDER": None,
    }
    # When the configuration is built, then beat has the health and recovery tasks and the schedule
    beat = celeryconfig.config(load_settings(env))["beat_schedule"]
    assert beat["schedule:archive-old"]["task"] == "tasks.jobs.run_schedule"
    assert {"health-check", "recover-stuck-jobs"} <= set(beat)
    assert "drop-folder" not in beat
    drop = celeryconfig.beat_schedule(load_settings({**env, "BULKOPS_DROP_FOLDER": "drop"}))
    assert (drop["drop-folder"]["task"], drop["drop-folder"]["schedule"]) == (
        "tasks.jobs.watch_drop_folder",
        10.0,
    )
    # and a malformed file is refused with one line naming the file
    path.write_text("{oops")
    with pytest.raises(ConfigError, match=f"BULKOPS_SCHEDULE {path}: not valid"):
        celeryconfig.config(load_settings(env))
