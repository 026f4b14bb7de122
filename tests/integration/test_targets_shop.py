"""A second application (tests/example_shop) through bulkops: its migrations, seeding, updates.

The shop has its own SQLModel metadata and Alembic migrations (in Alembic's
default ``alembic_version``; bulkops keeps its ledger and its own revision in
its schema, ``bulkops_ledger``), applied to a bulkops-migrated database; bulkops
is pointed at it with ``BULKOPS_TARGETS=example_shop.bulk:targets``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from example_shop import migrate as shop_migrate
from example_shop.models import metadata as shop_metadata
from sqlalchemy import create_engine, inspect, text

from worker import client, db, ledger, migrate, seeding, targets
from worker.config import sqlalchemy_url
from worker.errors import UsageError
from worker.migrate import EXAMPLE_TABLES, QUALIFIED_VERSION_TABLE
from worker.models import LEDGER_SCHEMA, JobKind

SHOP = "example_shop.bulk:targets"
BULKOPS_HEAD = ScriptDirectory.from_config(migrate.alembic_config()).get_current_head()
TESTS = Path(__file__).resolve().parent.parent


@pytest.fixture
def shop(
    bulkops_env: dict[str, str], configure: Callable[..., None]
) -> Iterator[dict[str, str]]:
    """bulkops's fresh database with the shop's own migrations applied, and BULKOPS_TARGETS."""
    shop_migrate.upgrade(bulkops_env["DATABASE_URL"])
    configure(BULKOPS_TARGETS=SHOP)
    yield {**bulkops_env, "BULKOPS_TARGETS": SHOP}


@pytest.fixture
def shop_worker(shop: dict[str, str], worker: Any) -> Any:
    return worker


def _count(table: str) -> int:
    with db.session_scope() as s:
        return int(s.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def test_shop_migrations_have_their_own_version_table_and_no_drift(shop: dict[str, str]) -> None:
    engine = create_engine(sqlalchemy_url(shop["DATABASE_URL"]))
    try:
        names = set(inspect(engine).get_table_names())
        assert {"shop_products", "alembic_version"} <= names
        assert "jobs" in inspect(engine).get_table_names(schema=LEDGER_SCHEMA)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == (
                "shop_0001"
            )
            # bulkops's own version table is untouched by the shop's migrations
            bulkops_rev = conn.execute(text(f"SELECT version_num FROM {QUALIFIED_VERSION_TABLE}"))
            assert bulkops_rev.scalar() == BULKOPS_HEAD

            # This database was migrated for the built-in example (no BULKOPS_TARGETS),
            # so the example's users and todos are in public too: they are left out.
            # bulkops's own tables need no filter (see the next test).
            def not_the_example(name: str | None, type_: str, parent: Any) -> bool:
                return type_ != "table" or name not in EXAMPLE_TABLES

            ctx = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    "include_name": not_the_example,
                    "version_table": shop_migrate.VERSION_TABLE,
                },
            )
            diffs = compare_metadata(ctx, shop_metadata)
        assert diffs == []
    finally:
        engine.dispose()
    shop_migrate.downgrade(shop["DATABASE_URL"])
    engine = create_engine(sqlalchemy_url(shop["DATABASE_URL"]))
    try:
        left = set(inspect(engine).get_table_names())
        assert not {t for t in left if t.startswith("shop_")}
        assert "todos" in left
        assert "jobs" in inspect(engine).get_table_names(schema=LEDGER_SCHEMA)
    finally:
        engine.dispose()
    shop_migrate.upgrade(shop["DATABASE_URL"])


def test_the_applications_own_alembic_check_is_clean_next_to_bulkops(
    empty_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an application's database: bulkops migrated to head for the application's
    # targets, then the application's own migrations
    monkeypatch.setenv("BULKOPS_TARGETS", SHOP)
    migrate.upgrade(empty_database_url)
    shop_migrate.upgrade(empty_database_url)
    # When the application runs its own `alembic check` (its env.py: its own metadata,
    # no filter), then it finds nothing to do
    command.check(shop_migrate.config(empty_database_url))
    engine = create_engine(sqlalchemy_url(empty_database_url))
    try:
        with engine.connect() as conn:
            # nor does compare_metadata with Alembic's defaults
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(ctx, shop_metadata) == []
        # and its schema holds only its own tables
        assert set(inspect(engine).get_table_names()) == set(shop_metadata.tables) | {
            shop_migrate.VERSION_TABLE
        }
    finally:
        engine.dispose()
    # and bulkops's own check is clean too, the shop's tables none of its business
    migrate.check(empty_database_url)


def test_an_applications_own_jobs_table_is_not_the_ledger(
    shop: dict[str, str], configure: Callable[..., None]
) -> None:
    # Given an application's own jobs table in public, next to bulkops's ledger
    with db.session_scope() as s:
        s.execute(text("CREATE TABLE public.jobs (id int PRIMARY KEY, title text NOT NULL)"))
        s.execute(text("INSERT INTO public.jobs VALUES (1, 'the application''s')"))
    # When bulkops records a job and reads the ledger
    job_id = ledger.submit(JobKind.SEED, {"table": "products"}, lambda _job, _task: None)
    listed = client.jobs()
    # Then the job is in the ledger, and the application's table is as it was
    assert [j.id for j in listed] == [job_id]
    assert client.summary(job_id).state == "queued"
    with db.session_scope() as s:
        assert s.execute(text("SELECT id, title FROM public.jobs")).all() == [
            (1, "the application's")
        ]


def test_seed_products_seeds_parents_first_and_is_idempotent(shop_worker: Any) -> None:
    # Given the shop's tables, empty, and a worker that knows the shop's targets
    # When 2,500 products are seeded (chunk size 1000: several chunks per table)
    first = client.wait(client.submit_seed(table="products", rows=2500, random_seed=3), timeout=180)
    # Then the parents (a tenth each) and the products are there, every row counted once
    assert first.state == "succeeded", first.error
    counts = {t: _count(f"shop_{t}") for t in ("categories", "suppliers", "warehouses", "products")}
    assert counts == {"categories": 250, "suppliers": 250, "warehouses": 250, "products": 2500}
    assert (first.rows_read, first.rows_inserted, first.rows_skipped) == (3250, 3250, 0)
    assert first.chunks_total is not None and first.chunks_total >= 6
    with db.session_scope() as s:
        row = s.execute(
            text(
                "SELECT p.price, p.status::text, jsonb_typeof(p.attributes), jsonb_typeof(p.tags), "
                "p.sku, c.slug, sup.code, w.region, w.code FROM shop_products p "
                "JOIN shop_categories c ON c.id = p.category_id "
                "JOIN shop_suppliers sup ON sup.id = p.supplier_id "
                "JOIN shop_warehouses w ON w.id = p.warehouse_id ORDER BY p.ref LIMIT 1"
            )
        ).one()
        statuses = {
            r[0] for r in s.execute(text("SELECT DISTINCT status::text FROM shop_products"))
        }
    assert isinstance(row[0], Decimal) and row[0] >= 0
    assert row[2] == "object" and row[3] == "array"
    assert statuses == {"draft", "active", "discontinued"}
    # And the rows are the generator's, lookups resolved by the parents' natural keys
    spec = targets.get("products")
    want = seeding.rows(
        "products",
        3,
        seeding.SeedParams("products", 2500, {}, 3).counts(targets.registry()),
        0,
        2500,
    )
    names = spec.file_columns
    first_ref = min(want, key=lambda r: r[names.index("ref")])
    assert str(first_ref[names.index("sku")]) == str(row[4])
    assert first_ref[names.index("category_slug")] == row[5]
    assert first_ref[names.index("supplier")] == row[6]
    assert (
        first_ref[names.index("warehouse_region")],
        first_ref[names.index("warehouse_code")],
    ) == (
        row[7],
        row[8],
    )
    # When the same seed runs again, nothing is added
    again = client.wait(client.submit_seed(table="products", rows=2500, random_seed=3), timeout=180)
    assert again.state == "succeeded", again.error
    assert (again.rows_inserted, again.rows_skipped) == (0, 3250)
    assert _count("shop_products") == 2500


def test_seed_a_parent_alone_and_refuse_unknown_tables(shop_worker: Any) -> None:
    done = client.wait(client.submit_seed(table="suppliers", rows=40, random_seed=1), timeout=60)
    assert done.state == "succeeded", done.error
    assert _count("shop_suppliers") == 40 and _count("shop_products") == 0
    with pytest.raises(
        UsageError, match="known tables: categories, suppliers, warehouses, products"
    ):
        client.submit_seed(table="todos", rows=5)
    with pytest.raises(UsageError, match="--users"):
        client.submit_seed(users=3, table="products", rows=5)


def _seed_products(n: int = 300) -> None:
    s = client.wait(client.submit_seed(table="products", rows=n, random_seed=5), timeout=120)
    assert s.state == "succeeded", s.error


def _status_counts(where: str = "true", params: dict[str, Any] | None = None) -> dict[str, int]:
    with db.session_scope() as s:
        rows = s.execute(
            text(
                "SELECT p.status::text, count(*) FROM shop_products p "
                f"JOIN shop_categories c ON c.id = p.category_id WHERE {where} GROUP BY 1"
            ),
            params or {},
        )
        return {str(k): int(v) for k, v in rows}


def test_update_status_of_products_by_category_slug_with_the_enum_rules(shop_worker: Any) -> None:
    _seed_products()
    with db.session_scope() as s:
        slug = s.execute(
            text(
                "SELECT c.slug FROM shop_categories c JOIN shop_products p ON p.category_id = c.id "
                "GROUP BY c.slug ORDER BY count(*) DESC, c.slug LIMIT 1"
            )
        ).scalar_one()
    before = _status_counts("c.slug = :slug", {"slug": slug})
    others = _status_counts("c.slug <> :slug", {"slug": slug})
    # When every product of one category moves to "active" (draft -> active is allowed,
    # discontinued -> active is not)
    job = client.submit_update_status("active", table="products", where={"category_slug": slug})
    s = client.wait(job, timeout=120)
    assert s.state in ("succeeded", "partially_succeeded"), s.error
    total = sum(before.values())
    assert s.rows_read == total
    assert s.rows_updated == before.get("draft", 0)
    assert s.rows_skipped == before.get("active", 0)
    assert s.rows_rejected == before.get("discontinued", 0)
    after = _status_counts("c.slug = :slug", {"slug": slug})
    assert after == {
        k: v
        for k, v in {
            "active": before.get("draft", 0) + before.get("active", 0),
            "discontinued": before.get("discontinued", 0),
        }.items()
        if v
    }
    assert _status_counts("c.slug <> :slug", {"slug": slug}) == others  # nothing else moved
    reasons = {r.reason.split(": ", 1)[1] for r in client.rejects(job)}
    assert reasons <= {"discontinued -> active is not an allowed transition"}
    assert all(r.reason.startswith("shop_product ") for r in client.rejects(job))


def test_update_status_of_products_from_a_status_and_refusals(shop_worker: Any) -> None:
    _seed_products(200)
    before = _status_counts()
    s = client.wait(
        client.submit_update_status("draft", ["discontinued"], table="products"), timeout=120
    )
    assert s.state == "succeeded", s.error
    assert s.rows_updated == before.get("discontinued", 0)
    after = _status_counts()
    assert after.get("discontinued", 0) == 0
    assert after["draft"] == before.get("draft", 0) + before.get("discontinued", 0)
    with pytest.raises(UsageError, match="unknown status 'sold'"):
        client.submit_update_status("sold", table="products")
    with pytest.raises(UsageError, match="no shop_categories row with that slug"):
        client.submit_update_status("active", table="products", where={"category_slug": "nope"})
    with pytest.raises(UsageError, match="has no such column"):
        client.submit_update_status("active", table="products", where={"colour": "red"})
    with pytest.raises(UsageError, match="declares no status"):
        client.submit_update_status("active", table="suppliers")


def test_cli_targets_lists_the_shop(shop: dict[str, str]) -> None:
    env = {**shop, "PYTHONPATH": str(TESTS)}
    out = subprocess.run(
        [sys.executable, "-m", "worker.cli", "targets", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    items = {t["name"]: t for t in json.loads(out.stdout)}
    assert list(items) == ["categories", "suppliers", "warehouses", "products"]
    products = items["products"]
    assert products["natural_key_columns"] == ["supplier", "ref"]
    assert {c["name"]: c["type"] for c in products["columns"]}["price"] == "decimal(10,2)"
    assert products["status"]["transitions"]["active"] == ["discontinued"]


def test_cli_seed_and_update_status_take_the_table(shop_worker: Any, shop: dict[str, str]) -> None:
    env = {**shop, "PYTHONPATH": str(TESTS)}

    def cli(*argv: str) -> dict[str, Any]:
        out = subprocess.run(
            [sys.executable, "-m", "worker.cli", *argv, "--wait", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr
        result: dict[str, Any] = json.loads(out.stdout)
        return result

    seeded = cli("seed", "--table", "products", "--rows", "50", "--random-seed", "9")
    assert (seeded["state"], seeded["rows_inserted"]) == ("succeeded", 50 + 3 * 5)
    drafts = _status_counts().get("draft", 0)
    updated = cli("update-status", "--table", "products", "--to", "active", "--from", "draft")
    assert (updated["rows_read"], updated["rows_updated"]) == (drafts, drafts)
    assert _status_counts().get("draft", 0) == 0
    bad = subprocess.run(
        [sys.executable, "-m", "worker.cli", "update-status", "--table", "products", "--to", "x"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "unknown status 'x'" in bad.stderr


def _shop_parents() -> None:
    with db.session_scope() as s:
        s.execute(
            text(
                "INSERT INTO shop_categories (slug, name) VALUES ('home', 'Home'), "
                "('garden', 'Garden')"
            )
        )
        s.execute(
            text(
                "INSERT INTO shop_suppliers (code, name) VALUES ('ACME', 'Acme'), "
                "('GLOBEX', 'Globex')"
            )
        )
        s.execute(
            text(
                "INSERT INTO shop_warehouses (region, code, city) VALUES "
                "('eu', 'W1', 'Lyon'), ('us', 'W1', 'Austin')"
            )
        )


PRODUCT_HEADER = (
    "sku,ref,name,price,status,attributes,tags,released_on,in_stock,weight_kg,stock,"
    "category_slug,supplier,warehouse_region,warehouse_code\n"
)


def _product(i: int, **changes: str) -> dict[str, str]:
    row = {
        "sku": str(uuid_for(i)),
        "ref": f"R{i:05d}",
        "name": f"Product, no. {i}",
        "price": f"{i % 90 + 0.5:.2f}",
        "status": ("draft", "active")[i % 2],
        "attributes": json.dumps({"colour": "red", "n": i}),
        "tags": json.dumps(["a", "b"]),
        "released_on": "2026-03-01",
        "in_stock": ("true", "no")[i % 2],
        "weight_kg": "1.25",
        "stock": str(i % 7),
        "category_slug": ("home", "garden")[i % 2],
        "supplier": ("ACME", "GLOBEX")[i % 2],
        "warehouse_region": ("eu", "us", "")[i % 3],
        "warehouse_code": ("W1", "W1", "")[i % 3],
    }
    return {**row, **changes}


def uuid_for(i: int) -> Any:
    import uuid

    return uuid.UUID(int=i + 1)


def _product_csv(rows: list[dict[str, str]]) -> str:
    import csv
    import io

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=PRODUCT_HEADER.strip().split(","), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def test_import_products_through_the_generic_path(shop_worker: Any, import_root: Path) -> None:
    # Given the shop's parents and 2,100 products (3 chunks of 1,000) with one bad
    # value of each kind and a key repeated two chunks later
    _shop_parents()
    rows = [_product(i) for i in range(2100)]
    bad = {
        10: {"price": "12.345"},  # more decimals than numeric(10, 2)
        11: {"price": "-5.00"},  # the table's own CHECK (price >= 0) refuses it
        12: {"status": "gone"},
        13: {"sku": "not-a-uuid"},
        14: {"attributes": "[1, 2]"},  # an object is declared
        15: {"category_slug": "kitchen"},  # no such parent
        16: {"warehouse_region": "eu", "warehouse_code": ""},  # half a composite lookup
        17: {"released_on": "2026-02-30"},
        18: {"in_stock": "maybe"},
    }
    for i, change in bad.items():
        rows[i] = _product(i, **change)
    rows[2050] = _product(
        2050, ref="R00007", supplier="GLOBEX", price="99.00"
    )  # line 2052 = line 9
    (import_root / "products.csv").write_text(_product_csv(rows))
    # When it is imported into the products target
    s = client.wait(client.submit_import("products.csv", table="products"), timeout=180)
    # Then every bad line is one reject naming its column, the rest load once
    assert (s.state, s.rows_read, s.rows_inserted, s.rows_rejected) == (
        "partially_succeeded",
        2100,
        2100 - len(bad) - 1,
        len(bad) + 1,
    )
    rejects = {r.line: r for r in client.rejects(s.id)}
    columns = {line: r.column for line, r in rejects.items()}
    assert columns == {
        12: "price",
        13: None,
        14: "status",
        15: "sku",
        16: "attributes",
        17: "category_slug",
        18: "warehouse_region",
        19: "released_on",
        20: "in_stock",
        2052: "supplier",
    }
    assert "price_not_negative" in rejects[13].reason
    assert rejects[2052].reason == "duplicate of line 9 in this file"
    assert "kitchen" in rejects[17].reason
    with db.session_scope() as sess:
        one = sess.execute(
            text(
                "SELECT p.price, p.status::text, p.attributes, p.in_stock, c.slug, w.region "
                "FROM shop_products p JOIN shop_categories c ON c.id = p.category_id "
                "LEFT JOIN shop_warehouses w ON w.id = p.warehouse_id WHERE p.ref = 'R00004'"
            )
        ).one()
    assert one == (Decimal("4.50"), "draft", {"colour": "red", "n": 4}, True, "home", "us")
    assert _count("shop_products") == 2100 - len(bad) - 1
    # And an upsert of changed prices updates them, leaving identical rows alone
    again = [_product(i, price="1.00") if i < 100 else _product(i) for i in range(19, 300)]
    (import_root / "prices.csv").write_text(_product_csv(again))
    u = client.wait(
        client.submit_import("prices.csv", table="products", mode="upsert"), timeout=180
    )
    assert (u.state, u.rows_updated, u.rows_skipped, u.rows_rejected) == ("succeeded", 81, 200, 0)
