"""The shop's bulkops declaration: only what the models cannot say."""

from __future__ import annotations

from example_shop.models import TRANSITIONS, Category, Product, Supplier, Warehouse
from worker.targets import Lookup, Status, Target

targets = [
    Target(Category, name="categories", faker={"name": "word"}),
    Target(Supplier, name="suppliers", faker={"name": "company", "code": "bothify"}),
    Target(Warehouse, name="warehouses"),
    Target(
        Product,
        name="products",
        # sku is unique too, and comes first: the natural key is declared.
        key=("supplier_id", "ref"),
        # category_id -> category_slug and warehouse_id -> warehouse_region,
        # warehouse_code by convention; the supplier's file column is renamed.
        lookups={"supplier_id": Lookup("shop_suppliers", by="code", column="supplier")},
        status=Status("status", TRANSITIONS),
        faker={"name": "catch_phrase"},
    ),
]
