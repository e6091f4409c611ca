"""keyed hashes: stored as ``uuid`` on PostgreSQL (16 bytes instead of 32 hex digits)

Every keyed address hash is 128 bits (migration 0007). As 32 hex digits of
``VARCHAR COLLATE "C"`` each value took 33 bytes and every comparison went through the
text comparison function; as ``uuid`` it takes 16 bytes and compares with one ``memcmp``.
These are the random keys of the store's largest indexes (``contact.email_hash``,
``consent_event.address_hash``, ``contact.phone_hash``, ``suppression.address_hash``):
an insert lands on a random leaf, so the size of the index is how many of its pages
compete for the buffer cache, and how many are logged in full after each checkpoint.

Python keeps seeing the 32 hex digits (``app.models.base.KeyedHashType``; ``uuid``
accepts them as input and the hash is the same value either way). The upgrade refuses, with
the table and column, if a stored hash is not 32 hex digits. SQLite keeps hex text.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 12:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: (table, column) of every keyed address hash (as in migration 0007).
HASH_COLUMNS: tuple[tuple[str, str], ...] = (
    ("contact", "email_hash"),
    ("contact", "domain_hash"),
    ("contact", "phone_hash"),
    ("contact", "postal_hash"),
    ("consent_event", "address_hash"),
    ("suppression", "address_hash"),
    ("data_request", "address_hash"),
    ("import_seen", "key_hash"),
)


def _by_table() -> dict[str, list[str]]:
    tables: dict[str, list[str]] = {}
    for table, column in HASH_COLUMNS:
        tables.setdefault(table, []).append(column)
    return tables


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    for table, column in HASH_COLUMNS:
        # Names from HASH_COLUMNS, never input.
        bad = bind.exec_driver_sql(
            f"SELECT count(*) FROM {table} WHERE {column} !~ '^[0-9a-f]{{32}}$'"  # noqa: S608
        ).scalar()
        if bad:
            raise RuntimeError(
                f"{table}.{column}: {bad} stored value(s) are not a keyed hash of 32 lower-case hex "
                "digits; migration 0013 stores keyed hashes as uuid and cannot convert them"
            )
    for table, columns in _by_table().items():
        changes = ", ".join(f"ALTER COLUMN {c} TYPE uuid USING {c}::uuid" for c in columns)
        op.execute(f"ALTER TABLE {table} {changes}")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    for table, columns in _by_table().items():
        changes = ", ".join(
            f"ALTER COLUMN {c} TYPE VARCHAR(64) COLLATE \"C\" USING replace({c}::text, '-', '')"
            for c in columns
        )
        op.execute(f"ALTER TABLE {table} {changes}")
