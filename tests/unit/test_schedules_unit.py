"""Schedule files, slots and keys, beat entries, relative times (no services)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from worker import schedules
from worker.client import resolve_relative
from worker.errors import ConfigError

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


def test_a_slots_relative_times_start_from_the_slot_for_both_time_filters() -> None:
    params = {"to_status": "archived", "created_before": "1d", "updated_before": "30d"}
    s = schedules.Schedule("archive-stale", 3600.0, "update_status", params)
    slot = s.slot(datetime(2026, 12, 1, 12, 30, tzinfo=UTC).timestamp())
    assert s.params_for(slot) == {
        "to_status": "archived",
        "created_before": "2026-11-30T12:00:00+00:00",
        "updated_before": "2026-11-01T12:00:00+00:00",
    }


def test_relative_times_resolve_against_now_and_others_pass_through() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert resolve_relative("30d", now) == "2026-11-01T12:00:00+00:00"
    assert resolve_relative(" 2h ", now) == "2026-12-01T10:00:00+00:00"
    assert resolve_relative("1w", now) == "2026-11-24T12:00:00+00:00"
    assert resolve_relative("2026-01-01T00:00:00Z", now) == "2026-01-01T00:00:00Z"
    assert resolve_relative("30x", now) == "30x"
    assert resolve_relative(None, now) is None


def test_celeryconfig_adds_the_schedules_to_beat_and_refuses_a_bad_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    from worker.config import reset_settings

    # Given BULKOPS_SCHEDULE naming a file with one schedule
    path = tmp_path / "schedule.json"
    path.write_text(json.dumps({"archive-old": ARCHIVE}))
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("BULKOPS_SCHEDULE", str(path))
    reset_settings()
    import celeryconfig  # after the URLs: a first import reads the settings

    try:
        # When celeryconfig is loaded, then beat has the health and recovery tasks and the schedule
        beat = importlib.reload(celeryconfig).beat_schedule
        assert beat["schedule:archive-old"]["task"] == "tasks.jobs.run_schedule"
        assert {"health-check", "recover-stuck-jobs"} <= set(beat)
        assert "drop-folder" not in beat
        monkeypatch.setenv("BULKOPS_DROP_FOLDER", "drop")
        reset_settings()
        drop = importlib.reload(celeryconfig).beat_schedule["drop-folder"]
        assert (drop["task"], drop["schedule"]) == ("tasks.jobs.watch_drop_folder", 10.0)
        # and a malformed file stops it with one line naming the file
        path.write_text("{oops")
        reset_settings()
        with pytest.raises(SystemExit, match=f"bulkops: BULKOPS_SCHEDULE {path}: not valid"):
            importlib.reload(celeryconfig)
    finally:
        monkeypatch.delenv("BULKOPS_SCHEDULE")
        monkeypatch.delenv("BULKOPS_DROP_FOLDER", raising=False)
        reset_settings()
        importlib.reload(celeryconfig)
        reset_settings()
