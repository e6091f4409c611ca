"""keyed hashes: keep the first 128 bits (32 hex digits) of every stored address hash

The keyed address hashes (HMAC-SHA256 with the server's key) were stored as 64 hex
digits. Half of that is as safe against two addresses sharing a hash (about 1 in 10^21 for a
billion addresses) and halves the biggest columns and indexes of the contact store and the
consent ledger. ``app.suppression.hashing`` now makes 32-digit hashes; this migration cuts
the stored ones to their first 32 digits, which is exactly what the new code computes for
the same address, so every suppression, opt-out and contact keeps matching.

On PostgreSQL each column is rewritten with ``ALTER COLUMN … TYPE … USING left(…)``: one
rewrite of the table and its indexes, no dead rows left behind, and no row trigger fires
(the consent ledger's append-only trigger stays armed). SQLite updates in place; the
ledger's trigger is set aside for that one statement.

Downgrade cannot give the hashes their lost digits back. It refuses when any hash is
stored (code of an earlier revision would no longer recognise those people, and so would
no longer honour their opt-outs); restore a backup taken before the upgrade instead.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 07:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DIGITS = 32

#: (table, column) of every keyed address hash. ``api_token.token_hash`` is a plain
#: SHA-256 of a token, not an address hash, and stays as it is.
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

_TRIGGER_SQLITE = (
    "CREATE TRIGGER consent_event_append_only BEFORE UPDATE ON consent_event "
    "BEGIN SELECT RAISE(ABORT, 'consent_event is append-only'); END"
)


def upgrade() -> None:
    bind = op.get_bind()
    tables: dict[str, list[str]] = {}
    for table, column in HASH_COLUMNS:
        tables.setdefault(table, []).append(column)
    if bind.dialect.name == "postgresql":
        for table, columns in tables.items():
            changes = ", ".join(
                f'ALTER COLUMN {c} TYPE VARCHAR(64) COLLATE "C" USING left({c}, {DIGITS})' for c in columns
            )
            op.execute(f"ALTER TABLE {table} {changes}")
        return
    op.execute("DROP TRIGGER IF EXISTS consent_event_append_only")
    for table, columns in tables.items():
        sets = ", ".join(f"{c} = substr({c}, 1, {DIGITS})" for c in columns)
        longer = " OR ".join(f"length({c}) > {DIGITS}" for c in columns)
        op.execute(f"UPDATE {table} SET {sets} WHERE {longer}")  # noqa: S608 (names from HASH_COLUMNS)
    op.execute(_TRIGGER_SQLITE)


def downgrade() -> None:
    bind = op.get_bind()
    for table, column in HASH_COLUMNS:
        query = f"SELECT 1 FROM {table} WHERE {column} IS NOT NULL LIMIT 1"  # noqa: S608 (HASH_COLUMNS)
        stored = bind.execute(sa.text(query)).first()
        if stored is not None:
            raise RuntimeError(
                f"cannot downgrade below 0007: {table}.{column} holds 128-bit keyed hashes, and "
                "code of an earlier revision computes 256-bit ones, so it would no longer "
                "recognise these people (nor honour their opt-outs). Restore a backup taken "
                "before the upgrade instead."
            )
