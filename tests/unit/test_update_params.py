"""A status update's time filters: checked against the target's table, relative values resolved."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Column, DateTime, Enum, Integer, MetaData, Table, Text

from worker import client, targets
from worker.errors import UsageError
from worker.targets import Registry, Status, Target
from worker.updates import UpdateParams

# A target with a status and a created_at but no updated_at.
_TICKETS_TABLE = Table(
    "tickets",
    MetaData(),
    Column("id", Integer, primary_key=True),
    Column("title", Text, nullable=False, unique=True),
    Column("status", Enum("open", "closed", name="ticket_status"), nullable=False),
    Column("created_at", DateTime(timezone=True)),
)
_TICKETS = Registry(
    [Target(_TICKETS_TABLE, name="tickets", status=Status("status", {"closed": ["open"]}))]
)


def test_updated_before_takes_an_iso_timestamp_and_lands_in_the_params() -> None:
    p = UpdateParams(to_status="archived", updated_before="2026-11-01T00:00:00Z")
    assert p.time_filters() == [("updated_at", "2026-11-01T00:00:00Z")]
    assert p.to_params()["updated_before"] == "2026-11-01T00:00:00Z"
    both = UpdateParams(
        to_status="archived", created_before="2026-01-01", updated_before="2026-02-01"
    )
    assert [c for c, _ in both.time_filters()] == ["created_at", "updated_at"]


def test_the_params_round_trip_and_stay_as_before_without_the_filter() -> None:
    given = UpdateParams(
        to_status="completed", from_statuses=("active",), updated_before="2026-01-01"
    )
    assert UpdateParams.from_params(given.to_params()) == given
    # Without it, the params are those of earlier releases (one key, one request).
    assert "updated_before" not in UpdateParams(to_status="completed").to_params()


def test_a_malformed_updated_before_names_the_option() -> None:
    with pytest.raises(UsageError, match="--updated-before 'last week' is not an ISO 8601"):
        UpdateParams(to_status="archived", updated_before="last week")
    with pytest.raises(UsageError, match="--created-before '30x' is not an ISO 8601"):
        UpdateParams(to_status="archived", created_before="30x")


def test_a_target_without_updated_at_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(targets, "registry", lambda: _TICKETS)
    with pytest.raises(UsageError, match="--updated-before: tickets has no updated_at column"):
        UpdateParams(to_status="closed", table="tickets", updated_before="2026-01-01")
    # the same target takes --created-before: the check is per column
    ok = UpdateParams(to_status="closed", table="tickets", created_before="2026-01-01")
    assert ok.time_filters() == [("created_at", "2026-01-01")]


def test_relative_updated_before_resolves_at_submit() -> None:
    before = datetime.now(UTC)
    p = client.update_params("archived", ["completed"], None, None, None, False, None, None, "30d")
    assert p.updated_before is not None
    resolved = datetime.fromisoformat(p.updated_before)
    assert (
        before - timedelta(days=30, seconds=5) < resolved <= datetime.now(UTC) - timedelta(days=30)
    )
