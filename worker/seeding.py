"""Deterministic, idempotent, realistic seed data, loaded through the COPY path.

Every user and every user's todos come from their own RNG, seeded by
(random seed, user number): the same seed gives the same rows whatever the
chunking and whichever worker runs a chunk. Names and words come from
Faker's own word lists, drawn with ``random.Random`` (a Faker call per row
would be slower than the database). Re-running adds nothing: emails and
(title, owner) are unique keys and existing rows are skipped.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from faker.providers.lorem.en_US import Provider as _Lorem
from faker.providers.person.en_US import Provider as _Person
from sqlmodel import Session

from worker import bulkload
from worker.config import get_settings
from worker.errors import UsageError
from worker.ledger import ChunkCounts
from worker.models import TITLE_MAX, Job, JobKind
from worker.runner import ChunkResult

_WORDS: tuple[str, ...] = tuple(sorted(set(_Lorem.word_list)))
_FIRST: tuple[str, ...] = tuple(sorted(_Person.first_names))
_LAST: tuple[str, ...] = tuple(sorted(_Person.last_names))
_DOMAINS = ("example.com", "example.org", "example.net")
_VERBS = ("Write", "Review", "Plan", "Fix", "Call", "Email", "Update", "Clean", "Book", "Check")
# Status mix of a lived-in todo list.
_STATUSES = ("active", "in_progress", "completed", "archived")
_STATUS_WEIGHTS = (45, 20, 30, 5)
# created_at spreads over the year before a fixed instant, so rows are reproducible.
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
_SPREAD_S = 365 * 24 * 3600

DEFAULT_USERS = 10
DEFAULT_TODOS_PER_USER = 5
DEFAULT_RANDOM_SEED = 42
MAX_USERS = 10_000_000
MAX_TODOS_PER_USER = 100_000


@dataclass(frozen=True)
class SeedParams:
    users: int = DEFAULT_USERS
    todos_per_user: int = DEFAULT_TODOS_PER_USER
    random_seed: int = DEFAULT_RANDOM_SEED

    def __post_init__(self) -> None:
        if not 0 <= self.users <= MAX_USERS:
            raise UsageError(f"--users must be between 0 and {MAX_USERS}")
        if not 0 <= self.todos_per_user <= MAX_TODOS_PER_USER:
            raise UsageError(f"--todos-per-user must be between 0 and {MAX_TODOS_PER_USER}")

    def to_params(self) -> dict[str, Any]:
        return {
            "users": self.users,
            "todos_per_user": self.todos_per_user,
            "random_seed": self.random_seed,
        }


def user_row(seed: int, n: int) -> tuple[str, str]:
    """(email, name) of user number ``n``; the number keeps emails unique."""
    rng = random.Random(f"{seed}:user:{n}")
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    domain = rng.choice(_DOMAINS)
    return f"{first}.{last}.{n}@{domain}".lower(), f"{first} {last}"


def todo_rows(seed: int, n: int, count: int, owner_id: int) -> list[tuple[Any, ...]]:
    """``count`` todos with titles unique for user ``n``."""
    rng = random.Random(f"{seed}:todos:{n}")
    words, verbs = _WORDS, _VERBS
    choice, randint, randrange = rng.choice, rng.randint, rng.randrange
    statuses = rng.choices(_STATUSES, _STATUS_WEIGHTS, k=count)
    seen: set[str] = set()
    rows: list[tuple[Any, ...]] = []
    for i in range(count):
        title = f"{choice(verbs)} {' '.join(rng.sample(words, randint(2, 5)))}"
        while title in seen:
            title = f"{title} {choice(words)}"[:TITLE_MAX]
        seen.add(title)
        created = _EPOCH - timedelta(seconds=randrange(_SPREAD_S))
        rows.append((title, statuses[i], owner_id, created.isoformat()))
    return rows


class SeedOperation:
    kind = JobKind.SEED.value

    def plan(self, session: Session, job: Job) -> list[dict[str, Any]]:
        """Blocks of users; each chunk inserts its users and then their todos.

        Nothing is written here: the plan is quick whatever ``--users``, and a
        block of users commits with its todos in one chunk transaction.
        """
        p = SeedParams(**{k: job.params[k] for k in ("users", "todos_per_user", "random_seed")})
        per_chunk = max(1, get_settings().bulkops_chunk_size // (p.todos_per_user + 1))
        return [
            {"first_user": lo, "last_user": min(lo + per_chunk, p.users)}
            for lo in range(0, p.users, per_chunk)
        ]

    def run_chunk(self, session: Session, job: Job, spec: dict[str, Any]) -> ChunkResult:
        seed, per_user = int(job.params["random_seed"]), int(job.params["todos_per_user"])
        numbers = range(int(spec["first_user"]), int(spec["last_user"]))
        users = [user_row(seed, n) for n in numbers]
        users_new = bulkload.insert_new(session, "users", bulkload.USER_COLUMNS, ("email",), users)
        rows: list[tuple[Any, ...]] = []
        if per_user:
            emails = {n: email for n, (email, _) in zip(numbers, users, strict=True)}
            ids = bulkload.owner_ids(session, list(emails.values()))
            for n in numbers:
                rows.extend(todo_rows(seed, n, per_user, ids[emails[n]]))
        todos_new = bulkload.insert_new(
            session, "todos", bulkload.TODO_COLUMNS, ("title", "owner_id"), rows
        )
        read, inserted = len(users) + len(rows), users_new + todos_new
        return ChunkResult(ChunkCounts(read=read, inserted=inserted, skipped=read - inserted))


SEED = SeedOperation()
