"""Targets: the tables bulkops imports, updates and seeds, derived from SQLModel classes.

A team declares ``Target(MyModel, ...)`` for each table and names the list (or
dict) with ``BULKOPS_TARGETS=module:attribute``; without it the built-in
example (:func:`builtin_targets`: ``users`` and ``todos``) is used, declared
through this very API. Everything that the SQLAlchemy ``Table`` says is
derived; only what it cannot say is declared:

- **Columns a file may carry**: every column except an autoincrement primary
  key, columns with an ``onupdate`` (e.g. ``updated_at``, kept by the
  database), ``exclude=`` and foreign keys (replaced by their lookup's file
  columns). *Required* = NOT NULL without a server default or a Python-side
  scalar default.
- **Types and limits**: ``str`` (``max_length``), ``int`` (smallint, integer,
  bigint ranges), ``float``, ``Decimal`` (precision, scale), ``bool``,
  ``date``, ``datetime`` (a naive value means **UTC**; aware values are
  converted to UTC), ``UUID``, ``Enum`` (the values the database stores) and
  JSON (``dict``/``list`` columns, given in a file as JSON text). A ``str``
  column named ``email`` or ``*_email`` is an email: stripped, lower-cased,
  checked for one ``@``.
- **Natural key** (insert, skip, upsert): ``key=`` if declared, else the
  first unique constraint or unique index that is not the primary key,
  ordered by the positions of its columns in the table (so ``email`` before
  ``(title, owner_id)`` when both exist). The candidates are listed by
  ``bulkops targets``: declare ``key=`` when the first is not the one.
- **Lookups**: a single-column foreign key is resolved by the parent's
  natural key. By naming convention the file carries ``<fk without _id>_<key
  column>``: ``owner_id`` → users(email) gives ``owner_email``,
  ``category_id`` → categories(slug) gives ``category_slug``; a composite
  parent key gives one file column per key column. ``lookups=`` declares
  other file column names (``Lookup("users", by=("email",),
  column="owner_email")``). A parent that is a target lends its declared key.
- **Status**: ``status=Status("status", transitions={...})``: the column and
  its allowed transitions; allowed values come from the Enum type, else from
  the transitions.
- **Faker hints**: ``faker={"column": "provider"}`` where the name and type
  are not enough (see :mod:`worker.seeding`).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import importlib
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Table,
    TypeDecorator,
    Uuid,
)
from sqlalchemy import Column as SAColumn
from sqlalchemy import Enum as SAEnum
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.schema import UniqueConstraint

from worker.errors import ConfigError, UsageError
from worker.loader import TableSpec

KINDS = ("str", "int", "float", "decimal", "bool", "date", "datetime", "uuid", "enum", "json")
INT_RANGES = {16: (-(2**15), 2**15 - 1), 32: (-(2**31), 2**31 - 1), 64: (-(2**63), 2**63 - 1)}
_PG = postgresql.dialect()  # type: ignore[no-untyped-call]


# --- the declaration -----------------------------------------------------------------


@dataclass(frozen=True)
class Lookup:
    """A foreign key resolved by the parent's natural key: the file names the parent.

    ``table`` is the parent table, ``by`` its key columns (default: its natural
    key), ``column`` the file's column(s), one per ``by`` (default by
    convention: ``<fk without _id>_<by>``).
    """

    table: str
    by: tuple[str, ...] | str | None = None
    column: tuple[str, ...] | str | None = None


@dataclass(frozen=True)
class Status:
    """A status column and its allowed transitions (from -> the statuses it may become)."""

    column: str
    transitions: Mapping[str, Iterable[str]]
    values: tuple[str, ...] | None = None  # default: the Enum's values, else the transitions'


@dataclass(frozen=True)
class Target:
    """One table bulkops may import, update and seed; everything else is derived."""

    model: Any  # a SQLModel table class, or a SQLAlchemy Table
    name: str | None = None  # default: the table's name
    key: tuple[str, ...] | None = None  # the natural key's table columns, if not the first
    lookups: Mapping[str, Lookup] = field(default_factory=dict)  # fk column -> lookup
    status: Status | None = None
    exclude: tuple[str, ...] = ()  # columns a file may not carry
    faker: Mapping[str, str] = field(default_factory=dict)  # column -> Faker provider
    key_label: str | None = None  # "a todo with this title for this owner"

    @property
    def table(self) -> Table:
        table = getattr(self.model, "__table__", self.model)
        if not isinstance(table, Table):
            raise ConfigError(f"target {self.model!r} is neither a SQLModel table nor a Table")
        return table


# --- what is derived -----------------------------------------------------------------


@dataclass(frozen=True)
class ColumnSpec:
    """One column as a file gives it: its kind, limits and whether it must be there."""

    name: str  # the file's column name (a lookup's file column for lookup keys)
    kind: str  # one of KINDS
    sql_type: str  # the table column's type, compiled for PostgreSQL
    required: bool
    nullable: bool = True
    max_length: int | None = None
    precision: int | None = None
    scale: int | None = None
    int_bits: int | None = None
    choices: tuple[str, ...] = ()
    json_shape: str | None = None  # "object", "array" or None (any JSON)
    default: Any = None  # Python-side scalar default, filled in when the file omits it
    default_factory: Callable[[], Any] | None = None
    server_default: str | None = None  # SQL of the server default
    # A server default that is a constant ('active', '0'): the validator fills it in,
    # as text, like a file value. Others (now(), gen_random_uuid()) stay NULL for
    # the loader to apply (TableSpec.defaults, ColumnSpec.default_sql).
    server_constant: str | None = None
    email: bool = False
    table_column: str | None = None  # the table's column (None for a lookup's file column)

    @property
    def default_sql(self) -> str | None:
        """The SQL a load applies when the value is missing (NULL staged), if any."""
        return None if self.server_constant is not None else self.server_default

    @property
    def has_default(self) -> bool:
        return (
            self.server_default is not None
            or self.default is not None
            or self.default_factory is not None
        )

    def describe(self) -> str:
        """``str(200)``, ``decimal(10,2)``, ``enum(a|b)``, ``int64``…"""
        if self.kind == "str" and self.max_length:
            return f"str({self.max_length})"
        if self.kind == "decimal" and self.precision is not None:
            return f"decimal({self.precision},{self.scale or 0})"
        if self.kind == "int" and self.int_bits:
            return f"int{self.int_bits}"
        if self.kind == "enum":
            return f"enum({'|'.join(self.choices)})"
        if self.kind == "json" and self.json_shape:
            return f"json({self.json_shape})"
        return self.kind


@dataclass(frozen=True)
class LookupSpec:
    """A resolved lookup: ``fk_column`` = parent.``parent_pk`` where parent.``by`` = file values."""

    fk_column: str
    parent: str  # the parent table's name
    parent_pk: str
    by: tuple[str, ...]
    columns: tuple[ColumnSpec, ...]  # the file's columns, parallel to ``by``
    required: bool

    @property
    def file_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


@dataclass(frozen=True)
class StatusSpec:
    column: str
    values: tuple[str, ...]
    transitions: Mapping[str, frozenset[str]]

    def allowed_from(self, to: str) -> list[str]:
        """Statuses that may move to ``to``."""
        return [s for s in self.values if to in self.transitions.get(s, frozenset())]


@dataclass(frozen=True, eq=False)
class TargetSpec:
    """Everything bulkops needs to know about one target table."""

    name: str
    table: Table
    pk: str
    columns: tuple[ColumnSpec, ...]  # the file's columns: own columns, then lookups' in place
    key: tuple[str, ...]  # the natural key, table columns
    key_candidates: tuple[tuple[str, ...], ...]
    lookups: tuple[LookupSpec, ...]
    status: StatusSpec | None
    faker: Mapping[str, str]
    key_label: str

    @property
    def file_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def required_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)

    @property
    def optional_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if not c.required)

    def column(self, name: str) -> ColumnSpec:
        for c in self.columns:
            if c.name == name:
                return c
        raise UsageError(f"{self.name} has no column {name!r}")

    def lookup_of(self, fk_column: str) -> LookupSpec | None:
        return next((lk for lk in self.lookups if lk.fk_column == fk_column), None)

    @property
    def load_columns(self) -> tuple[str, ...]:
        """The table columns a load writes, in file order (a lookup's file columns -> its fk)."""
        out: list[str] = []
        for c in self.columns:
            if c.table_column is not None:
                out.append(c.table_column)
            else:
                fk = next(lk.fk_column for lk in self.lookups if c.name in lk.file_columns)
                if fk not in out:
                    out.append(fk)
        return tuple(out)

    @property
    def key_file_columns(self) -> tuple[str, ...]:
        """The file columns the natural key is made of (a lookup's key columns for an fk)."""
        out: list[str] = []
        for col in self.key:
            lk = self.lookup_of(col)
            out.extend(lk.file_columns if lk else (self._file_name(col),))
        return tuple(out)

    def _file_name(self, table_column: str) -> str:
        return next(c.name for c in self.columns if c.table_column == table_column)

    def to_table_spec(self) -> TableSpec:
        """A :class:`worker.loader.TableSpec` for loading this target."""
        cols = self.load_columns
        by_table = {c.table_column: c for c in self.columns if c.table_column}
        types = tuple(staging_type(self.table.c[name]) for name in cols)
        defaults = tuple(
            name for name in cols if name in by_table and by_table[name].default_sql is not None
        )
        default_sql = tuple(str(by_table[name].default_sql) for name in defaults)
        return TableSpec(
            table=self.table.name,
            columns=cols,
            types=types,
            key=self.key,
            updatable=tuple(c for c in cols if c not in self.key),
            key_label=self.key_label,
            key_column=self.key_file_columns[0],
            defaults=defaults,
            default_sql=default_sql,
        )


def staging_type(column: SAColumn[Any]) -> str:
    """The column's type for staging tables and bound arrays (``text`` for any string)."""
    t = column.type
    while isinstance(t, TypeDecorator):
        t = t.impl_instance
    if isinstance(t, String) and not isinstance(t, SAEnum):
        return "text"
    compiled = str(column.type.compile(dialect=_PG)).lower()
    return {"timestamp with time zone": "timestamptz"}.get(compiled, compiled)


def _kind(column: SAColumn[Any]) -> dict[str, Any]:
    """The kind and limits of a column, from its SQLAlchemy type."""
    t = column.type
    while isinstance(t, TypeDecorator):  # SQLModel's AutoString and the like
        t = t.impl_instance
    if isinstance(t, SAEnum):
        return {"kind": "enum", "choices": tuple(t.enums)}
    if isinstance(t, String):
        return {"kind": "str", "max_length": t.length}
    if isinstance(t, Boolean):
        return {"kind": "bool"}
    if isinstance(t, SmallInteger):
        return {"kind": "int", "int_bits": 16}
    if isinstance(t, BigInteger):
        return {"kind": "int", "int_bits": 64}
    if isinstance(t, Integer):
        return {"kind": "int", "int_bits": 32}
    if isinstance(t, Float):
        return {"kind": "float"}
    if isinstance(t, Numeric):  # after Float: Float is a Numeric
        return {"kind": "decimal", "precision": t.precision, "scale": t.scale}
    if isinstance(t, DateTime):
        return {"kind": "datetime"}
    if isinstance(t, Date):
        return {"kind": "date"}
    if isinstance(t, Uuid | postgresql.UUID):
        return {"kind": "uuid"}
    if isinstance(t, JSON | postgresql.JSONB):
        return {"kind": "json", "json_shape": _json_shape(column)}
    raise ConfigError(
        f"column {column.table.name}.{column.name}: type {t!r} is not supported "
        f"(supported: {', '.join(KINDS)}); exclude it or give it a server default"
    )


def _json_shape(column: SAColumn[Any]) -> str | None:
    """``object`` for a dict field, ``array`` for a list field, from the model's annotation."""
    info = column.info.get("bulkops_json")
    return str(info) if info else None


def _annotated_shape(model: Any, name: str) -> str | None:
    """``object``/``array`` from a SQLModel field annotated ``dict[...]``/``list[...]``."""
    fields = getattr(model, "model_fields", {})
    annotation = fields[name].annotation if name in fields else None
    for part in (annotation, *typing.get_args(annotation)):
        origin = typing.get_origin(part) or part
        if origin in (dict, list):
            return "object" if origin is dict else "array"
    return None


def _column_spec(column: SAColumn[Any], name: str | None = None, owned: bool = True) -> ColumnSpec:
    kind = _kind(column)
    default = factory = None
    if column.default is not None and getattr(column.default, "is_scalar", False):
        default = column.default.arg  # type: ignore[attr-defined]
        if isinstance(default, enum.Enum):
            default = default.name if kind["kind"] == "enum" else default.value
    elif column.default is not None and getattr(column.default, "is_callable", False):
        fn = column.default.arg  # type: ignore[attr-defined]
        factory = functools.partial(fn, None)
    server = constant = None
    if column.server_default is not None:
        arg = getattr(column.server_default, "arg", None)
        if isinstance(arg, str):
            server, constant = f"'{arg}'", arg
        else:
            compile_ = getattr(arg, "compile", None)
            server = str(compile_(dialect=_PG)) if compile_ is not None else str(arg)
    has_default = server is not None or default is not None or factory is not None
    file_name = name or column.name
    return ColumnSpec(
        name=file_name,
        sql_type=staging_type(column),
        required=not column.nullable and not has_default,
        nullable=bool(column.nullable),
        default=default,
        default_factory=factory,
        server_default=server,
        server_constant=constant,
        email=kind["kind"] == "str" and (file_name == "email" or file_name.endswith("_email")),
        table_column=column.name if owned else None,
        **kind,
    )


def _unique_sets(table: Table) -> list[tuple[str, ...]]:
    """Unique constraints and unique indexes that are not the primary key, in column order."""
    pk = tuple(c.name for c in table.primary_key.columns)
    found: set[tuple[str, ...]] = set()
    for con in table.constraints:
        if isinstance(con, UniqueConstraint):
            found.add(tuple(c.name for c in con.columns))
    for index in table.indexes:
        if index.unique and all(isinstance(c, SAColumn) for c in index.expressions):
            found.add(tuple(c.name for c in index.columns))
    for column in table.columns:
        if column.unique:
            found.add((column.name,))
    position = {c.name: i for i, c in enumerate(table.columns)}
    keys = [k for k in found if k and k != pk]
    return sorted(keys, key=lambda k: [position[c] for c in k])


def _derive(
    t: Target, declared: Mapping[str, Target], keys: dict[str, tuple[str, ...]]
) -> TargetSpec:
    table = t.table
    name = t.name or table.name
    pks = [c.name for c in table.primary_key.columns]
    if len(pks) != 1:
        raise ConfigError(f"target {name}: a single-column primary key is needed, found {pks}")
    pk = pks[0]
    candidates = tuple(_unique_sets(table))
    key = keys[table.name]
    for col in t.exclude:
        if col not in table.c:
            raise ConfigError(f"target {name}: exclude names an unknown column {col!r}")
    for col in t.lookups:
        if col not in table.c or not table.c[col].foreign_keys:
            raise ConfigError(f"target {name}: lookups[{col!r}] is not a foreign key column")
    lookups: list[LookupSpec] = []
    columns: list[ColumnSpec] = []
    for column in table.columns:
        if column.name in t.exclude or column.onupdate is not None:
            continue
        if column.primary_key and column.autoincrement in (True, "auto") and _is_int(column):
            continue
        fks = list(column.foreign_keys)
        if fks:
            lk = _lookup(name, column, fks[0], t.lookups.get(column.name), keys, declared)
            lookups.append(lk)
            columns.extend(lk.columns)
            continue
        spec = _column_spec(column)
        if spec.kind == "json" and spec.json_shape is None:
            shape = _annotated_shape(t.model, column.name)
            spec = dataclasses.replace(spec, json_shape=shape)
        columns.append(spec)
    status = _status(name, t.status, table) if t.status else None
    if status is not None:  # a string status column takes only the declared values
        columns = [
            dataclasses.replace(c, kind="enum", choices=status.values)
            if c.table_column == status.column and c.kind == "str"
            else c
            for c in columns
        ]
    names = [c.name for c in columns]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"target {name}: file column(s) {', '.join(dup)} named twice")
    file_key = [c for k in key for c in _key_file(k, lookups)]
    label = t.key_label or f"a row of {name} with this {', '.join(file_key)}"
    return TargetSpec(
        name=name,
        table=table,
        pk=pk,
        columns=tuple(columns),
        key=key,
        key_candidates=candidates,
        lookups=tuple(lookups),
        status=status,
        faker=dict(t.faker),
        key_label=label,
    )


def _key_file(col: str, lookups: Sequence[LookupSpec]) -> tuple[str, ...]:
    lk = next((x for x in lookups if x.fk_column == col), None)
    return lk.file_columns if lk else (col,)


def _is_int(column: SAColumn[Any]) -> bool:
    return isinstance(column.type, Integer)


def _natural_key(t: Target) -> tuple[str, ...]:
    table = t.table
    name = t.name or table.name
    candidates = _unique_sets(table)
    if t.key is not None:
        key = tuple(t.key)
        if key not in candidates and tuple(sorted(key)) not in {
            tuple(sorted(c)) for c in candidates
        }:
            raise ConfigError(
                f"target {name}: key {key} is not a unique constraint "
                f"(candidates: {candidates or 'none'})"
            )
        return key
    if not candidates:
        raise ConfigError(
            f"target {name}: no unique constraint besides the primary key to use as natural key"
        )
    return candidates[0]


def _lookup(
    name: str,
    column: SAColumn[Any],
    fk: Any,
    declared: Lookup | None,
    keys: Mapping[str, tuple[str, ...]],
    targets: Mapping[str, Target],
) -> LookupSpec:
    parent_col = fk.column
    parent: Table = parent_col.table
    if declared is not None and declared.table not in (parent.name, *_names_of(parent, targets)):
        raise ConfigError(
            f"target {name}: lookups[{column.name!r}] names {declared.table!r}, "
            f"but the foreign key points at {parent.name}"
        )
    by_decl = declared.by if declared is not None else None
    if by_decl is None:
        by = keys.get(parent.name) or _first_key(parent, name, column.name)
    else:
        by = (by_decl,) if isinstance(by_decl, str) else tuple(by_decl)
    for b in by:
        if b not in parent.c:
            raise ConfigError(f"target {name}: lookup {column.name}: {parent.name} has no {b!r}")
    col_decl = declared.column if declared is not None else None
    if col_decl is None:
        stem = column.name[:-3] if column.name.endswith("_id") else column.name
        file_cols = tuple(f"{stem}_{b}" for b in by)
    else:
        file_cols = (col_decl,) if isinstance(col_decl, str) else tuple(col_decl)
    if len(file_cols) != len(by):
        raise ConfigError(
            f"target {name}: lookup {column.name}: {len(by)} key column(s) need "
            f"as many file columns, got {file_cols}"
        )
    own = _column_spec(column)
    specs = tuple(
        _column_spec_for_key(parent.c[b], fc, own.required, own.nullable)
        for b, fc in zip(by, file_cols, strict=True)
    )
    return LookupSpec(column.name, parent.name, parent_col.name, by, specs, own.required)


def _column_spec_for_key(
    parent_column: SAColumn[Any], file_name: str, required: bool, nullable: bool
) -> ColumnSpec:
    """A lookup's file column: the parent key column's type, the foreign key's optionality."""
    spec = _column_spec(parent_column, file_name, owned=False)
    return dataclasses.replace(
        spec,
        required=required,
        nullable=nullable,
        default=None,
        default_factory=None,
        server_default=None,
        server_constant=None,
    )


def _first_key(parent: Table, name: str, fk_column: str) -> tuple[str, ...]:
    candidates = _unique_sets(parent)
    if not candidates:
        raise ConfigError(
            f"target {name}: {fk_column} points at {parent.name}, which has no natural key "
            f"(a unique constraint) to look it up by; declare lookups[{fk_column!r}]"
        )
    return candidates[0]


def _names_of(parent: Table, targets: Mapping[str, Target]) -> list[str]:
    return [n for n, t in targets.items() if t.table is parent]


def _status(name: str, s: Status, table: Table) -> StatusSpec:
    if s.column not in table.c:
        raise ConfigError(f"target {name}: status column {s.column!r} does not exist")
    kind = _kind(table.c[s.column])
    values: tuple[str, ...]
    if s.values is not None:
        values = tuple(s.values)
    elif kind["kind"] == "enum":
        values = kind["choices"]
    else:
        values = tuple(
            dict.fromkeys([*s.transitions, *(v for vs in s.transitions.values() for v in vs)])
        )
    transitions = {k: frozenset(v) for k, v in s.transitions.items()}
    unknown = sorted({*transitions, *(v for vs in transitions.values() for v in vs)} - set(values))
    if unknown:
        raise ConfigError(f"target {name}: transitions name unknown status(es) {unknown}")
    return StatusSpec(s.column, values, transitions)


# --- the registry --------------------------------------------------------------------


class Registry:
    """The declared targets, derived once; parents' declared keys serve their children."""

    def __init__(self, declared: Sequence[Target] | Mapping[str, Target]) -> None:
        items: list[tuple[str, Target]]
        if isinstance(declared, Mapping):
            items = [
                (n, t if t.name else Target(**{**t.__dict__, "name": n}))
                for n, t in declared.items()
            ]
        else:
            items = [(t.name or t.table.name, t) for t in declared]
        for _, t in items:
            if not isinstance(t, Target):
                raise ConfigError(f"BULKOPS_TARGETS: {t!r} is not a worker.targets.Target")
        by_name = dict(items)
        if len(by_name) != len(items):
            raise ConfigError("BULKOPS_TARGETS: two targets have the same name")
        keys = {t.table.name: _natural_key(t) for _, t in items}
        self.specs: dict[str, TargetSpec] = {n: _derive(t, by_name, keys) for n, t in items}

    def get(self, name: str) -> TargetSpec:
        try:
            return self.specs[name]
        except KeyError:
            known = ", ".join(self.specs) or "none"
            raise UsageError(f"unknown table {name!r}; known tables: {known}") from None

    def names(self) -> list[str]:
        return list(self.specs)

    def by_table(self, table: str) -> TargetSpec | None:
        return next((s for s in self.specs.values() if s.table.name == table), None)

    def parents_first(self, name: str) -> list[TargetSpec]:
        """``name`` and the targets it depends on through its lookups, parents first."""
        order: dict[str, TargetSpec] = {}

        def visit(spec: TargetSpec, path: tuple[str, ...]) -> None:
            if spec.name in order:
                return
            for lk in spec.lookups:
                parent = self.by_table(lk.parent)
                if parent is not None and parent.name not in path:
                    visit(parent, (*path, parent.name))
            order[spec.name] = spec

        visit(self.get(name), (name,))
        return list(order.values())


# The built-in example's tables: the default table of imports, updates and seeds.
EXAMPLE_TABLE, EXAMPLE_PARENT = "todos", "users"


def builtin_targets() -> list[Target]:
    """The seed's example, declared like any team's targets."""
    from worker.models import TRANSITIONS, Todo, User

    return [
        Target(User, exclude=("created_at",), key_label="a user with this email"),
        Target(
            Todo,
            lookups={"owner_id": Lookup("users", by=("email",), column="owner_email")},
            status=Status("status", TRANSITIONS),
            key_label="a todo with this title for this owner",
        ),
    ]


def load_declared(reference: str) -> Sequence[Target] | Mapping[str, Target]:
    """``module:attribute`` -> the list or dict of targets it names (a callable is called)."""
    module_name, sep, attr = reference.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"BULKOPS_TARGETS must be module:attribute, not {reference!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"BULKOPS_TARGETS: cannot import {module_name!r}: {exc}") from None
    try:
        value = getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"BULKOPS_TARGETS: {module_name} has no attribute {attr!r}") from None
    if callable(value) and not isinstance(value, Target):
        value = value()
    if isinstance(value, Target):
        value = [value]
    if not isinstance(value, Sequence | Mapping):
        raise ConfigError(f"BULKOPS_TARGETS: {reference} is not a list or dict of targets")
    return value


@functools.lru_cache(maxsize=8)
def _registry(reference: str | None) -> Registry:
    return Registry(load_declared(reference) if reference else builtin_targets())


def registry() -> Registry:
    """The targets of this process's settings (``BULKOPS_TARGETS``), derived once per value."""
    from worker.config import targets_reference

    return _registry(targets_reference())


def get(name: str) -> TargetSpec:
    """The target named ``name``; a UsageError lists the known tables."""
    return registry().get(name)


# --- the view (``bulkops targets``) -------------------------------------------------


def describe(spec: TargetSpec) -> dict[str, Any]:
    """One target as JSON: columns (type, limits, required), keys, lookups, status."""
    columns = []
    for c in spec.columns:
        item: dict[str, Any] = {"name": c.name, "type": c.describe(), "required": c.required}
        item.update(
            {
                k: v
                for k, v in (
                    ("max_length", c.max_length),
                    ("precision", c.precision),
                    ("scale", c.scale),
                    ("choices", list(c.choices) or None),
                    (
                        "default",
                        c.server_default or (None if c.default is None else repr(c.default)),
                    ),
                )
                if v is not None
            }
        )
        if c.table_column is None:
            item["lookup"] = next(lk.fk_column for lk in spec.lookups if c.name in lk.file_columns)
        columns.append(item)
    status = None
    if spec.status is not None:
        status = {
            "column": spec.status.column,
            "values": list(spec.status.values),
            "transitions": {k: sorted(v) for k, v in spec.status.transitions.items()},
        }
    return {
        "name": spec.name,
        "table": spec.table.name,
        "columns": columns,
        "natural_key": list(spec.key),
        "natural_key_columns": list(spec.key_file_columns),
        "key_candidates": [list(k) for k in spec.key_candidates],
        "lookups": [
            {
                "column": lk.fk_column,
                "parent": lk.parent,
                "parent_column": lk.parent_pk,
                "by": list(lk.by),
                "file_columns": list(lk.file_columns),
                "required": lk.required,
            }
            for lk in spec.lookups
        ],
        "status": status,
    }


def view() -> list[dict[str, Any]]:
    return [describe(s) for s in registry().specs.values()]


def render(items: Sequence[Mapping[str, Any]]) -> str:
    """The text of ``bulkops targets``."""
    lines: list[str] = []
    for t in items:
        lines.append(f"{t['name']} (table {t['table']})")
        for c in t["columns"]:
            flags = ["required" if c["required"] else "optional"]
            if "default" in c:
                flags.append(f"default {c['default']}")
            if "lookup" in c:
                flags.append(f"-> {c['lookup']}")
            lines.append(f"  {c['name']:<20} {c['type']:<22} {', '.join(flags)}")
        key = ", ".join(t["natural_key_columns"])
        lines.append(f"  natural key: ({key})  [table: {', '.join(t['natural_key'])}]")
        for lk in t["lookups"]:
            lines.append(
                f"  lookup: {lk['column']} = {lk['parent']}.{lk['parent_column']} by "
                f"({', '.join(lk['by'])}) from ({', '.join(lk['file_columns'])})"
            )
        s = t["status"]
        if s is not None:
            moves = "; ".join(f"{k} -> {', '.join(v)}" for k, v in s["transitions"].items())
            lines.append(f"  status: {s['column']} ({', '.join(s['values'])}): {moves}")
        lines.append("")
    return "\n".join(lines).rstrip("\n")
