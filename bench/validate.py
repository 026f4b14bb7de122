"""Validation speed: the derived validators vs the hand-written ``validation.validate_todos``.

    python bench/validate.py                 # 20,000 todos rows, 5 runs, best of each
    python bench/validate.py --rows 100000 --bad 0.05

No services needed: records are built as ``worker.parsing`` gives them (raw
strings), from the seed's own rows (``worker.seeding``), with ``--bad`` of them
made invalid (a title too long, an unknown status, a malformed email, a bad
timestamp, in turn). Each validator runs on the same records, interleaved
round by round; rows/s is of each one's fastest run. Checks: every validator accepts and rejects the same lines.
Also times the 16 file columns of ``tests/example_shop`` products (Decimal,
UUID, Enum, JSON, date, composite key, two lookups).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import log, print_table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def todo_records(n: int, bad: float, seed: int = 1) -> list[Any]:
    from worker.parsing import Record
    from worker.seeding import SeedParams, rows
    from worker.targets import Registry, builtin_targets

    rng = random.Random(seed)
    counts = SeedParams.example(n // 50 + 1, 50, seed).counts(Registry(builtin_targets()))
    out: list[Any] = []
    for title, status, email, created in rows("todos", seed, counts, 0, n):
        values = {"title": title, "status": status, "owner_email": email, "created_at": created.isoformat()}
        if rng.random() < bad:
            which = len(out) % 4
            if which == 0:
                values["title"] = "x" * 300
            elif which == 1:
                values["status"] = "sleeping"
            elif which == 2:
                values["owner_email"] = "not-an-email"
            else:
                values["created_at"] = "yesterday"
        out.append(Record(len(out) + 2, values, ",".join(values.values())))
    return out


def product_records(n: int, seed: int = 1) -> list[Any]:
    from worker.parsing import Record

    rng = random.Random(seed)
    out = []
    for i in range(n):
        values = {
            "sku": str(uuid.UUID(int=rng.getrandbits(128))),
            "ref": f"R-{i}",
            "name": f"Product {i}",
            "price": f"{rng.randrange(100, 100000) / 100:.2f}",
            "status": rng.choice(("draft", "active", "discontinued")),
            "attributes": f'{{"color": "red", "size": {rng.randrange(40)}}}',
            "tags": '["a", "b"]',
            "released_on": f"2025-03-{rng.randrange(1, 29):02d}",
            "in_stock": rng.choice(("true", "false")),
            "weight_kg": f"{rng.random() * 10:.3f}",
            "stock": str(rng.randrange(1000)),
            "category_slug": f"cat-{rng.randrange(20)}",
            "supplier": f"S{rng.randrange(50)}",
            "warehouse_region": "eu",
            "warehouse_code": f"w{rng.randrange(5)}",
            "created_at": "2025-01-01T10:00:00Z",
        }
        out.append(Record(i + 2, values, ""))
    return out


def interleaved(fns: dict[str, Callable[[], tuple[list[Any], list[Any]]]], runs: int
                ) -> dict[str, tuple[float, set[int]]]:
    """Each validator once per round, ``runs`` rounds (a shared machine's load hits all alike);
    the fastest time of each and the lines it accepted."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    lines: dict[str, set[int]] = {}
    for _ in range(runs):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            rows, _errors = fn()
            times[name].append(time.perf_counter() - t0)
            lines[name] = {r.line for r in rows}
    return {name: (min(times[name]), lines[name]) for name in fns}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=20_000)
    p.add_argument("--bad", type=float, default=0.0, help="share of invalid rows")
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()

    from worker import targets, validation
    from worker.target_rows import PydanticValidator, RowValidator

    records = todo_records(args.rows, args.bad)
    todos = targets.Registry(targets.builtin_targets()).get("todos")
    derived, pyd = RowValidator(todos), PydanticValidator(todos)
    log(f"{len(records):,} todos records, {args.bad:.0%} invalid; best of {args.runs} runs")
    results = interleaved({
        "hand-written validate_todos": lambda: validation.validate_todos(records, dedupe=False),
        "derived converters (RowValidator)": lambda: derived.validate(records, dedupe=False),
        "pydantic TypeAdapter(list[TypedDict])": lambda: pyd.validate(records),
    }, args.runs)
    base = results["hand-written validate_todos"][0]
    rows = [[name, len(records) / t, base / t] for name, (t, _) in results.items()]
    print_table(["todos validator", "rows/s", "speed vs hand-written"], rows)
    accepted = {name: lines for name, (_, lines) in results.items()}
    failures = [n for n, lines in accepted.items() if lines != accepted["hand-written validate_todos"]]

    import example_shop.bulk as shop

    products = targets.Registry(shop.targets).get("products")
    wide = product_records(args.rows)
    print()
    rv, pv = RowValidator(products), PydanticValidator(products)
    wide_results = interleaved({"derived converters": lambda: rv.validate(wide),
                                "pydantic": lambda: pv.validate(wide)}, args.runs)
    wide_rows = [[name, len(wide) / t, len(lines)] for name, (t, lines) in wide_results.items()]
    print_table([f"products ({len(products.columns)} columns) validator", "rows/s", "accepted"], wide_rows)
    if failures:
        print("\nDIFFERENT ACCEPTED LINES:", *failures, sep="\n  ")
        return 1
    print("\ncorrectness: every todos validator accepts the same lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
