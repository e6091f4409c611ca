"""preference: an index on contact_id alone

A person's preferences are read by ``contact_id`` alone: the preference centre, every
preference change (``apply_changes`` reads them first), an erasure, and an import batch
that meets people already stored. The two unique indexes on preference are partial
(``topic IS NULL`` / ``IS NOT NULL``), so neither serves that lookup, and PostgreSQL read
the whole table each time: an import of a million leads spent half of its database time
scanning preference (its cost grew with the square of the file's size), and each opt-out
scanned it once. The contact foreign key's cascade uses the index too.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 07:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_preference_contact", "preference", ["contact_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_preference_contact", table_name="preference")
