"""delivery: drop ``ix_delivery_message_id``, which no query uses

A delivery row is written three times (the ledger, the claim, the outcome), and none of
those updates can be HOT (each changes ``status``, which other indexes cover), so each
write adds an entry to every index of the table — to this one too, a NULL entry until the
outcome. Nothing looks deliveries up by Message-ID: inbound attribution reads the delivery
id written into the Message-ID (``<lw.<delivery id>.<random>@domain>``), fetches the row by
primary key and compares the stored Message-ID (``app/inbound/attribution.py``).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 07:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_delivery_message_id", table_name="delivery")


def downgrade() -> None:
    op.create_index("ix_delivery_message_id", "delivery", ["message_id"], unique=False)
