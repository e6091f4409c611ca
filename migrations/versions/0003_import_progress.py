"""imports: options, heartbeat, the per-import table of people already met

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 08:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    json_type = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
    with op.batch_alter_table("import_job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("options", json_type, nullable=True))
        batch_op.add_column(sa.Column("progress", json_type, nullable=True))
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_import_job_status", ["status", "heartbeat_at"], unique=False)
    op.create_table(
        "import_seen",
        sa.Column("import_id", sa.Integer(), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["import_id"], ["import_job.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("import_id", "key_hash"),
    )


def downgrade() -> None:
    op.drop_table("import_seen")
    with op.batch_alter_table("import_job", schema=None) as batch_op:
        batch_op.drop_index("ix_import_job_status")
        batch_op.drop_column("heartbeat_at")
        batch_op.drop_column("progress")
        batch_op.drop_column("options")
