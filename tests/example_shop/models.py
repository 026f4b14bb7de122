"""The shop's SQLModel classes, on their own metadata (not bulkops's ``SQLModel.metadata``)."""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Integer,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy import Enum as SAEnum
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

shop_registry = registry()
metadata = shop_registry.metadata


class ShopModel(SQLModel, registry=shop_registry):
    pass


class ProductStatus(enum.Enum):
    DRAFT = "draft"
    ACTIVE = "active"
    DISCONTINUED = "discontinued"


# Draft products go live; live ones may be discontinued; discontinued ones come back as drafts.
TRANSITIONS = {
    "draft": {"active", "discontinued"},
    "active": {"discontinued"},
    "discontinued": {"draft"},
}


class Category(ShopModel, table=True):
    __tablename__ = "shop_categories"

    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(max_length=80, unique=True)
    name: str = Field(max_length=120)


class Supplier(ShopModel, table=True):
    __tablename__ = "shop_suppliers"

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=20, unique=True)
    name: str = Field(max_length=120)
    email: str | None = Field(default=None, max_length=320)


class Warehouse(ShopModel, table=True):
    """A composite natural key: a warehouse code is unique within its region."""

    __tablename__ = "shop_warehouses"
    __table_args__ = (UniqueConstraint("region", "code", name="uq_warehouse_region_code"),)

    id: int | None = Field(default=None, primary_key=True)
    region: str = Field(max_length=10)
    code: str = Field(max_length=10)
    city: str = Field(max_length=80)


class Product(ShopModel, table=True):
    __tablename__ = "shop_products"
    __table_args__ = (
        UniqueConstraint("supplier_id", "ref", name="uq_product_supplier_ref"),
        CheckConstraint("price >= 0", name="price_not_negative"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True))
    sku: uuid.UUID = Field(unique=True)
    ref: str = Field(max_length=40)
    name: str = Field(max_length=120)
    price: Decimal = Field(max_digits=10, decimal_places=2)
    status: ProductStatus = Field(
        default=ProductStatus.DRAFT,
        sa_column=Column(
            SAEnum(
                ProductStatus,
                name="shop_product_status",
                values_callable=lambda e: [m.value for m in e],
            ),
            nullable=False,
            server_default="draft",
        ),
    )
    attributes: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=Column(JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    )
    tags: list[str] | None = Field(default=None, sa_column=Column(JSONB, nullable=True))
    released_on: date | None = None
    in_stock: bool = Field(default=True)
    weight_kg: float | None = None
    stock: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    category_id: int = Field(foreign_key="shop_categories.id")
    supplier_id: int = Field(foreign_key="shop_suppliers.id")
    warehouse_id: int | None = Field(default=None, foreign_key="shop_warehouses.id")
    created_at: datetime | None = Field(
        default=None,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
    updated_at: datetime | None = Field(
        default=None,
        sa_column=Column(
            DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
        ),
    )
