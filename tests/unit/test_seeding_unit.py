"""Unit tests for the generic seed generator and SeedParams (no services)."""

from __future__ import annotations

from datetime import timedelta

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
    rows,
)
from worker.targets import Registry, builtin_targets

EXAMPLE = Registry(builtin_targets())


def _counts(users: int, per_user: int, seed: int = 7) -> dict[str, int]:
    return SeedParams.example(users, per_user, seed).counts(EXAMPLE)


def test_rows_are_deterministic_and_independent_of_the_range_asked() -> None:
    counts = _counts(50, 3)
    whole = rows("users", 7, counts, 0, 50)
    pieces = rows("users", 7, counts, 30, 50)
    assert whole[30:] == pieces
    assert rows("todos", 7, counts, 0, 150) == rows("todos", 7, counts, 0, 150)
    assert rows("users", 8, counts, 0, 50) != whole


def test_user_emails_are_unique_lower_case_and_match_the_name() -> None:
    users = rows("users", 1, _counts(2000, 0), 0, 2000)
    emails = [email for email, _ in users]
    assert len(set(emails)) == 2000
    for email, name in users[:50]:
        assert email == email.lower()
        first, last = name.split(" ", 1)
        local, _, domain = email.partition("@")
        assert local and domain.startswith("example.")


def test_each_user_gets_exactly_todos_per_user_todos_with_unique_titles() -> None:
    counts = _counts(40, 50)
    users = [email for email, _ in rows("users", 7, counts, 0, 40)]
    todos = rows("todos", 7, counts, 0, 2000)
    by_owner: dict[str, int] = {}
    for title, status, owner, created in todos:
        by_owner[owner] = by_owner.get(owner, 0) + 1
        assert 0 < len(title) <= TITLE_MAX and "\t" not in title
        assert status in STATUSES
        assert created.utcoffset() == timedelta(0)
    assert by_owner == {email: 50 for email in users}
    assert len({(t[0], t[2]) for t in todos}) == 2000
    assert {t[1] for t in todos} == set(STATUSES)  # a mix, not one status


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**31), count=st.integers(min_value=0, max_value=300)
)
def test_todo_titles_unique_and_bounded_for_any_seed(seed: int, count: int) -> None:
    todos = rows("todos", seed, _counts(3, count, seed), 0, 3 * count)
    titles = [(t[0], t[2]) for t in todos]
    assert len(titles) == 3 * count == len(set(titles))
    assert all(0 < len(t[0]) <= TITLE_MAX for t in todos)


def test_seed_params_defaults_are_the_example() -> None:
    p = SeedParams()
    assert p == SeedParams.example(DEFAULT_USERS, DEFAULT_TODOS_PER_USER, DEFAULT_RANDOM_SEED)
    assert p.to_params() == {
        "table": "todos",
        "rows": 50,
        "parent_rows": {"users": 10},
        "random_seed": 42,
    }


def test_a_job_written_before_targets_reads_as_the_example() -> None:
    old = {"users": 4, "todos_per_user": 3, "random_seed": 5}
    assert SeedParams.from_params(old) == SeedParams("todos", 12, {"users": 4}, 5)
    assert SeedParams.from_params(SeedParams.example(4, 3, 5).to_params()).rows == 12


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
        SeedParams.example(**kwargs)
    assert option in info.value.message


def test_counts_parents_default_to_a_tenth_and_unknown_parents_are_refused() -> None:
    assert SeedParams("todos", 95, {}, 1).counts(EXAMPLE) == {"users": 10, "todos": 95}
    assert SeedParams.example(0, 0).counts(EXAMPLE) == {"users": 0, "todos": 0}
    with pytest.raises(UsageError, match="not a parent"):
        SeedParams("users", 5, {"todos": 1}, 1).counts(EXAMPLE)
    with pytest.raises(UsageError, match="known tables"):
        SeedParams("nope", 5, {}, 1).counts(EXAMPLE)
