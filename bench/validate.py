"""Validation speed (issue 10, no services): on bench/exports.py's 1%-bad todos and products,
best of ``--runs`` rounds: ``RowValidator`` (what imports run), ``PydanticValidator``, bare
conversions (the floor), parsing alone; exit 1 if derived and pydantic accept different lines."""

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
from example_shop.bulk import targets as shop

from worker import parsing
from worker.target_rows import PydanticValidator, RowValidator, TypedRow
from worker.targets import Registry, TargetSpec, builtin_targets

# column kind -> a conversion without limits, defaults or messages
BARE: dict[str, Callable[[str], Any]] = {"str": str, "enum": str, "int": int, "float": float}
BARE |= {"decimal": Decimal, "date": date.fromisoformat, "datetime": datetime.fromisoformat}
BARE |= {"uuid": uuid.UUID, "json": json.loads, "bool": lambda v: v.lower() in ("true", "t", "1")}
DERIVED, PYDANTIC = "derived (RowValidator)", "pydantic TypeAdapter(list[TypedDict])"


def compare(name: str, spec: TargetSpec, path: Path, runs: int) -> tuple[harness.Table, list[str]]:
    """Time each way on ``path``'s records: the report's table, the failed checks."""
    header, _ = parsing.read_header(path, "csv")
    (span,) = parsing.plan_chunks(path, "csv", 10**9)
    records = list(parsing.read_chunk(path, "csv", span, header))
    columns = [(c.name, BARE[c.kind]) for c in spec.columns]
    def bare() -> tuple[list[TypedRow], list[Any]]:
        rows, errors = [], []
        for rec in records:
            try:
                get = rec.values.get
                values = tuple([f(v) if (v := get(n)) else None for n, f in columns])
                rows.append(TypedRow(rec.line, values, rec.raw))
            except (AttributeError, ValueError, ArithmeticError):  # unreadable record, bad value
                errors.append(rec)
        return rows, errors
    def parse() -> tuple[list[Any], None]:
        chunk = parsing.read_chunk(path, "csv", span, header)
        return [r for r in chunk if r.values is not None], None
    derived, pydantic = RowValidator(spec), PydanticValidator(spec)
    ways: dict[str, Callable[[], tuple[list[Any], Any]]] = {  # each way -> (accepted, the rest)
        DERIVED: lambda: derived.validate(records, dedupe=False),
        PYDANTIC: lambda: pydantic.validate(records),
        "bare conversions, no checks": bare, "parse only (worker.parsing)": parse}
    best: dict[str, float] = {}  # way -> its fastest run's seconds
    accepted: dict[str, set[int]] = {}  # way -> the lines it accepted
    for _ in range(runs):
        for way, fn in ways.items():
            started = time.perf_counter()
            rows = fn()[0]
            best[way] = min(best.get(way, float("inf")), time.perf_counter() - started)
            accepted[way] = {r.line for r in rows}
    n, diff = len(records), sorted(accepted[DERIVED] ^ accepted[PYDANTIC])
    title = f"{name}: {len(spec.columns)} columns, {n:,} records"
    table = [[way, n / t, best[DERIVED] / t, len(accepted[way])] for way, t in best.items()]
    message = f"{name}: derived and pydantic accept different lines, e.g. {diff[:5]}"
    return ([title, "rows/s", "x derived", "accepted"], table), [message] if diff else []


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rows", type=int, default=20_000)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        todos = exports.generate(Path(tmp), "validate", args.rows, bad=0.01).csv
        products = exports.products(Path(tmp), "validate-products", args.rows).csv
        harness.log(f"{args.rows:,} rows per file; best of {args.runs} rounds")
        results = [
            compare("todos (1% bad)", Registry(builtin_targets()).get("todos"), todos, args.runs),
            compare("products", Registry(shop).get("products"), products, args.runs)]
    return harness.report(
        f"validation bench: {args.rows:,} rows per file, best of {args.runs} rounds",
        [table for table, _ in results], [f for _, fails in results for f in fails],
        ["check: derived and pydantic accept the same lines"])


if __name__ == "__main__":
    sys.exit(main())
