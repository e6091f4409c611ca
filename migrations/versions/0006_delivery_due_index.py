"""delivery: a partial index on the due rows of each campaign, in id order, for the claim

A claim takes the first due rows of a slice in id order. Without this index, a ledger
written a moment ago (no statistics yet) made PostgreSQL read every due row of the
campaign and sort them, for each micro-batch.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 04:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_delivery_due",
        "delivery",
        ["campaign_id", "id"],
        unique=False,
        postgresql_where=sa.text("status IN ('pending', 'deferred')"),
        sqlite_where=sa.text("status IN ('pending', 'deferred')"),
    )


def downgrade() -> None:
    op.drop_index("ix_delivery_due", table_name="delivery")
