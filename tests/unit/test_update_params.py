"""A status update's time filters: checked against the target's table, relative values resolved."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Column, DateTime, Enum, Integer, MetaData, Table, Text

from worker import targets
from worker.errors import UsageError
from worker.params import current_shape
from worker.targets import Registry, Status, Target
from worker.updates import UpdateParams, update_params

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
    p = update_params("archived", ["completed"], None, None, None, False, None, None, "30d")
    assert p.updated_before is not None
    resolved = datetime.fromisoformat(p.updated_before)
    assert (
        before - timedelta(days=30, seconds=5) < resolved <= datetime.now(UTC) - timedelta(days=30)
    )


def test_owner_email_is_a_where_filter_and_not_a_param_of_its_own() -> None:
    p = update_params("archived", [], "Bob@Example.com", None, None, False, None, [("title", "t")])
    assert p.where == (("owner_email", "Bob@Example.com"), ("title", "t"))
    assert "owner_email" not in p.to_params()
    # the same request through --where is the same params
    same = update_params("archived", [], None, None, None, False, None, p.where)
    assert same == p


def test_owner_on_a_target_without_owner_email_names_the_table_and_its_columns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(targets, "registry", lambda: _TICKETS)
    pattern = "--owner: tickets has no owner_email column .* title, status, created_at"
    with pytest.raises(UsageError, match=pattern):
        update_params("closed", [], "ann@example.com", None, None, False, "tickets")


def test_a_filter_given_twice_with_other_values_is_refused() -> None:
    with pytest.raises(UsageError, match="--where owner_email: given twice"):
        update_params(
            "archived", [], "a@example.com", None, None, False, None, {"owner_email": "b@x.org"}
        )
    # the same value twice (normalised as the column is) is one filter
    p = update_params(
        "archived", [], "A@example.com", None, None, False, None, {"owner_email": "a@example.com"}
    )
    assert len(p.where) == 2


def test_params_stored_with_owner_email_are_read_as_a_where_filter() -> None:
    # A job submitted before --owner became an alias of --where owner_email=
    stored = {
        "to_status": "archived",
        "from_statuses": ["completed"],
        "owner_email": "bob@example.com",
        "ids_file": None,
        "created_before": None,
        "dry_run": False,
        "table": "todos",
        "where": [["title", "t"]],
    }
    p = UpdateParams.from_params(stored)
    assert p.where == (("owner_email", "bob@example.com"), ("title", "t"))
    assert UpdateParams.from_params({**stored, "owner_email": None}).where == (("title", "t"),)
    # and a key's earlier job is compared with a new request in today's shape
    assert current_shape("update_status", stored) == p.to_params()
