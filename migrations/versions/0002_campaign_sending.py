"""campaign sending: audience build marker and per-campaign rate

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 05:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("campaign", schema=None) as batch_op:
        batch_op.add_column(sa.Column("audience_built_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("rate_limit", sa.Float(), nullable=True))
        batch_op.create_index("ix_campaign_status", ["status", "scheduled_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("campaign", schema=None) as batch_op:
        batch_op.drop_index("ix_campaign_status")
        batch_op.drop_column("rate_limit")
        batch_op.drop_column("audience_built_at")
