"""Foreign keys by natural key: the file names a parent by its key, the table gets its id.

One query per chunk and lookup, never one per row: the chunk's distinct keys
travel as arrays (bound parameters) and are joined to the parent table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlmodel import Session

from worker.target_rows import RowError, TypedRow
from worker.targets import LookupSpec, TargetSpec, staging_type

Key = tuple[Any, ...]


def _param(value: Any) -> Any:
    """A key value as psycopg2 binds it in an array (a UUID as its text)."""
    return value if isinstance(value, str | int) else str(value)


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
    unnest = ", ".join(f"CAST(:{n} AS {t}[])" for n, t in zip(names, types, strict=True))
    on = " AND ".join(f"p.{b} = u.{n}" for b, n in zip(lookup.by, names, strict=True))
    cols = ", ".join(f"p.{b}" for b in lookup.by)
    params = {n: [_param(k[i]) for k in wanted] for i, n in enumerate(names)}
    rows = session.execute(
        text(
            f"SELECT {cols}, p.{lookup.parent_pk} FROM {lookup.parent} p "
            f"JOIN unnest({unnest}) AS u({', '.join(names)}) ON {on}"
        ),
        params,
    )
    found: dict[Key, int] = {}
    by_text = {tuple(str(v) for v in k): k for k in wanted}
    for row in rows:
        key = tuple(row[: len(names)])
        original = by_text.get(tuple(str(v) for v in key), key)
        found[original] = int(row[-1])
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
    plans = []
    for lk in spec.lookups:
        positions = [names.index(c) for c in lk.file_columns]
        keys = [tuple(r.values[i] for i in positions) for r in rows]
        complete = [k for k in keys if all(v is not None for v in k)]
        plans.append((lk, positions, keys, parent_ids(session, spec, lk, complete)))
    load_columns = spec.load_columns
    # For each load column: the file position of its value, or the lookup index.
    sources: list[tuple[str, int]] = []
    for col in load_columns:
        lk_index = next((i for i, p in enumerate(plans) if p[0].fk_column == col), None)
        if lk_index is not None:
            sources.append(("lookup", lk_index))
        else:
            own = next(c.name for c in spec.columns if c.table_column == col)
            sources.append(("value", names.index(own)))
    out: list[tuple[int, tuple[Any, ...]]] = []
    errors: list[RowError] = []
    for n, row in enumerate(rows):
        ids: list[int | None] = []
        problem = None
        for lk, _, keys, found in plans:
            key = keys[n]
            if all(v is None for v in key):
                ids.append(None)  # an optional lookup left empty (a required one was refused)
                continue
            if any(v is None for v in key):
                given = ", ".join(lk.file_columns)
                reason = f"give all of {given} or none"
                problem = RowError(row.line, lk.file_columns[0], reason, row.raw)
                break
            parent_id = found.get(key)
            if parent_id is None:
                shown = repr(key[0]) if len(key) == 1 else repr(tuple(str(v) for v in key))
                reason = f"unknown {_label(lk)} {shown}"
                problem = RowError(row.line, lk.file_columns[0], reason, row.raw)
                break
            ids.append(parent_id)
        if problem is not None:
            errors.append(problem)
            continue
        out.append(
            (row.line, tuple(ids[i] if kind == "lookup" else row.values[i] for kind, i in sources))
        )
    return out, errors
