"""Unit tests for the seed data generators and SeedParams (no services)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.errors import UsageError
from worker.models import STATUSES, TITLE_MAX
from worker.seeding import (
    DEFAULT_RANDOM_SEED,
    DEFAULT_TODOS_PER_USER,
    DEFAULT_USERS,
    MAX_TODOS_PER_USER,
    MAX_USERS,
    SeedParams,
    todo_rows,
    user_row,
)


def test_user_row_is_deterministic_and_independent_of_order() -> None:
    forwards = [user_row(7, n) for n in range(50)]
    backwards = [user_row(7, n) for n in reversed(range(50))][::-1]
    assert forwards == backwards
    assert user_row(7, 3) == forwards[3]


def test_user_emails_are_unique_and_lower_case() -> None:
    emails = [user_row(1, n)[0] for n in range(2000)]
    assert len(set(emails)) == 2000
    for email in emails:
        assert email == email.lower()
        local, _, domain = email.partition("@")
        assert local and domain.startswith("example.")


def test_user_name_matches_email() -> None:
    email, name = user_row(3, 12)
    first, last = name.split(" ", 1)
    assert email.startswith(f"{first}.{last}.12@".lower())


def test_different_seeds_give_different_users() -> None:
    assert [user_row(1, n) for n in range(20)] != [user_row(2, n) for n in range(20)]


def test_todo_rows_are_deterministic() -> None:
    assert todo_rows(42, 5, 300, owner_id=9) == todo_rows(42, 5, 300, owner_id=9)
    assert todo_rows(42, 5, 300, owner_id=9) != todo_rows(43, 5, 300, owner_id=9)
    assert todo_rows(42, 5, 300, owner_id=9) != todo_rows(42, 6, 300, owner_id=9)


def test_todo_rows_shape() -> None:
    rows = todo_rows(42, 0, 2000, owner_id=17)
    assert len(rows) == 2000
    titles = [row[0] for row in rows]
    # unique per user, as UNIQUE(title, owner_id) requires
    assert len(set(titles)) == 2000
    for title, status, owner_id, created_at in rows:
        assert 0 < len(title) <= TITLE_MAX
        assert "\t" not in title and "\n" not in title
        assert status in STATUSES
        assert owner_id == 17
        parsed = datetime.fromisoformat(created_at)
        assert parsed.tzinfo is not None
        assert parsed.utcoffset() == timedelta(0)
    # a realistic mix of statuses, not one
    assert {row[1] for row in rows} == set(STATUSES)


def test_zero_todos() -> None:
    assert todo_rows(42, 0, 0, owner_id=1) == []


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**31),
    n=st.integers(min_value=0, max_value=MAX_USERS),
    count=st.integers(min_value=0, max_value=300),
)
def test_todo_titles_unique_and_bounded_for_any_seed(seed: int, n: int, count: int) -> None:
    rows = todo_rows(seed, n, count, owner_id=1)
    titles = [row[0] for row in rows]
    assert len(titles) == count == len(set(titles))
    assert all(0 < len(t) <= TITLE_MAX for t in titles)
    assert all(row[1] in STATUSES for row in rows)


def test_seed_params_defaults() -> None:
    p = SeedParams()
    assert (p.users, p.todos_per_user, p.random_seed) == (
        DEFAULT_USERS,
        DEFAULT_TODOS_PER_USER,
        DEFAULT_RANDOM_SEED,
    )
    assert p.to_params() == {"users": 10, "todos_per_user": 5, "random_seed": 42}


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"users": -1}, "--users"),
        ({"todos_per_user": -1}, "--todos-per-user"),
        ({"users": MAX_USERS + 1}, "--users"),
        ({"todos_per_user": MAX_TODOS_PER_USER + 1}, "--todos-per-user"),
    ],
)
def test_seed_params_reject_out_of_range_counts(kwargs: dict[str, int], option: str) -> None:
    with pytest.raises(UsageError) as info:
        SeedParams(**kwargs)
    assert option in info.value.message


def test_seed_params_accept_zero_and_the_maximum() -> None:
    assert SeedParams(users=0, todos_per_user=0).to_params()["users"] == 0
    assert SeedParams(users=MAX_USERS, todos_per_user=MAX_TODOS_PER_USER).users == MAX_USERS
