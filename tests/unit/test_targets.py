"""Targets derived from SQLModel classes (the example and tests/example_shop), and their rows."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from example_shop import bulk as shop
from example_shop.models import Category, Product, Supplier
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from worker import loader, targets
from worker.errors import ConfigError, InputFormatError, UsageError
from worker.parsing import Record
from worker.target_rows import RowValidator, check_header, raw_key_maker
from worker.targets import Lookup, Registry, Status, Target

SHOP = Registry(shop.targets)
EXAMPLE = Registry(targets.builtin_targets())


def test_the_example_derives_its_table_specs() -> None:
    todos, users = EXAMPLE.get("todos").to_table_spec(), EXAMPLE.get("users").to_table_spec()
    assert todos == loader.TableSpec(
        table="todos",
        columns=("title", "status", "owner_id", "created_at"),
        types=("text", "text", "bigint", "timestamptz"),
        key=("title", "owner_id"),
        updatable=("status", "created_at"),
        key_label="a todo with this title for this owner",
        key_column="title",
        defaults=("created_at",),  # status's constant default is filled by validation
        default_sql=("now()",),
    )
    assert users == loader.TableSpec(
        table="users",
        columns=("email", "name"),
        types=("text", "text"),
        key=("email",),
        updatable=("name",),
        key_label="a user with this email",
        key_column="email",
    )
    t = EXAMPLE.get("todos")
    assert t.file_columns == ("title", "status", "owner_email", "created_at")
    assert t.required_columns == ("title", "owner_email")
    assert t.key_file_columns == ("title", "owner_email")
    assert EXAMPLE.get("users").file_columns == ("email", "name")


def test_shop_products_columns_types_and_limits() -> None:
    p = SHOP.get("products")
    kinds = {c.name: c.describe() for c in p.columns}
    assert kinds == {
        "sku": "uuid",
        "ref": "str(40)",
        "name": "str(120)",
        "price": "decimal(10,2)",
        "status": "enum(draft|active|discontinued)",
        "attributes": "json(object)",
        "tags": "json(array)",
        "released_on": "date",
        "in_stock": "bool",
        "weight_kg": "float",
        "stock": "int32",
        "category_slug": "str(80)",
        "supplier": "str(20)",
        "warehouse_region": "str(10)",
        "warehouse_code": "str(10)",
        "created_at": "datetime",
    }
    # NOT NULL without any default = required; id and updated_at (onupdate) are not file columns
    assert p.required_columns == ("sku", "ref", "name", "price", "category_slug", "supplier")
    assert p.key == ("supplier_id", "ref") and p.key_file_columns == ("supplier", "ref")
    assert p.key_candidates == (("sku",), ("supplier_id", "ref"))
    assert p.load_columns[-4:] == ("category_id", "supplier_id", "warehouse_id", "created_at")
    spec = p.to_table_spec()
    assert spec.types[spec.columns.index("status")] == "shop_product_status"
    assert spec.defaults == ("attributes", "created_at")


def test_lookups_by_convention_by_declaration_and_composite() -> None:
    lookups = {lk.fk_column: lk for lk in SHOP.get("products").lookups}
    assert (lookups["category_id"].by, lookups["category_id"].file_columns) == (
        ("slug",),
        ("category_slug",),
    )
    assert lookups["supplier_id"].file_columns == ("supplier",)  # declared
    assert lookups["warehouse_id"].by == ("region", "code")  # the parent's composite key
    assert lookups["warehouse_id"].file_columns == ("warehouse_region", "warehouse_code")
    assert not lookups["warehouse_id"].required and lookups["category_id"].required
    assert [s.name for s in SHOP.parents_first("products")] == [
        "categories",
        "suppliers",
        "warehouses",
        "products",
    ]


def test_status_values_come_from_the_enum_and_transitions_are_declared() -> None:
    status = SHOP.get("products").status
    assert status is not None
    assert status.values == ("draft", "active", "discontinued")
    assert status.allowed_from("active") == ["draft"]
    todo = EXAMPLE.get("todos").status
    assert todo is not None and todo.allowed_from("active") == [
        "in_progress",
        "completed",
        "archived",
    ]


def test_unknown_table_lists_the_known_ones() -> None:
    with pytest.raises(
        UsageError, match="known tables: categories, suppliers, warehouses, products"
    ):
        SHOP.get("todos")


class _OwnModel(SQLModel, registry=registry()):
    """This module's own metadata: bulkops's (SQLModel.metadata) must hold only its tables."""


class Loose(_OwnModel, table=True):
    """A table of this test module's own."""

    __tablename__ = "loose_things"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=10)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (Target(Loose), "no unique constraint"),
        (Target(Category, key=("name",)), "not a unique constraint"),
        (Target(Category, status=Status("name", {"a": {"b"}}), key=("slug",)), None),
        (Target(Product, lookups={"ref": Lookup("x")}), "not a foreign key"),
        (Target(Product, lookups={"supplier_id": Lookup("users")}), "points at shop_suppliers"),
        (Target(Category, status=Status("slug", {"a": {"b"}}, values=("a",))), "unknown status"),
        (Target(Category, exclude=("nope",)), "unknown column"),
    ],
)
def test_bad_declarations_are_config_errors(target: Target, message: str | None) -> None:
    parents = [Target(Supplier), Target(Category)] if target.table.name == "shop_products" else []
    if message is None:
        Registry([target])  # a string status whose values are the transitions' is fine
        return
    with pytest.raises(ConfigError, match=message):
        Registry([*parents, target])


def test_bulkops_targets_names_a_module_attribute(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BULKOPS_TARGETS", "example_shop.bulk:targets")
    assert targets.registry().names() == ["categories", "suppliers", "warehouses", "products"]
    monkeypatch.setenv("BULKOPS_TARGETS", "example_shop.bulk:nothing")
    with pytest.raises(ConfigError, match="no attribute 'nothing'"):
        targets.registry()
    monkeypatch.setenv("BULKOPS_TARGETS", "no_such_module:targets")
    with pytest.raises(ConfigError, match="cannot import"):
        targets.registry()
    monkeypatch.delenv("BULKOPS_TARGETS")
    assert targets.registry().names() == ["users", "todos"]
    by_name = Registry({"cats": Target(Category)})
    assert by_name.names() == ["cats"]


# --- rows -------------------------------------------------------------------------------

GOOD = {
    "sku": "0b7e6a53-3c52-4b6e-9d7e-2b2f1b1e8c11",
    "ref": "A-1",
    "name": "Lamp",
    "price": "12.50",
    "status": "Active",
    "attributes": '{"color": "red"}',
    "tags": '["x"]',
    "released_on": "2025-03-01",
    "in_stock": "no",
    "weight_kg": "1.5",
    "stock": "7",
    "category_slug": "home",
    "supplier": "ACME",
    "created_at": "2025-01-01T10:00:00",
}


def _validate(**changes: Any) -> tuple[list[Any], list[Any]]:
    values = {k: v for k, v in {**GOOD, **changes}.items() if v is not None}
    return RowValidator(SHOP.get("products")).validate([Record(2, values, "raw")])


def test_a_good_product_row_is_typed() -> None:
    rows, errors = _validate()
    assert errors == []
    values = dict(zip(SHOP.get("products").file_columns, rows[0].values, strict=True))
    assert values["sku"] == uuid.UUID(GOOD["sku"])
    assert values["price"] == Decimal("12.50")
    assert values["status"] == "active"
    assert values["attributes"] == '{"color": "red"}'  # JSON text, checked, for COPY
    assert values["released_on"] == date(2025, 3, 1)
    assert values["in_stock"] is False and values["weight_kg"] == 1.5 and values["stock"] == 7
    # a naive timestamp means UTC
    assert values["created_at"] == datetime(2025, 1, 1, 10, tzinfo=UTC)
    assert values["warehouse_region"] is None


def test_missing_optional_values_get_their_defaults() -> None:
    rows, errors = _validate(status="", stock=None, in_stock=None, attributes=None, created_at="")
    assert errors == []
    values = dict(zip(SHOP.get("products").file_columns, rows[0].values, strict=True))
    assert values["status"] == "draft"  # constant server default
    assert values["stock"] == 0
    assert values["in_stock"] is True  # the model's Python default
    assert values["attributes"] is None and values["created_at"] is None  # the database's


@pytest.mark.parametrize(
    ("changes", "column", "reason"),
    [
        ({"sku": "nope"}, "sku", "sku 'nope' is not a UUID"),
        ({"price": "1.234"}, "price", "more than 2 decimal places"),
        ({"price": "123456789"}, "price", "more than 8 digits before the point"),
        ({"price": "NaN"}, "price", "not a finite number"),
        ({"status": "sold"}, "status", "is not one of draft, active, discontinued"),
        ({"attributes": "[1]"}, "attributes", "must be a JSON object"),
        ({"attributes": "{"}, "attributes", "is not valid JSON"),
        ({"tags": "NaN"}, "tags", "is not valid JSON"),
        ({"released_on": "March"}, "released_on", "not an ISO 8601 date"),
        ({"in_stock": "maybe"}, "in_stock", "not a boolean"),
        ({"stock": "1.5"}, "stock", "not an integer"),
        ({"stock": str(2**31)}, "stock", "out of range"),
        ({"weight_kg": "inf"}, "weight_kg", "not a finite number"),
        ({"name": "x" * 121}, "name", "121 characters, the limit is 120"),
        ({"name": "   "}, "name", "name is empty"),
        ({"name": None}, "name", "name is missing"),
        ({"ref": "a\x00b"}, "ref", "NUL byte"),
        ({"created_at": "yesterday"}, "created_at", "not an ISO 8601 timestamp"),
    ],
)
def test_bad_values_are_rejected_with_their_column(
    changes: dict[str, Any], column: str, reason: str
) -> None:
    rows, errors = _validate(**changes)
    assert rows == []
    assert [(e.line, e.column) for e in errors] == [(2, column)]
    assert reason in errors[0].reason


def test_later_duplicates_of_the_natural_key_are_rejects() -> None:
    v = RowValidator(SHOP.get("products"))
    recs = [Record(2, dict(GOOD), "a"), Record(3, {**GOOD, "sku": str(uuid.uuid4())}, "b")]
    rows, errors = v.validate(recs)
    assert [r.line for r in rows] == [2]
    assert [(e.line, e.column, e.reason) for e in errors] == [
        (3, "supplier", "duplicate of line 2 in this file")
    ]
    assert v.validate(recs, dedupe=False)[1] == []


def test_header_check_names_missing_and_unknown_columns() -> None:
    spec = SHOP.get("products")
    check_header(spec, [*GOOD, "_line", "_error"])
    with pytest.raises(
        InputFormatError, match="missing required column.*price.*unknown column.*colour"
    ):
        check_header(spec, [c for c in GOOD if c != "price"] + ["colour"])


def test_raw_keys_are_normalised_as_the_validator_does() -> None:
    make = raw_key_maker(EXAMPLE.get("todos"))
    assert make(["Buy milk", "  Ann@Example.COM "]) == ("Buy milk", "ann@example.com")
    assert make(["Buy milk", "not an email"]) is None


def _todo_records() -> list[Record]:
    rows = [
        {"title": "Write it", "status": "", "owner_email": "A@x.org", "created_at": ""},
        {"title": "x" * 201, "status": "active", "owner_email": "a@x.org"},
        {"title": "Ok", "status": "DONE", "owner_email": "a@x.org"},
        {"title": "Ok", "status": "Completed", "owner_email": "a@x", "created_at": "2025-01-01Z"},
        {"title": "   ", "owner_email": "a@x.org"},
        {"title": "T", "owner_email": "bad"},
        {"title": "T", "owner_email": "a@x.org", "created_at": "soon"},
        {"status": "active", "owner_email": "a@x.org"},
    ]
    return [Record(i + 2, values, str(values)) for i, values in enumerate(rows)]


def test_derived_todos_validation() -> None:
    # (every rule of the example in depth: tests/unit/test_validation.py)
    records = _todo_records()
    derived, errors = RowValidator(EXAMPLE.get("todos")).validate(records, dedupe=False)
    assert [(r.line, *r.values) for r in derived] == [
        (2, "Write it", "active", "a@x.org", None),
        (5, "Ok", "completed", "a@x", datetime(2025, 1, 1, tzinfo=UTC)),
    ]
    assert [(e.line, e.column, e.reason) for e in errors] == [
        (3, "title", "title is 201 characters, the limit is 200"),
        (4, "status", "status 'DONE' is not one of active, in_progress, completed, archived"),
        (6, "title", "title is empty"),
        (7, "owner_email", "owner_email 'bad' is not a valid email address"),
        (8, "created_at", "created_at 'soon' is not an ISO 8601 timestamp"),
        (9, "title", "title is missing"),
    ]
