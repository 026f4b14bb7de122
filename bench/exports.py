"""Files shaped like real todo exports, and what one sequential pass over them must give.

Independent of bulkops: the expectation is computed here while the file is
written (which lines load, which are rejected and of what kind, which rows
end in the table), and every benchmark run is checked against it.
"""

from __future__ import annotations

import bisect
import csv
import random
from dataclasses import dataclass, field
from pathlib import Path

import harness
from harness import tsv

STATUSES = ("active", "in_progress", "completed", "archived")
WORDS = ("call", "bank", "renew", "passport", "email", "Anna", "fix", "the", "roof", "buy", "milk",
         "plan", "trip", "review", "budget", "book", "dentist", "pay", "rent", "ship", "v2")
BAD_KINDS = ("empty_title", "long_title", "bad_status", "unknown_owner", "field_count",
             "bad_created_at", "duplicate")
USERS = 10_000


def email(n: int) -> str:
    return f"user{n:05d}@example.com"


def users_tsv(path: Path, users: int = USERS) -> Path:
    """Users 1..N (owner id = n + 1 once COPYed into an empty table)."""
    path.write_text("".join(f"{email(n)}\tUser {n}\n" for n in range(users)))
    return path


@dataclass
class Export:
    """A generated file and its sequential expectation."""

    csv: Path
    rows: int
    with_created_at: bool
    rejected: dict[int, str] = field(default_factory=dict)  # line -> kind
    skipped: int = 0
    updated: int = 0
    table: list[str] = field(default_factory=list)  # expected todos, as harness.table_digest lines
    copy_tsv: Path | None = None  # the rows the pass inserts: title, status, owner_id, created_at
    preload_tsv: Path | None = None  # rows already in the table before the import
    copy_rows: int = 0


def generate(
    folder: Path, name: str, rows: int, bad: float = 0.0, existing: float = 0.0,
    forbidden: float = 0.0, mode: str = "insert", with_created_at: bool = True, seed: int = 9,
) -> Export:
    """Write ``name.csv`` (+ TSVs) and compute the sequential expectation for ``mode``."""
    rng = random.Random(f"{seed}:{name}:{rows}")
    ex = Export(folder / f"{name}.csv", rows, with_created_at)
    ex.copy_tsv, ex.preload_tsv = folder / f"{name}.copy.tsv", folder / f"{name}.preload.tsv"
    good_lines: list[tuple[int, list[str]]] = []  # (line, fields) of loaded rows, for duplicates
    kinds = [k for k in BAD_KINDS if with_created_at or k != "bad_created_at"]
    table: dict[tuple[str, str], str] = {}
    header = ["title", "status", "owner_email"] + (["created_at"] if with_created_at else [])
    with ex.csv.open("w", newline="", encoding="utf-8") as f, ex.copy_tsv.open("w") as cp, \
            ex.preload_tsv.open("w") as pre:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(header)
        for i in range(rows):
            line = i + 2
            owner = rng.randrange(USERS)
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6)))
            title = f"{words} #{i}"
            if i % 7 == 0:
                title = f'{words}, then "{rng.choice(WORDS)}", #{i}'  # quoted commas and quotes
            if rng.random() < forbidden:
                title = f"forbidden {title}"
            status = rng.choice(STATUSES)
            created = f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:{i % 59:02d}Z"
            fields = [title, status, email(owner)] + ([created] if with_created_at else [])
            kind = None
            if rng.random() < bad:
                kind = kinds[rng.randrange(len(kinds))]
                if kind == "duplicate" and not good_lines:
                    kind = "bad_status"
                fields = _spoil(kind, fields, rng, good_lines, line)
            elif "forbidden" in title:
                kind = "db_refused"
            if kind:
                ex.rejected[line] = kind
                out.writerow(fields)
                continue
            out.writerow(fields)
            good_lines.append((line, fields))
            ts = f"\t{created[:-1]}" if with_created_at else ""
            key = (email(owner), title)
            row = f"{tsv(title)}\t{{}}\t{owner + 1}\t{created}\n"
            if rng.random() < existing:  # already in the table, with other values
                old_status = STATUSES[(STATUSES.index(status) + 1) % 4]
                pre.write(row.format(old_status).replace(created, "2024-01-01T00:00:00Z"))
                old = f"{key[0]}\t{title}\t{old_status}" + ("\t2024-01-01T00:00:00" if with_created_at else "")
                if mode == "insert":
                    ex.rejected[line] = "exists"
                    table[key] = old
                elif mode == "skip":
                    ex.skipped += 1
                    table[key] = old
                else:
                    ex.updated += 1
                    table[key] = f"{key[0]}\t{title}\t{status}{ts}"
                continue
            table[key] = f"{key[0]}\t{title}\t{status}{ts}"
            cp.write(row.format(status))
            ex.copy_rows += 1
    ex.table = list(table.values())
    return ex


def _spoil(kind: str, fields: list[str], rng: random.Random, good: list[tuple[int, list[str]]],
           line: int) -> list[str]:
    f = list(fields)
    if kind == "empty_title":
        f[0] = rng.choice(["", "   "])
    elif kind == "long_title":
        f[0] = ("long, \"quoted\" " * 20)[: rng.randint(201, 260)]
    elif kind == "bad_status":
        f[1] = rng.choice(["done", "Doing", "activ", "4"])
    elif kind == "unknown_owner":
        f[2] = f"ghost{line}@example.invalid"
    elif kind == "field_count":
        f = f[:2] if rng.random() < 0.5 else f + ["extra"]
    elif kind == "bad_created_at":
        f[3] = rng.choice(["2025-02-30T10:00:00Z", "yesterday", "2025-13-01"])
    elif kind == "duplicate":  # an earlier loaded row up to 100,000 lines back: mostly another chunk
        lo = min(bisect.bisect_left(good, (line - 100_000,)), len(good) - 1)
        _, orig = good[rng.randrange(lo, len(good))]
        f = [orig[0], STATUSES[(STATUSES.index(orig[1]) + 1) % 4], orig[2], *orig[3:]]
    return f


def check(url: str, job: dict, ex: Export, label: str) -> list[str]:
    """The table and the rejected lines against the sequential expectation."""
    fails = []
    lines = [r[0] for r in harness.query(url, "SELECT line FROM job_rejects WHERE job_id = %s", (job["id"],))]
    got, want = set(lines), set(ex.rejected)
    if len(lines) != len(got):
        fails.append(f"{label}: {len(lines) - len(got)} lines rejected more than once")
    if got != want:
        kinds: dict[str, int] = {}
        for ln in want - got:
            kinds[ex.rejected[ln]] = kinds.get(ex.rejected[ln], 0) + 1
        fails.append(f"{label}: {len(want - got)} expected rejects missing (by kind {kinds}), "
                     f"{len(got - want)} unexpected, e.g. lines {sorted(got - want)[:5]}")
    if harness.table_digest(url, ex.with_created_at) != harness.digest(ex.table):
        n = harness.table_digest(url, ex.with_created_at)[0]
        fails.append(f"{label}: table differs from the sequential pass ({n:,} rows, want {len(ex.table):,})")
    if job["rows_read"] != ex.rows or job["rows_skipped"] != ex.skipped or job["rows_updated"] != ex.updated:
        fails.append(f"{label}: read/updated/skipped {job['rows_read']}/{job['rows_updated']}/"
                     f"{job['rows_skipped']}, want {ex.rows}/{ex.updated}/{ex.skipped}")
    return fails
