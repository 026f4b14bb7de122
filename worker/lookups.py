"""Foreign keys by natural key: the file names a parent by its key, the table gets its id.

One query per chunk and lookup, never one per row: the chunk's distinct keys
travel as arrays (one bound array literal each) and are joined to the parent table.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import text
from sqlmodel import Session

from worker.db import array_literal, array_param
from worker.target_rows import RowError, TypedRow
from worker.targets import LookupSpec, TargetSpec, staging_type

Key = tuple[Any, ...]


def parent_ids(
    session: Session, spec: TargetSpec, lookup: LookupSpec, keys: Sequence[Key]
) -> dict[Key, int]:
    """Parent id by key for these keys (each a tuple parallel to ``lookup.by``)."""
    wanted = list(dict.fromkeys(keys))
    if not wanted:
        return {}
    parent = spec.table.metadata.tables[lookup.parent]
    types = [staging_type(parent.c[b]) for b in lookup.by]
    names = [f"k{i}" for i in range(len(lookup.by))]
    unnest = ", ".join(array_param(n, t) for n, t in zip(names, types, strict=True))
    on = " AND ".join(f"p.{b} = u.{n}" for b, n in zip(lookup.by, names, strict=True))
    cols = ", ".join(f"p.{b}" for b in lookup.by)
    params = {n: array_literal(k[i] for k in wanted) for i, n in enumerate(names)}
    rows = session.execute(
        text(
            f"SELECT {cols}, p.{lookup.parent_pk} FROM {lookup.parent} p "
            f"JOIN unnest({unnest}) AS u({', '.join(names)}) ON {on}"
        ),
        params,
    )
    width = len(names)
    found: dict[Key, int] = {}
    if all(isinstance(v, str | int) for v in wanted[0]):  # text and integers come back as sent
        for row in rows:
            found[tuple(row[:width])] = int(row[width])
        return found
    by_text = {tuple(str(v) for v in k): k for k in wanted}  # a UUID, a Decimal, a date…
    for row in rows:
        key = tuple(row[:width])
        found[by_text.get(tuple(str(v) for v in key), key)] = int(row[width])
    return found


def _label(lookup: LookupSpec) -> str:
    return lookup.fk_column[:-3] if lookup.fk_column.endswith("_id") else lookup.fk_column


def resolve(
    session: Session, spec: TargetSpec, rows: Sequence[TypedRow]
) -> tuple[list[tuple[int, tuple[Any, ...]]], list[RowError]]:
    """Typed rows (file order) -> loader records (``spec.load_columns`` order) and rejects.

    A row whose parent does not exist is a reject (``unknown owner 'x'``); a
    composite lookup given in part (one of its columns empty) is one too.
    """
    names = spec.file_columns
    ids_by_lookup: list[list[int | None]] = []
    problems: dict[int, RowError] = {}  # row index -> its first problem, lookups in order
    for lk in spec.lookups:
        positions = [names.index(c) for c in lk.file_columns]
        if len(positions) == 1:
            only = positions[0]
            keys: list[Key] = [(r.values[only],) for r in rows]
        else:
            pick = operator.itemgetter(*positions)
            keys = [pick(r.values) for r in rows]
        found = parent_ids(session, spec, lk, [k for k in keys if None not in k])
        ids = [found.get(k) for k in keys]
        for n in [n for n, parent_id in enumerate(ids) if parent_id is None]:
            key = keys[n]
            if n in problems or all(v is None for v in key):
                continue  # an optional lookup left empty (a required one was refused)
            row = rows[n]
            if None in key:
                reason = f"give all of {', '.join(lk.file_columns)} or none"
            else:
                shown = repr(key[0]) if len(key) == 1 else repr(tuple(str(v) for v in key))
                reason = f"unknown {_label(lk)} {shown}"
            problems[n] = RowError(row.line, lk.file_columns[0], reason, row.raw)
        ids_by_lookup.append(ids)
    # Each load column's place in a row's values followed by its looked-up ids.
    width = len(names)
    places = []
    for col in spec.load_columns:
        lk_index = next((i for i, lk in enumerate(spec.lookups) if lk.fk_column == col), None)
        if lk_index is not None:
            places.append(width + lk_index)
        else:
            own = next(c.name for c in spec.columns if c.table_column == col)
            places.append(names.index(own))
    assemble = operator.itemgetter(*places)
    single = len(places) == 1
    extras = list(zip(*ids_by_lookup, strict=True)) if ids_by_lookup else [()] * len(rows)
    pairs: Iterable[tuple[TypedRow, tuple[Any, ...]]] = zip(rows, extras, strict=True)
    if problems:
        pairs = (pair for n, pair in enumerate(pairs) if n not in problems)
    if single:
        out = [(row.line, (assemble(row.values + ids),)) for row, ids in pairs]
    else:  # one comprehension per chunk, not a loop: 20k rows each
        out = [(row.line, assemble(row.values + ids)) for row, ids in pairs]
    return out, [problems[n] for n in sorted(problems)]
