"""Files shaped like real exports, and what one sequential pass over them must give. Todos (issue
9): while a file is written, independent of bulkops, which lines are rejected and why and which
rows end in the table. Products of tests/example_shop (issue 10): every row valid."""

from __future__ import annotations

import bisect
import collections
import csv
import json
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import harness
from harness import tsv_line

USERS = 10_000
STATUSES = ("active", "in_progress", "completed", "archived")
WORDS = ("call bank renew passport email Anna fix the roof buy milk plan trip review budget book "
         "dentist pay rent ship v2").split()
TODO_COLUMNS = ("title", "status", "owner_id", "created_at")  # of the COPY TSVs
TODO_LINES = """SELECT u.email || E'\\t' || t.title || E'\\t' || t.status || E'\\t'
  || to_char(t.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS') AS line
FROM todos t JOIN users u ON u.id = t.owner_id"""
LATER = dict(zip(STATUSES, STATUSES[1:] + STATUSES[:1], strict=True))  # status -> another
email = "user{:05d}@example.com".format  # user n has id n + 1
Good = list[tuple[int, list[str]]]  # (line, fields) of the loaded rows so far


def day(i: int) -> str:
    return f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}"


def template(bench: harness.Bench) -> str:
    """A migrated template with users 1..USERS (owner id n + 1) and the shop's PARENTS: its url."""
    url = bench.template()
    users = (("email", "name"), [(email(n), f"User {n}") for n in range(USERS)])
    for table, (columns, rows) in {"users": users, **PARENTS}.items():
        path = harness.write_tsv(bench.args.work_dir / f"{table}.tsv", rows)
        bench.copy(url, table, columns, path)
    return url


def duplicate(f: list[str], rng: random.Random, line: int, good: Good) -> list[str]:
    """An earlier loaded row up to 100,000 lines back (mostly in another chunk), another status."""
    lo = min(bisect.bisect_left(good, (line - 100_000,)), len(good) - 1)
    _, orig = good[rng.randrange(lo, len(good))]
    return [orig[0], LATER[orig[1]], *orig[2:]]


LONG = 'long, "quoted" ' * 20
BAD_STATUS = ["done", "Doing", "activ", "4"]
BAD_TIME = ["2025-02-30T10:00:00Z", "yesterday", "2025-13-01"]
SPOILS: dict[str, Callable[[list[str], random.Random, int, Good], list[str]]] = {
    # bad kind -> its fields, from the good ones
    "empty_title": lambda f, rng, line, good: [rng.choice(["", "   "]), *f[1:]],
    "long_title": lambda f, rng, line, good: [LONG[: rng.randint(201, 260)], *f[1:]],
    "bad_status": lambda f, rng, line, good: [f[0], rng.choice(BAD_STATUS), *f[2:]],
    "unknown_owner": lambda f, rng, line, good: [*f[:2], f"ghost{line}@example.invalid", *f[3:]],
    "field_count": lambda f, rng, line, good: f[:2] if rng.random() < 0.5 else [*f, "extra"],
    "bad_created_at": lambda f, rng, line, good: [*f[:3], rng.choice(BAD_TIME)],
    "duplicate": duplicate}
KINDS = list(SPOILS)


@dataclass
class Export:
    """A generated file and its sequential expectation."""

    csv: Path
    rows: int
    copy_tsv: Path  # what the pass inserts, in COPY text format, into:
    into: tuple[str, Sequence[str]] = ("todos", TODO_COLUMNS)  # table, columns
    mode: str = "insert"
    target: str = "todos"  # bulkops import --table
    preload_tsv: Path | None = None  # rows already in the table before the import
    copy_rows: int = 0
    rejected: dict[int, str] = field(default_factory=dict)  # line -> kind
    skipped: int = 0
    updated: int = 0
    table: list[str] = field(default_factory=list)  # the expected todos, as TODO_LINES


def generate(folder: Path, name: str, rows: int, bad: float = 0.0, existing: float = 0.0,
             forbidden: float = 0.0, mode: str = "insert") -> Export:
    """Write ``name.csv`` (+ TSVs) and compute the sequential expectation for ``mode``."""
    rng = random.Random(f"9:{name}:{rows}")
    ex = Export(folder / f"{name}.csv", rows, folder / f"{name}.copy.tsv", mode=mode)
    ex.preload_tsv = folder / f"{name}.preload.tsv"
    good: Good = []
    with (ex.csv.open("w", newline="", encoding="utf-8") as f, ex.copy_tsv.open("w") as cp,
          ex.preload_tsv.open("w") as pre):
        out = csv.writer(f, lineterminator="\n")
        out.writerow(["title", "status", "owner_email", "created_at"])
        for i in range(rows):
            line, owner = i + 2, rng.randrange(USERS)
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6)))
            # quoted commas and quotes in every seventh title
            title = f'{words}, then "{rng.choice(WORDS)}", #{i}' if i % 7 == 0 else f"{words} #{i}"
            title = f"forbidden {title}" if rng.random() < forbidden else title
            status = rng.choice(STATUSES)
            created = f"{day(i)}T{i % 24:02d}:{i % 60:02d}:{i % 59:02d}Z"
            fields = [title, status, email(owner), created]
            kind = "db_refused" if "forbidden" in title else None
            if rng.random() < bad:
                kind = rng.choice(KINDS)
                kind = "bad_status" if kind == "duplicate" and not good else kind
                fields = SPOILS[kind](fields, rng, line, good)
            out.writerow(fields)
            if kind:
                ex.rejected[line] = kind
                continue
            good.append((line, fields))
            row = [title, status, owner + 1, created]  # as COPY loads it (TODO_COLUMNS)
            if rng.random() < existing:  # already in the table, with another status and created_at
                old = [title, LATER[status], owner + 1, "2024-01-01T00:00:00Z"]
                pre.write(tsv_line(old))
                row = row if mode == "upsert" else old
                if mode == "insert":
                    ex.rejected[line] = "exists"
                ex.skipped += mode == "skip"
                ex.updated += mode == "upsert"
            else:
                cp.write(tsv_line(row))
                ex.copy_rows += 1
            ex.table.append(f"{email(owner)}\t{title}\t{row[1]}\t{row[3][:-1]}")
    return ex


def check(url: str, job: harness.Job, ex: Export) -> list[str]:
    """The table, the rejected lines and the counters against the sequential expectation."""
    sql = "SELECT line FROM bulkops_ledger.job_rejects WHERE job_id = %s"
    lines = [r[0] for r in harness.query(url, sql, (job["id"],))]
    got, want = set(lines), set(ex.rejected)
    missing = dict(collections.Counter(ex.rejected[n] for n in want - got))
    n, md5 = harness.table_digest(url, TODO_LINES)
    counts = [job["rows_read"], job["rows_updated"], job["rows_skipped"]]
    expected = [ex.rows, ex.updated, ex.skipped]
    return [message for failed, message in [
        (len(lines) != len(got), f"{len(lines) - len(got)} lines rejected more than once"),
        (got != want, f"{len(want - got)} expected rejects missing (by kind {missing}), "
                      f"{len(got - want)} unexpected, e.g. lines {sorted(got - want)[:5]}"),
        ((n, md5) != harness.digest(ex.table),
         f"table differs from the sequential pass ({n:,} rows, want {len(ex.table):,})"),
        (counts != expected, f"read/updated/skipped {counts}, want {expected}")] if failed]


# --- products (tests/example_shop) ------------------------------------------------------

SHOP = {"BULKOPS_TARGETS": "example_shop.bulk:targets", "PYTHONPATH": str(harness.TESTS)}
PARENTS = {  # table -> columns, rows (ids 1.. in this order)
    "shop_categories": (("slug", "name"), [(f"cat-{i:02d}", f"Category {i}") for i in range(20)]),
    "shop_suppliers": (("code", "name"), [(f"S{i:02d}", f"Supplier {i}") for i in range(50)]),
    "shop_warehouses": (("region", "code", "city"),
                        [(r, f"w{i}", "Lyon") for r in "eu us".split() for i in range(5)])}
PRODUCT_FILE = ("sku ref name price status attributes tags released_on in_stock weight_kg stock "
                "category_slug supplier warehouse_region warehouse_code created_at").split()
PRODUCT_COPY = (*PRODUCT_FILE[:11], "category_id", "supplier_id", "warehouse_id", "created_at")
PRODUCT_LINES = f"SELECT ROW({', '.join(PRODUCT_COPY)})::text AS line FROM shop_products"


def products(folder: Path, name: str, rows: int) -> Export:
    """``name.csv`` of products (every tenth with its optional values empty) and ``name.copy.tsv``,
    the same rows with the parents' ids for the file's natural keys."""
    rng = random.Random(1)
    ex = Export(folder / f"{name}.csv", rows, folder / f"{name}.copy.tsv",
                ("shop_products", PRODUCT_COPY), target="products", copy_rows=rows)
    with ex.csv.open("w", newline="") as f, ex.copy_tsv.open("w") as t:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(PRODUCT_FILE)
        for i in range(rows):
            sparse, warehouse = i % 10 == 0, rng.randrange(10)
            values = [  # the first 11 columns, as in the file ("": empty)
                str(uuid.UUID(int=rng.getrandbits(128))), f"R-{i:08d}",
                f'Product {i}, "{rng.choice(WORDS)}"', f"{rng.randrange(100, 100_000) / 100:.2f}",
                rng.choice(("draft", "active", "discontinued")),
                json.dumps({"colour": rng.choice(("red", "blue")), "size": rng.randrange(40)}),
                "" if sparse else json.dumps(rng.sample(WORDS, 2)), "" if sparse else day(i),
                rng.choice(("true", "false")), "" if sparse else f"{rng.random() * 10:.3f}",
                str(rng.randrange(1000))]
            category, supplier = rng.randrange(20), rng.randrange(50)
            place = ["", ""] if sparse else [("eu", "us")[warehouse // 5], f"w{warehouse % 5}"]
            created = f"2025-03-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00Z"
            out.writerow([*values, f"cat-{category:02d}", f"S{supplier:02d}", *place, created])
            ids = [category + 1, supplier + 1, None if sparse else warehouse + 1]
            t.write(tsv_line([*(v or None for v in values), *ids, created]))
    return ex
