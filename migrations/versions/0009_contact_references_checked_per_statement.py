"""preference and consent_event: their contact is checked once per statement (PostgreSQL)

``preference.contact_id`` and ``consent_event.contact_id`` referenced ``contact`` through
foreign keys. PostgreSQL checks a foreign key row by row, each check a query of its own
(executor set-up, a lookup, a row lock): profiled during an import of a million leads, those
checks were a quarter of the database's CPU (about 14 µs per lead).

On PostgreSQL the two constraints become statement-level triggers that keep the same
guarantees, set-based:

- after an INSERT into either table, one query locks the contacts the new rows name
  (``FOR KEY SHARE``, as a foreign key's check does, so a concurrent delete waits for this
  transaction; contacts this transaction wrote itself need no lock) and one looks for a
  name with no contact; either way a missing contact raises ``foreign_key_violation``;
- a preference's ``contact_id`` changing is checked the same way, row by row (it never
  changes in practice); consent_event refuses every UPDATE already (append-only);
- deleting contacts deletes their preferences and sets their events' ``contact_id`` to
  NULL (``ON DELETE CASCADE`` / ``SET NULL``), which the ledger's append-only trigger
  refuses exactly as it refused the foreign key's action; changing a referenced
  ``contact.id`` is refused.

SQLite keeps the foreign keys (its checks are cheap, and it has no statement-level
triggers with transition tables); the models keep declaring them, and
``app.models.integrity`` tells Alembic's comparison which ones PostgreSQL enforces by
trigger.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 07:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FUNCTIONS = (
    """
CREATE FUNCTION contact_refs_exist() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  missing integer;
BEGIN
  -- Both queries probe contact's primary key once per contact named (LATERAL, and OFFSET 0
  -- keeps the probe a nested loop): the transition table has no statistics, and a plan
  -- that hashed or scanned the whole contact table would cost per batch what the table
  -- holds.
  PERFORM 1
    FROM (SELECT DISTINCT r.contact_id FROM new_rows r WHERE r.contact_id IS NOT NULL) n
    CROSS JOIN LATERAL (
      SELECT 1 FROM contact c
       WHERE c.id = n.contact_id AND c.xmin <> pg_current_xact_id()::xid
       FOR KEY SHARE OF c
    ) locked;
  SELECT n.contact_id INTO missing
    FROM (SELECT DISTINCT r.contact_id FROM new_rows r WHERE r.contact_id IS NOT NULL) n
    LEFT JOIN LATERAL (SELECT c.id FROM contact c WHERE c.id = n.contact_id OFFSET 0) found ON true
   WHERE found.id IS NULL
   LIMIT 1;
  IF missing IS NOT NULL THEN
    RAISE EXCEPTION 'insert or update on table "%" violates foreign key "%_contact_id_fkey"',
      TG_TABLE_NAME, TG_TABLE_NAME
      USING ERRCODE = 'foreign_key_violation',
            DETAIL = format('Key (contact_id)=(%s) is not present in table "contact".', missing);
  END IF;
  RETURN NULL;
END $$
""",
    """
CREATE FUNCTION contact_ref_exists() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM 1 FROM contact c WHERE c.id = NEW.contact_id FOR KEY SHARE OF c;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'insert or update on table "%" violates foreign key "%_contact_id_fkey"',
      TG_TABLE_NAME, TG_TABLE_NAME
      USING ERRCODE = 'foreign_key_violation',
            DETAIL = format('Key (contact_id)=(%s) is not present in table "contact".', NEW.contact_id);
  END IF;
  RETURN NULL;
END $$
""",
    """
CREATE FUNCTION contact_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM preference p WHERE p.contact_id IN (SELECT o.id FROM old_rows o);
  UPDATE consent_event e SET contact_id = NULL WHERE e.contact_id IN (SELECT o.id FROM old_rows o);
  RETURN NULL;
END $$
""",
    """
CREATE FUNCTION contact_id_kept() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM preference WHERE contact_id = OLD.id)
     OR EXISTS (SELECT 1 FROM consent_event WHERE contact_id = OLD.id) THEN
    RAISE EXCEPTION 'update on table "contact" changes id %, which preferences or consent events reference', OLD.id
      USING ERRCODE = 'foreign_key_violation';
  END IF;
  RETURN NEW;
END $$
""",
)

_TRIGGERS = (
    "CREATE TRIGGER preference_contact_exists AFTER INSERT ON preference "
    "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION contact_refs_exist()",
    "CREATE TRIGGER consent_event_contact_exists AFTER INSERT ON consent_event "
    "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION contact_refs_exist()",
    "CREATE TRIGGER preference_contact_changed AFTER UPDATE OF contact_id ON preference "
    "FOR EACH ROW WHEN (OLD.contact_id IS DISTINCT FROM NEW.contact_id) EXECUTE FUNCTION contact_ref_exists()",
    "CREATE TRIGGER contact_deleted AFTER DELETE ON contact "
    "REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION contact_deleted()",
    "CREATE TRIGGER contact_id_kept BEFORE UPDATE OF id ON contact "
    "FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id) EXECUTE FUNCTION contact_id_kept()",
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_constraint("preference_contact_id_fkey", "preference", type_="foreignkey")
    op.drop_constraint("consent_event_contact_id_fkey", "consent_event", type_="foreignkey")
    for function in _FUNCTIONS:
        op.execute(function)
    for trigger in _TRIGGERS:
        op.execute(trigger)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, trigger in (
        ("preference", "preference_contact_exists"),
        ("consent_event", "consent_event_contact_exists"),
        ("preference", "preference_contact_changed"),
        ("contact", "contact_deleted"),
        ("contact", "contact_id_kept"),
    ):
        op.execute(f"DROP TRIGGER IF EXISTS {trigger} ON {table}")
    for function in ("contact_refs_exist", "contact_ref_exists", "contact_deleted", "contact_id_kept"):
        op.execute(f"DROP FUNCTION IF EXISTS {function}()")
    op.create_foreign_key(
        "preference_contact_id_fkey", "preference", "contact", ["contact_id"], ["id"], ondelete="CASCADE"
    )
    op.create_foreign_key(
        "consent_event_contact_id_fkey",
        "consent_event",
        "contact",
        ["contact_id"],
        ["id"],
        ondelete="SET NULL",
    )
