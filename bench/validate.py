"""Validation speed (issue 10): the derived validator vs a pydantic TypeAdapter vs bare parsing.

    python bench/validate.py                  # 20,000 rows (one chunk) per file, best of 5
    python bench/validate.py --rows 100000 --runs 3

No services. bench/exports.py's 1%-bad todos file and its products file (tests/example_shop,
16 columns), each read once with ``worker.parsing`` into records; then, interleaved round by
round, fastest run of each: ``RowValidator`` (derived from the SQLModel columns, what imports
run), ``PydanticValidator`` (a ``TypeAdapter(list[TypedDict])`` over the same columns, one call
per chunk), bare conversions (``int``, ``Decimal``, ``uuid.UUID``… without limits or messages:
the floor) and parsing alone. Exit 1 if derived and pydantic accept different lines.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import exports
import harness
from harness import log

BARE: dict[str, Callable[[str], Any]] = {
    "str": str, "int": int, "float": float, "decimal": Decimal, "bool": lambda v: v.lower() in ("true", "t", "1"),
    "date": date.fromisoformat, "datetime": datetime.fromisoformat, "uuid": uuid.UUID, "enum": str,
    "json": json.loads,
}


def bare(spec: Any) -> Callable[[list[Any]], tuple[list[Any], list[Any]]]:
    from worker.target_rows import TypedRow

    columns = [(c.name, BARE[c.kind]) for c in spec.columns]

    def validate(records: list[Any]) -> tuple[list[Any], list[Any]]:
        rows, errors = [], []
        for rec in records:
            try:
                get = rec.values.get
                rows.append(TypedRow(rec.line, tuple([f(v) if (v := get(n)) else None for n, f in columns]), rec.raw))
            except (AttributeError, ValueError, ArithmeticError):  # unreadable record, bad value
                errors.append(rec)
        return rows, errors

    return validate


def parse(path: Path) -> Callable[[], tuple[list[Any], list[Any]]]:
    from worker import parsing

    header, _ = parsing.read_header(path, "csv")
    (span,) = parsing.plan_chunks(path, "csv", 10**9)

    def read() -> tuple[list[Any], list[Any]]:
        records = list(parsing.read_chunk(path, "csv", span, header))
        return [r for r in records if r.values is not None], records

    return read


def compare(name: str, spec: Any, path: Path, runs: int) -> tuple[tuple[list[str], list[list[Any]]], list[str]]:
    """Time each way on ``path``'s records: the report's table, the failed checks."""
    from worker.target_rows import PydanticValidator, RowValidator

    read = parse(path)
    records = read()[1]
    derived, pyd, floor = RowValidator(spec), PydanticValidator(spec), bare(spec)
    ways: dict[str, Callable[[], tuple[list[Any], list[Any]]]] = {
        "derived (RowValidator)": lambda: derived.validate(records, dedupe=False),
        "pydantic TypeAdapter(list[TypedDict])": lambda: pyd.validate(records),
        "bare conversions, no checks": lambda: floor(records),
        "parse only (worker.parsing)": read,
    }
    best: dict[str, float] = {}
    accepted: dict[str, set[int]] = {}
    for _ in range(runs):
        for way, fn in ways.items():
            started = time.perf_counter()
            rows, _errors = fn()
            best[way] = min(best.get(way, float("inf")), time.perf_counter() - started)
            accepted[way] = {r.line for r in rows}
    base = best["derived (RowValidator)"]
    table = ([f"{name}: {len(spec.columns)} columns, {len(records):,} records", "rows/s", "x derived", "accepted"],
             [[way, len(records) / t, base / t, len(accepted[way])] for way, t in best.items()])
    diff = accepted["derived (RowValidator)"] ^ accepted["pydantic TypeAdapter(list[TypedDict])"]
    return table, [f"{name}: derived and pydantic accept different lines, e.g. {sorted(diff)[:5]}"] if diff else []


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=20_000)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    from example_shop.bulk import targets as shop

    from worker.targets import Registry, builtin_targets

    with tempfile.TemporaryDirectory() as tmp:
        todos = exports.generate(Path(tmp), "validate", args.rows, bad=0.01)
        products = exports.products(Path(tmp), "validate-products", args.rows).csv
        log(f"{args.rows:,} rows per file; best of {args.runs} rounds")
        results = [compare("todos (1% bad)", Registry(builtin_targets()).get("todos"), todos.csv, args.runs),
                   compare("products", Registry(shop).get("products"), products, args.runs)]
    return harness.report(f"validation bench: {args.rows:,} rows per file, best of {args.runs} rounds",
                          [table for table, _ in results], failures=[f for _, fails in results for f in fails],
                          notes=["check: derived and pydantic accept the same lines"])


if __name__ == "__main__":
    sys.exit(main())
