"""Files shaped like real exports, and what one sequential pass over them must give.

Todos (issue 9): while a file is written, independent of bulkops, which lines are rejected and why and
which rows end in the table. Products of tests/example_shop (issue 10): a wide target, every row valid.
"""

from __future__ import annotations

import bisect
import collections
import csv
import json
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import harness
from harness import tsv

STATUSES = ("active", "in_progress", "completed", "archived")
WORDS = ("call", "bank", "renew", "passport", "email", "Anna", "fix", "the", "roof", "buy", "milk",
         "plan", "trip", "review", "budget", "book", "dentist", "pay", "rent", "ship", "v2")
USERS = 10_000
TODO_COLUMNS = ("title", "status", "owner_id", "created_at")  # of the COPY TSVs
TODO_LINES = """SELECT u.email || E'\\t' || t.title || E'\\t' || t.status{ts} AS line
FROM todos t JOIN users u ON u.id = t.owner_id"""
CREATED = " || E'\\t' || to_char(t.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS')"
email = "user{:05d}@example.com".format  # user n has id n + 1


def todos_digest(url: str, with_created_at: bool = True) -> tuple[int, str]:
    """(count, md5) of every todo as ``email\\ttitle\\tstatus[\\tcreated_at]`` (Export.table's)."""
    return harness.table_digest(url, TODO_LINES.format(ts=CREATED if with_created_at else ""))


def template(bench: harness.Bench) -> str:
    """A migrated template with users 1..USERS (owner id = n + 1) and the shop's PARENTS: its url."""
    url = bench.template()
    users = (("email", "name"), [(email(n), f"User {n}") for n in range(USERS)])
    for table, (columns, rows) in {"users": users, **PARENTS}.items():
        bench.copy(url, table, columns, harness.write_tsv(bench.args.work_dir / f"{table}.tsv", rows))
    return url


def duplicate(f: list[str], rng: random.Random, line: int, good: list[tuple[int, list[str]]]) -> list[str]:
    """An earlier loaded row up to 100,000 lines back (mostly in another chunk), with another status."""
    lo = min(bisect.bisect_left(good, (line - 100_000,)), len(good) - 1)
    _, orig = good[rng.randrange(lo, len(good))]
    return [orig[0], STATUSES[(STATUSES.index(orig[1]) + 1) % 4], orig[2], *orig[3:]]


SPOILS: dict[str, Callable[..., list[str]]] = {  # bad kind -> (fields, rng, line, good rows) -> its fields
    "empty_title": lambda f, rng, line, good: [rng.choice(["", "   "]), *f[1:]],
    "long_title": lambda f, rng, line, good: [("long, \"quoted\" " * 20)[: rng.randint(201, 260)], *f[1:]],
    "bad_status": lambda f, rng, line, good: [f[0], rng.choice(["done", "Doing", "activ", "4"]), *f[2:]],
    "unknown_owner": lambda f, rng, line, good: [*f[:2], f"ghost{line}@example.invalid", *f[3:]],
    "field_count": lambda f, rng, line, good: f[:2] if rng.random() < 0.5 else [*f, "extra"],
    "bad_created_at": lambda f, rng, line, good: [*f[:3], rng.choice(["2025-02-30T10:00:00Z", "yesterday",
                                                                      "2025-13-01"])],
    "duplicate": duplicate,
}


@dataclass
class Export:
    """A generated file and its sequential expectation."""

    csv: Path
    rows: int
    with_created_at: bool = True
    mode: str = "insert"
    target: str = "todos"  # bulkops import --table
    rejected: dict[int, str] = field(default_factory=dict)  # line -> kind
    skipped: int = 0
    updated: int = 0
    table: list[str] = field(default_factory=list)  # expected todos, as todos_digest's lines
    copy_tsv: Path | None = None  # what the pass inserts (todos: TODO_COLUMNS, products: PRODUCT_COPY)
    preload_tsv: Path | None = None  # rows already in the table before the import
    copy_rows: int = 0


def generate(folder: Path, name: str, rows: int, bad: float = 0.0, existing: float = 0.0,
             forbidden: float = 0.0, mode: str = "insert", with_created_at: bool = True,
             seed: int = 9) -> Export:
    """Write ``name.csv`` (+ TSVs) and compute the sequential expectation for ``mode``."""
    rng = random.Random(f"{seed}:{name}:{rows}")
    ex = Export(folder / f"{name}.csv", rows, with_created_at, mode,
                copy_tsv=folder / f"{name}.copy.tsv", preload_tsv=folder / f"{name}.preload.tsv")
    good: list[tuple[int, list[str]]] = []  # (line, fields) of loaded rows, for duplicates
    kinds = [k for k in SPOILS if with_created_at or k != "bad_created_at"]
    table: dict[tuple[str, str], str] = {}  # (email, title) -> todos_digest's line
    with ex.csv.open("w", newline="", encoding="utf-8") as f, ex.copy_tsv.open("w") as cp, \
            ex.preload_tsv.open("w") as pre:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(["title", "status", "owner_email", "created_at"][:3 + with_created_at])
        for i in range(rows):
            line, owner = i + 2, rng.randrange(USERS)
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6)))
            title = f"{words} #{i}"
            if i % 7 == 0:
                title = f'{words}, then "{rng.choice(WORDS)}", #{i}'  # quoted commas and quotes
            if rng.random() < forbidden:
                title = f"forbidden {title}"
            status = rng.choice(STATUSES)
            created = f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:{i % 59:02d}Z"
            fields = [title, status, email(owner), created][:3 + with_created_at]
            kind = "db_refused" if "forbidden" in title else None
            if rng.random() < bad:
                kind = kinds[rng.randrange(len(kinds))]
                kind = "bad_status" if kind == "duplicate" and not good else kind
                fields = SPOILS[kind](fields, rng, line, good)
            out.writerow(fields)
            if kind:
                ex.rejected[line] = kind
                continue
            good.append((line, fields))
            row = f"{tsv(title)}\t{{}}\t{owner + 1}\t{{}}\n"  # a COPY line: status, created_at
            key, ends = (email(owner), title), (status, created)
            if rng.random() < existing:  # already in the table, with another status and created_at
                old = (STATUSES[(STATUSES.index(status) + 1) % 4], "2024-01-01T00:00:00Z")
                pre.write(row.format(*old))
                ends = ends if mode == "upsert" else old
                ex.rejected.update({line: "exists"} if mode == "insert" else {})
                ex.skipped += mode == "skip"
                ex.updated += mode == "upsert"
            else:
                cp.write(row.format(*ends))
                ex.copy_rows += 1
            table[key] = "\t".join([*key, ends[0], ends[1][:-1]][:3 + with_created_at])
    ex.table = list(table.values())
    return ex


def check(url: str, job: harness.Job, ex: Export) -> list[str]:
    """The table, the rejected lines and the counters against the sequential expectation."""
    lines = [r[0] for r in harness.query(url, "SELECT line FROM bulkops_ledger.job_rejects WHERE job_id = %s",
                                         (job["id"],))]
    got, want = set(lines), set(ex.rejected)
    missing = collections.Counter(ex.rejected[ln] for ln in want - got)
    n, md5 = todos_digest(url, ex.with_created_at)
    counts = [job[f"rows_{c}"] for c in ("read", "updated", "skipped")]
    expected = [ex.rows, ex.updated, ex.skipped]
    return [message for failed, message in [
        (len(lines) != len(got), f"{len(lines) - len(got)} lines rejected more than once"),
        (got != want, f"{len(want - got)} expected rejects missing (by kind {dict(missing)}), "
                      f"{len(got - want)} unexpected, e.g. lines {sorted(got - want)[:5]}"),
        ((n, md5) != harness.digest(ex.table),
         f"table differs from the sequential pass ({n:,} rows, want {len(ex.table):,})"),
        (counts != expected, f"read/updated/skipped {counts}, want {expected}"),
    ] if failed]


# --- products (tests/example_shop) ------------------------------------------------------

SHOP = {"BULKOPS_TARGETS": "example_shop.bulk:targets", "PYTHONPATH": str(harness.TESTS)}
PARENTS = {  # table -> columns, rows (ids 1.. in this order)
    "shop_categories": (("slug", "name"), [(f"cat-{i:02d}", f"Category {i}") for i in range(20)]),
    "shop_suppliers": (("code", "name"), [(f"S{i:02d}", f"Supplier {i}") for i in range(50)]),
    "shop_warehouses": (("region", "code", "city"), [(r, f"w{i}", "Lyon") for r in ("eu", "us") for i in range(5)]),
}
PRODUCT_FILE = ("sku", "ref", "name", "price", "status", "attributes", "tags", "released_on", "in_stock", "weight_kg",
                "stock", "category_slug", "supplier", "warehouse_region", "warehouse_code", "created_at")
PRODUCT_COPY = (*PRODUCT_FILE[:11], "category_id", "supplier_id", "warehouse_id", "created_at")
PRODUCT_LINES = f"SELECT ROW({', '.join(PRODUCT_COPY)})::text AS line FROM shop_products"


def products(folder: Path, name: str, rows: int, seed: int = 1) -> Export:
    """Write ``name.csv`` of products (every tenth with its optional values empty) and ``name.copy.tsv``,
    the same rows with the parents' ids (category, supplier, warehouse) for the file's natural keys."""
    rng = random.Random(seed)
    ex = Export(folder / f"{name}.csv", rows, target="products", copy_tsv=folder / f"{name}.copy.tsv", copy_rows=rows)
    with ex.csv.open("w", newline="") as f, ex.copy_tsv.open("w") as t:  # type: ignore[union-attr]
        out = csv.DictWriter(f, PRODUCT_FILE, lineterminator="\n")
        out.writeheader()
        for i in range(rows):
            sparse, warehouse = i % 10 == 0, rng.randrange(10)
            row = {
                "sku": str(uuid.UUID(int=rng.getrandbits(128))), "ref": f"R-{i:08d}",
                "name": f"Product {i}, \"{rng.choice(WORDS)}\"", "price": f"{rng.randrange(100, 100_000) / 100:.2f}",
                "status": rng.choice(("draft", "active", "discontinued")),
                "attributes": json.dumps({"colour": rng.choice(("red", "blue")), "size": rng.randrange(40)}),
                "tags": "" if sparse else json.dumps(rng.sample(WORDS, 2)),
                "released_on": "" if sparse else f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}",
                "in_stock": rng.choice(("true", "false")), "weight_kg": "" if sparse else f"{rng.random() * 10:.3f}",
                "stock": str(rng.randrange(1000)), "category_slug": f"cat-{rng.randrange(20):02d}",
                "supplier": f"S{rng.randrange(50):02d}",
                "warehouse_region": "" if sparse else ("eu", "us")[warehouse // 5],
                "warehouse_code": "" if sparse else f"w{warehouse % 5}",
                "created_at": f"2025-03-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00Z",
            }
            out.writerow(row)
            ids = [int(row["category_slug"][4:]) + 1, int(row["supplier"][1:]) + 1, None if sparse else warehouse + 1]
            t.write("\t".join(map(tsv, [v or None for v in list(row.values())[:11]] + ids + [row["created_at"]])))
            t.write("\n")
    return ex
