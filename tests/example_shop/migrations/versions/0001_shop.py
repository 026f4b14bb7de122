"""The shop's catalogue: categories, suppliers, warehouses, products.

Revision ID: shop_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "shop_0001"
down_revision = None
branch_labels = None
depends_on = None

STATUS = postgresql.ENUM("draft", "active", "discontinued", name="shop_product_status")


def upgrade() -> None:
    op.create_table(
        "shop_categories",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("slug", sqlmodel.AutoString(length=80), nullable=False, unique=True),
        sa.Column("name", sqlmodel.AutoString(length=120), nullable=False),
    )
    op.create_table(
        "shop_suppliers",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("code", sqlmodel.AutoString(length=20), nullable=False, unique=True),
        sa.Column("name", sqlmodel.AutoString(length=120), nullable=False),
        sa.Column("email", sqlmodel.AutoString(length=320), nullable=True),
    )
    op.create_table(
        "shop_warehouses",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("region", sqlmodel.AutoString(length=10), nullable=False),
        sa.Column("code", sqlmodel.AutoString(length=10), nullable=False),
        sa.Column("city", sqlmodel.AutoString(length=80), nullable=False),
        sa.UniqueConstraint("region", "code", name="uq_warehouse_region_code"),
    )
    op.create_table(
        "shop_products",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("sku", sa.Uuid(), nullable=False, unique=True),
        sa.Column("ref", sqlmodel.AutoString(length=40), nullable=False),
        sa.Column("name", sqlmodel.AutoString(length=120), nullable=False),
        sa.Column("price", sa.Numeric(10, 2), nullable=False),
        sa.Column("status", STATUS, nullable=False, server_default="draft"),
        sa.Column(
            "attributes",
            postgresql.JSONB(),
            nullable=False,
            server_default=sa.text("'{}'::jsonb"),
        ),
        sa.Column("tags", postgresql.JSONB(), nullable=True),
        sa.Column("released_on", sa.Date(), nullable=True),
        sa.Column("in_stock", sa.Boolean(), nullable=False),
        sa.Column("weight_kg", sa.Float(), nullable=True),
        sa.Column("stock", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("category_id", sa.Integer(), sa.ForeignKey("shop_categories.id"), nullable=False),
        sa.Column("supplier_id", sa.Integer(), sa.ForeignKey("shop_suppliers.id"), nullable=False),
        sa.Column("warehouse_id", sa.Integer(), sa.ForeignKey("shop_warehouses.id"), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.UniqueConstraint("supplier_id", "ref", name="uq_product_supplier_ref"),
        sa.CheckConstraint("price >= 0", name="price_not_negative"),
    )


def downgrade() -> None:
    op.drop_table("shop_products")
    op.drop_table("shop_warehouses")
    op.drop_table("shop_suppliers")
    op.drop_table("shop_categories")
    STATUS.drop(op.get_bind(), checkfirst=True)
