"""Seeding any target: deterministic, idempotent, realistic rows, parents first, loaded by COPY.

Values are chosen per column by name, then by type (:func:`column_generator`):
``email``/``*_email``, ``name``, ``first_name``, ``last_name``, ``title``,
``slug``, ``code``, ``sku``, ``price`` and any name that is a Faker provider
(``city``, ``company``, ``phone_number``…); a target's ``faker={"col":
"provider"}`` hint wins. Other columns get a value of their type within its
limits (``Decimal`` within precision and scale, an Enum's values, JSON of the
right shape, dates over the year before 2026-01-01 UTC).

Determinism: rows are generated in blocks of :data:`BLOCK` from an RNG seeded
by (random seed, table, block), so the same seed gives the same rows whatever
the chunking and whichever worker runs a chunk. The natural key's columns
carry the row number (``title #12``, ``first.last.12@example.com``), so keys
are unique and a re-run skips every row. Rows load as imports do (:func:`worker.loader.load`,
mode ``skip``): an optimistic COPY, else staging and ``ON CONFLICT DO NOTHING``.

Parents first: seeding ``products`` also seeds ``categories`` and
``suppliers`` (``parent_rows``, default a tenth of the child's rows). Child
row ``i`` of ``N`` references parent ``i * P // N`` of ``P`` (so the example's
``--todos-per-user M`` gives each user exactly M todos), by the parent's
natural key, resolved with one query per chunk and lookup
(:mod:`worker.lookups`). Each table's chunks are a phase of the plan, parents
first: the runner sends a phase once every chunk of the phases before it has
committed. A child chunk that still finds parents missing (only if recovery
sent it early) is retried with backoff (:class:`ParentsNotSeeded`).
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from faker import Faker
from faker.providers.lorem.en_US import Provider as _Lorem
from faker.providers.person.en_US import Provider as _Person
from sqlmodel import Session

from worker import loader, lookups, targets
from worker.config import get_settings
from worker.errors import RetryableError, UsageError
from worker.ledger import ChunkCounts
from worker.models import Job, JobKind
from worker.params import JobParams
from worker.runner import ChunkResult, ReadyFn
from worker.target_rows import TypedRow
from worker.targets import EXAMPLE_PARENT, EXAMPLE_TABLE, INT_RANGES, ColumnSpec, TargetSpec

_WORDS: tuple[str, ...] = tuple(sorted(set(_Lorem.word_list)))
_FIRST: tuple[str, ...] = tuple(sorted(_Person.first_names))
_LAST: tuple[str, ...] = tuple(sorted(_Person.last_names))
_DOMAINS = ("example.com", "example.org", "example.net")
_VERBS = ("Write", "Review", "Plan", "Fix", "Call", "Email", "Update", "Clean", "Book", "Check")
# Dates and timestamps spread over the year before a fixed instant: reproducible.
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
_SPREAD_S = 365 * 24 * 3600

BLOCK = 1000  # rows per RNG: chunks are cut at multiples of it
DEFAULT_USERS = 10
DEFAULT_TODOS_PER_USER = 5
DEFAULT_RANDOM_SEED = 42
DEFAULT_ROWS = 100
MAX_USERS = 10_000_000
MAX_TODOS_PER_USER = 100_000
MAX_ROWS = 1_000_000_000


class ParentsNotSeeded(RetryableError):
    """A child chunk ran before the chunk seeding its parents committed: retried later."""


@dataclass(frozen=True)
class SeedParams(JobParams):
    """Seed ``rows`` rows of ``table`` (and its parents: ``parent_rows`` per parent target)."""

    table: str = EXAMPLE_TABLE
    rows: int = DEFAULT_USERS * DEFAULT_TODOS_PER_USER
    parent_rows: Mapping[str, int] = field(default_factory=lambda: {EXAMPLE_PARENT: DEFAULT_USERS})
    random_seed: int = DEFAULT_RANDOM_SEED

    def __post_init__(self) -> None:
        if not 0 <= self.rows <= MAX_ROWS:
            raise UsageError(f"--rows must be between 0 and {MAX_ROWS}")
        for name, count in self.parent_rows.items():
            if not isinstance(count, int) or not 0 <= count <= MAX_ROWS:
                raise UsageError(f"parent rows of {name} must be between 0 and {MAX_ROWS}")

    @classmethod
    def example(
        cls,
        users: int = DEFAULT_USERS,
        todos_per_user: int = DEFAULT_TODOS_PER_USER,
        random_seed: int = DEFAULT_RANDOM_SEED,
    ) -> SeedParams:
        """The built-in example's ``--users N --todos-per-user M``: N users, M todos each."""
        if not 0 <= users <= MAX_USERS:
            raise UsageError(f"--users must be between 0 and {MAX_USERS}")
        if not 0 <= todos_per_user <= MAX_TODOS_PER_USER:
            raise UsageError(f"--todos-per-user must be between 0 and {MAX_TODOS_PER_USER}")
        return cls(EXAMPLE_TABLE, users * todos_per_user, {EXAMPLE_PARENT: users}, random_seed)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> SeedParams:
        """From a job's params; a job written before targets existed (users, todos_per_user)."""
        if isinstance(params, Mapping) and "table" not in params:
            return cls.example(
                int(params.get("users", DEFAULT_USERS)),
                int(params.get("todos_per_user", DEFAULT_TODOS_PER_USER)),
                int(params.get("random_seed", DEFAULT_RANDOM_SEED)),
            )
        return super().from_params(params)

    def counts(self, registry: targets.Registry) -> dict[str, int]:
        """Rows per target, parents first: declared ``parent_rows``, else a tenth of the child's."""
        order = registry.parents_first(self.table)
        unknown = sorted(set(self.parent_rows) - {s.name for s in order[:-1]})
        if unknown:
            raise UsageError(f"{', '.join(unknown)}: not a parent of {self.table}")
        counts = {self.table: self.rows}
        for spec in reversed(order):
            for lk in spec.lookups:
                parent = registry.by_table(lk.parent)
                if parent is None:
                    raise UsageError(
                        f"{spec.name}.{lk.fk_column} points at {lk.parent}, which is not a "
                        f"declared target: declare it to seed {spec.name}"
                    )
                if parent.name in self.parent_rows:
                    counts[parent.name] = self.parent_rows[parent.name]
                else:
                    wanted = -(-counts[spec.name] // 10) if counts[spec.name] else 0
                    counts[parent.name] = max(counts.get(parent.name, 0), wanted)
        return {s.name: counts[s.name] for s in order}


def seed_params(
    users: int | None,
    todos_per_user: int | None,
    random_seed: int,
    table: str | None,
    rows: int | None,
    parent_rows: Mapping[str, int] | None,
) -> SeedParams:
    """A producer's request -> SeedParams, checked against the targets (before any job)."""
    if table is None and rows is None and not parent_rows:
        users = DEFAULT_USERS if users is None else users
        per_user = DEFAULT_TODOS_PER_USER if todos_per_user is None else todos_per_user
        params = SeedParams.example(users, per_user, random_seed)
    else:
        if users is not None or todos_per_user is not None:
            raise UsageError(
                "--users/--todos-per-user seed the built-in example; with --table use --rows"
            )
        rows = DEFAULT_ROWS if rows is None else rows
        params = SeedParams(table or EXAMPLE_TABLE, rows, dict(parent_rows or {}), random_seed)
    params.counts(targets.registry())
    return params


# --- values ---------------------------------------------------------------------------

Gen = Callable[[random.Random, int], Any]
# Faker's provider methods (city, company, phone_number…): a column so named gets one.
_PROVIDERS = frozenset(
    m
    for p in Faker("en_US").get_providers()
    for m in dir(p)
    if not m.startswith("_") and m not in ("generator", "seed", "seed_instance", "random")
)


def _fit(text: str, limit: int | None, suffix: str = "") -> str:
    if limit is None:
        return text + suffix
    return text[: max(0, limit - len(suffix))] + suffix


def _str_generator(c: ColumnSpec, key: bool, hint: str | None, fake: Faker) -> Gen:
    name, limit = c.name.lower(), c.max_length

    def unique(text: str, n: int) -> str:
        return _fit(text, limit, f" #{n}" if key else "")

    if hint is not None:
        provider = getattr(fake, hint)
        if key:
            return lambda rng, n: _fit(f"{provider()}", limit, f"-{n}")
        return lambda rng, n: _fit(str(provider()), limit)
    if c.email:

        def email(rng: random.Random, n: int) -> str:
            first, last = rng.choice(_FIRST), rng.choice(_LAST)
            return _fit(f"{first}.{last}".lower(), limit, f".{n}@{rng.choice(_DOMAINS)}")

        return email
    if name in ("name", "full_name"):
        return lambda rng, n: unique(f"{rng.choice(_FIRST)} {rng.choice(_LAST)}", n)
    if name == "first_name":
        return lambda rng, n: unique(rng.choice(_FIRST), n)
    if name == "last_name":
        return lambda rng, n: unique(rng.choice(_LAST), n)
    if name == "title":
        return lambda rng, n: unique(
            f"{rng.choice(_VERBS)} {' '.join(rng.sample(_WORDS, rng.randint(2, 5)))}", n
        )
    if name == "slug" or name.endswith("_slug"):
        return lambda rng, n: _fit("-".join(rng.sample(_WORDS, 2)), limit, f"-{n}")
    if name in ("code", "sku", "ref", "reference") or name.endswith("_code"):
        return lambda rng, n: _fit(rng.choice(_WORDS)[:3].upper(), limit, f"-{n:06d}")
    if name in _PROVIDERS:
        provider = getattr(fake, name)
        return lambda rng, n: unique(str(provider()), n)
    return lambda rng, n: unique(" ".join(rng.sample(_WORDS, rng.randint(1, 4))).capitalize(), n)


def _decimal_generator(c: ColumnSpec, key: bool) -> Gen:
    scale = c.scale or 0
    digits = (c.precision or 12) - scale
    top = 10 ** min(digits, 4 if c.name.lower() in ("price", "cost", "amount") else digits) - 1
    quantum = Decimal(1).scaleb(-scale)
    if key:
        return lambda rng, n: Decimal(n).quantize(quantum)

    def number(rng: random.Random, n: int) -> Decimal:
        cents = rng.randrange(1, top * 10**scale + 1) if top > 0 else 0
        return (Decimal(cents).scaleb(-scale)).quantize(quantum)

    return number


def _json_generator(c: ColumnSpec) -> Gen:
    if c.json_shape == "array":
        return lambda rng, n: json.dumps(rng.sample(_WORDS, rng.randint(0, 3)))
    return lambda rng, n: json.dumps({"color": rng.choice(_WORDS), "size": rng.randrange(1, 50)})


def column_generator(c: ColumnSpec, fake: Faker, key: bool = False, hint: str | None = None) -> Gen:
    """``(rng, row number) -> value`` for one column; ``key``: part of the natural key.

    ``fake`` must draw from the same ``rng`` (``fake.random = rng``) for the
    values to be deterministic.
    """
    kind = c.kind
    if kind == "str":
        return _str_generator(c, key, hint, fake)
    if hint is not None:
        provider = getattr(fake, hint)
        return lambda rng, n: provider()
    if kind == "int":
        low, high = INT_RANGES[c.int_bits or 64]
        if key:
            return lambda rng, n: n
        return lambda rng, n: rng.randint(max(low, 0), min(high, 1000))
    if kind == "float":
        return lambda rng, n: float(n) if key else round(rng.uniform(0, 100), 3)
    if kind == "decimal":
        return _decimal_generator(c, key)
    if kind == "bool":
        return lambda rng, n: rng.random() < 0.5
    if kind == "date":
        start = _EPOCH.date()
        if key:
            return lambda rng, n: start - timedelta(days=n)
        return lambda rng, n: start - timedelta(days=rng.randrange(365))
    if kind == "datetime":
        return lambda rng, n: _EPOCH - timedelta(seconds=rng.randrange(_SPREAD_S))
    if kind == "uuid":
        return lambda rng, n: uuid.UUID(int=rng.getrandbits(128), version=4)
    if kind == "enum":
        choices = c.choices
        return lambda rng, n: rng.choice(choices)
    if kind == "json":
        return _json_generator(c)
    raise UsageError(f"cannot generate values for {c.name} ({kind})")


# --- rows -----------------------------------------------------------------------------


class Generator:
    """Rows of one target in file order (``TargetSpec.columns``), lookups by parents' keys."""

    def __init__(self, registry: targets.Registry, seed: int, counts: Mapping[str, int]) -> None:
        self.registry, self.seed, self.counts = registry, seed, counts
        self._gens: dict[str, list[Gen | None]] = {}
        self._blocks: dict[tuple[str, int], list[list[Any]]] = {}
        self._keys: dict[tuple[str, int], tuple[Any, ...]] = {}
        self._fake = Faker("en_US")  # one per generator: workers run chunks in threads

    def _generators(self, spec: TargetSpec) -> list[Gen | None]:
        if spec.name not in self._gens:
            key_cols = set(spec.key_file_columns)
            self._gens[spec.name] = [
                None
                if c.table_column is None
                else column_generator(c, self._fake, c.name in key_cols, spec.faker.get(c.name))
                for c in spec.columns
            ]
        return self._gens[spec.name]

    def _block(self, spec: TargetSpec, block: int) -> list[list[Any]]:
        """The block's own values (lookups left None): the same whoever asks, in any order."""
        cached = self._blocks.get((spec.name, block))
        if cached is None:
            rng = random.Random(f"{self.seed}:{spec.table.name}:{block}")
            self._fake.random = rng  # type: ignore[attr-defined]
            gens = self._generators(spec)
            cached = [
                [None if g is None else g(rng, n) for g in gens]
                for n in range(block * BLOCK, (block + 1) * BLOCK)
            ]
            if len(self._blocks) > 64:
                self._blocks.clear()
            self._blocks[(spec.name, block)] = cached
        return cached

    def key_of(self, table: str, n: int) -> tuple[Any, ...]:
        """Parent row ``n``'s natural key values (the file's key columns)."""
        found = self._keys.get((table, n))
        if found is None:
            spec = self.registry.get(table)
            values = self.row(spec, n)
            names = spec.file_columns
            found = tuple(values[names.index(c)] for c in spec.key_file_columns)
            self._keys[(table, n)] = found
        return found

    def row(self, spec: TargetSpec, n: int) -> tuple[Any, ...]:
        values = list(self._block(spec, n // BLOCK)[n % BLOCK])
        names = spec.file_columns
        for lk in spec.lookups:
            parent = self.registry.by_table(lk.parent)
            assert parent is not None  # SeedParams.counts refused it otherwise
            total, parents = self.counts[spec.name], self.counts[parent.name]
            if parents == 0:
                continue  # left empty: a required lookup then fails loudly
            key = self.key_of(parent.name, n * parents // max(total, 1))
            by_file = dict(zip(parent.key_file_columns, key, strict=True))
            for file_col, by in zip(lk.file_columns, lk.by, strict=True):
                values[names.index(file_col)] = by_file.get(_parent_file_name(parent, by))
        return tuple(values)


def _parent_file_name(parent: TargetSpec, table_column: str) -> str:
    for c in parent.columns:
        if c.table_column == table_column:
            return c.name
    raise UsageError(f"{parent.name}: {table_column} is not a column a file carries")


def rows(
    spec_name: str, seed: int, counts: Mapping[str, int], lo: int, hi: int
) -> list[tuple[Any, ...]]:
    """Rows ``lo``…``hi - 1`` of a target, in file order (for tests and benchmarks)."""
    registry = targets.registry()
    gen = Generator(registry, seed, counts)
    spec = registry.get(spec_name)
    return [gen.row(spec, n) for n in range(lo, hi)]


class SeedOperation:
    kind = JobKind.SEED.value

    def plan(self, session: Session, job: Job, ready: ReadyFn) -> list[dict[str, Any]]:
        """Per target, parents first: ranges of rows, cut at multiples of BLOCK.

        Nothing is written here: the plan is quick whatever the counts.
        """
        p = SeedParams.from_params(job.params)
        counts = p.counts(targets.registry())
        size = get_settings().bulkops_chunk_size
        per_chunk = max(BLOCK, size - size % BLOCK) if size >= BLOCK else size
        # Parents first: a table's chunks are sent once its parents' have committed.
        return [
            {"table": name, "lo": lo, "hi": min(lo + per_chunk, count), "phase": phase}
            for phase, (name, count) in enumerate(counts.items())
            for lo in range(0, count, per_chunk)
        ]

    def run_chunk(self, session: Session, job: Job, spec: dict[str, Any]) -> ChunkResult:
        p = SeedParams.from_params(job.params)
        registry = targets.registry()
        target = registry.get(str(spec["table"]))
        gen = Generator(registry, p.random_seed, p.counts(registry))
        lo, hi = int(spec["lo"]), int(spec["hi"])
        typed = [TypedRow(n, gen.row(target, n), "") for n in range(lo, hi)]
        records, missing = lookups.resolve(session, target, typed)
        if missing:
            raise ParentsNotSeeded(
                f"{target.name} rows {lo}-{hi}: {len(missing)} parent(s) not there yet "
                f"(first: {missing[0].reason})"
            )
        # Generated rows are valid by construction: a re-run's rows exist and are skipped
        # (idempotent); a row the database still refuses (a CHECK the generator does not
        # know) is a reject with the database's message, like an import's.
        out = loader.load(session, target.to_table_spec(), records, {}, "skip", dry_run=False)
        counts = ChunkCounts(
            read=hi - lo,
            inserted=out.inserted,
            skipped=out.skipped,
            rejected=len(out.rejects),
        )
        return ChunkResult(counts, out.rejects)


SEED = SeedOperation()
