"""A second application (tests/example_shop) through bulkops: its migrations, seeding, updates.

The shop has its own SQLModel metadata and Alembic migrations (in Alembic's
default ``alembic_version``; bulkops keeps its own revision in
``bulkops_alembic_version``), applied to a bulkops-migrated database; bulkops is
pointed at it with ``BULKOPS_TARGETS=example_shop.bulk:targets``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from example_shop import migrate as shop_migrate
from example_shop.models import metadata as shop_metadata
from sqlalchemy import create_engine, inspect, text

from worker import client, db, migrate, seeding, targets
from worker.config import sqlalchemy_url
from worker.errors import UsageError

SHOP = "example_shop.bulk:targets"
BULKOPS_HEAD = ScriptDirectory.from_config(migrate.alembic_config()).get_current_head()
TESTS = Path(__file__).resolve().parent.parent


@pytest.fixture
def shop(bulkops_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """bulkops's fresh database with the shop's own migrations applied, and BULKOPS_TARGETS."""
    shop_migrate.upgrade(bulkops_env["DATABASE_URL"])
    monkeypatch.setenv("BULKOPS_TARGETS", SHOP)
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
        assert {"shop_products", "alembic_version", "bulkops_alembic_version", "jobs"} <= names
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == (
                "shop_0001"
            )
            # bulkops's own version table is untouched by the shop's migrations
            bulkops_rev = conn.execute(text("SELECT version_num FROM bulkops_alembic_version"))
            assert bulkops_rev.scalar() == BULKOPS_HEAD

            # Only the shop's own tables: bulkops's tables share the schema (see README,
            # "Your own tables"), so the application's env.py must leave them out.
            def shop_only(name: str | None, type_: str, parent: Any) -> bool:
                return type_ != "table" or bool(name and name.startswith("shop_"))

            ctx = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    "include_name": shop_only,
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
        assert "jobs" in left and "todos" in left
    finally:
        engine.dispose()
    shop_migrate.upgrade(shop["DATABASE_URL"])


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
