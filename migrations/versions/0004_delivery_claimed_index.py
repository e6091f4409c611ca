"""delivery: a partial index on the claims in flight, for the lease expiry

The scheduler expires claims older than the lease every few seconds, in every process;
without this index that is a scan of the whole delivery ledger.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 02:15:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_delivery_claimed",
        "delivery",
        ["claimed_at"],
        unique=False,
        postgresql_where=sa.text("status = 'claimed'"),
        sqlite_where=sa.text("status = 'claimed'"),
    )


def downgrade() -> None:
    op.drop_index("ix_delivery_claimed", table_name="delivery")
