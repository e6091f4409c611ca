"""Migrations: the models and the migrations agree, and they go down and up again,
on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

import app.models  # noqa: F401
from app.config import Settings
from app.db import get_engine
from app.migrate import alembic_config, upgrade
from app.models.integrity import include_object


def test_models_match_migrations(db: Settings) -> None:
    with get_engine(db).connect() as conn:
        opts = {"compare_type": False, "include_object": include_object(conn.dialect.name)}
        diff = compare_metadata(MigrationContext.configure(conn, opts=opts), SQLModel.metadata)
    assert diff == [], diff


def test_downgrade_and_upgrade_again(db: Settings) -> None:
    cfg = alembic_config(db.resolved_database_url)
    engine = get_engine(db)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    upgrade(db)
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() is not None


def _full_hash(kind: str, value: str) -> str:
    """A keyed hash as revisions before 0007 stored it: all 64 hex digits."""
    import hashlib
    import hmac

    from app.config import get_settings

    return hmac.new(get_settings().address_hash_key(), f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()


def test_0007_keeps_every_stored_hash_matching(db: Settings) -> None:
    """Hashes stored in full before 0007 are cut to the 32 digits the code now computes:
    the contact is still found by its address, its suppression still refuses it, the
    consent ledger still answers for the address, and the ledger stays append-only."""
    import pytest
    import sqlalchemy as sa
    from sqlmodel import Session, col, select

    from app.contacts import service as contacts
    from app.models import ConsentEvent, Contact, utcnow
    from app.suppression import gate
    from app.suppression.hashing import HASH_HEX_DIGITS, IdentifierKind, keyed_hash
    from app.suppression.service import lookup_hashes

    cfg = alembic_config(db.resolved_database_url)
    engine = get_engine(db)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0006")
    email_hash = _full_hash("email", "ada@example.org")
    assert len(email_hash) == 64
    # Written as code before 0007 wrote them: the models now describe the current schema
    # (keyed hashes as uuid on PostgreSQL, migration 0013), so the rows go in as plain SQL.
    with engine.begin() as conn:
        contact_id = conn.execute(
            sa.text(
                "INSERT INTO contact (email, email_hash, domain_hash, phone, phone_hash, attributes, "
                "age_confirmed, source, source_detail, created_at, updated_at) VALUES ('ada@example.org', "
                ":email_hash, :domain_hash, '+4930123456', :phone_hash, '{}', false, 'import', '{}', "
                ":now, :now) RETURNING id"
            ),
            {
                "email_hash": email_hash,
                "domain_hash": _full_hash("domain", "example.org"),
                "phone_hash": _full_hash("phone", "+4930123456"),
                "now": utcnow(),
            },
        ).scalar_one()
        conn.execute(
            sa.text(
                "INSERT INTO consent_event (contact_id, address_hash, channel, status, method, actor, "
                "occurred_at) VALUES (:contact_id, :email_hash, 'email', 'opted_out', 'one_click', "
                "'recipient', :now)"
            ),
            {"contact_id": contact_id, "email_hash": email_hash, "now": utcnow()},
        )
        conn.execute(
            sa.text(
                "INSERT INTO suppression (channel, kind, address_hash, reason, origin, created_at) "
                "VALUES ('email', 'email', :email_hash, 'unsubscribe', 'recipient', :now)"
            ),
            {"email_hash": email_hash, "now": utcnow()},
        )
    upgrade(db)

    with Session(engine) as session:
        stored = session.get(Contact, contact_id)
        assert stored is not None
        assert stored.email_hash == keyed_hash(IdentifierKind.EMAIL, "ada@example.org") == email_hash[:32]
        assert stored.phone_hash == keyed_hash(IdentifierKind.PHONE, "+4930123456")
        assert len(stored.domain_hash or "") == HASH_HEX_DIGITS
        found = contacts.find_by_email(session, "Ada@Example.org")
        assert found is not None and found.id == contact_id
        assert contact_id is not None
        decision = gate.check_one(session, contact_id, channel="email", topic=None, purpose="marketing")
        assert not decision.allowed and decision.reason is not None and "unsubscribe" in decision.reason
        events = session.exec(
            select(ConsentEvent).where(col(ConsentEvent.address_hash).in_(lookup_hashes("ada@example.org")))
        ).all()
        assert len(events) == 1
        with pytest.raises(sa.exc.DatabaseError, match="append-only"):
            session.execute(sa.text("UPDATE consent_event SET method = 'staff'"))
        session.rollback()


def test_downgrade_below_0007_refuses_while_hashes_are_stored(db: Settings) -> None:
    """Code before 0007 computes 64-digit hashes and would no longer recognise anyone
    stored since (nor honour their opt-outs): the downgrade refuses and changes nothing."""
    import pytest
    import sqlalchemy as sa
    from sqlmodel import Session

    from app.models import Suppression

    engine = get_engine(db)
    with Session(engine) as session:
        session.add(
            Suppression(
                channel="email", kind="email", address_hash="ab" * 16, reason="complaint", origin="inbound"
            )
        )
        session.commit()
    cfg = alembic_config(db.resolved_database_url)
    with engine.connect() as conn:
        before = MigrationContext.configure(conn).get_current_revision()
    with pytest.raises(RuntimeError, match="cannot downgrade below 0007"), engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0006")
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == before
        assert conn.execute(sa.text("SELECT count(*) FROM suppression")).scalar() == 1


def test_0011_keeps_provenance_and_stores_it_as_written(db: Settings) -> None:
    """Provenance stored as ``jsonb`` before 0011 reads back the same after it; on
    PostgreSQL the columns are then ``json``, which keeps a value's text as it was written
    (key order included), and the downgrade turns them back into ``jsonb``."""
    import sqlalchemy as sa
    from sqlmodel import Session

    from app.models import ConsentEvent, Contact, utcnow

    cfg = alembic_config(db.resolved_database_url)
    engine = get_engine(db)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0010")
    detail = {"import_id": 7, "row": 12, "file": "leads.csv", "nested": {"b": 1, "a": [1, "x"]}}
    evidence = {"note": "letter of 3 May", "rows": [3, 9], "given_at": "2026-05-03"}
    with Session(engine) as session:
        contact = Contact(email="ada@example.org", source="import", source_detail=detail)
        session.add(contact)
        session.flush()
        session.add(
            ConsentEvent(
                contact_id=contact.id,
                channel="email",
                status="opted_in",
                method="import",
                actor="staff",
                evidence=evidence,
                occurred_at=utcnow(),
            )
        )
        session.commit()
        contact_id = contact.id
    upgrade(db)

    postgres = engine.dialect.name == "postgresql"
    with Session(engine) as session:
        stored = session.get(Contact, contact_id)
        assert stored is not None and stored.source_detail == detail
        event = session.scalars(sa.select(ConsentEvent)).one()
        assert event.evidence == evidence
        if postgres:
            types = dict(
                session.execute(
                    sa.text(
                        "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns "
                        "WHERE (table_name, column_name) IN "
                        "(('contact', 'source_detail'), ('consent_event', 'evidence'),"
                        " ('contact', 'attributes'))"
                    )
                ).all()
            )
            assert types == {
                "contact.source_detail": "json",
                "consent_event.evidence": "json",
                "contact.attributes": "jsonb",  # audiences filter on it
            }
            written = '{"z": 1, "a": 2}'
            session.execute(
                sa.text("UPDATE contact SET source_detail = CAST(:v AS json) WHERE id = :id"),
                {"v": written, "id": contact_id},
            )
            assert session.scalar(sa.text("SELECT source_detail::text FROM contact")) == written
            assert session.scalar(sa.text("SELECT source_detail ->> 'z' FROM contact")) == "1"
            session.rollback()
    if postgres:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0010")
        with engine.connect() as conn:
            kinds = conn.execute(
                sa.text(
                    "SELECT data_type FROM information_schema.columns WHERE "
                    "(table_name, column_name) IN "
                    "(('contact', 'source_detail'), ('consent_event', 'evidence'))"
                )
            ).scalars()
            assert set(kinds) == {"jsonb"}
            assert conn.execute(sa.text("SELECT evidence FROM consent_event")).scalar() == evidence
        upgrade(db)


def _insert_pre_0013(conn: object, email_hash: str, phone_hash: str, domain_hash: str) -> int:
    """A contact, its opt-out event and its suppression, as code before 0013 wrote them
    (plain SQL: the models describe the current schema)."""
    import sqlalchemy as sa

    from app.models import utcnow

    execute = conn.execute  # type: ignore[attr-defined]
    now = utcnow()
    contact_id = int(
        execute(
            sa.text(
                "INSERT INTO contact (email, email_hash, domain_hash, phone, phone_hash, attributes, "
                "age_confirmed, source, source_detail, created_at, updated_at) VALUES ('ada@example.org', "
                ":email_hash, :domain_hash, '+4930123456', :phone_hash, '{}', false, 'import', '{}', "
                ":now, :now) RETURNING id"
            ),
            {"email_hash": email_hash, "domain_hash": domain_hash, "phone_hash": phone_hash, "now": now},
        ).scalar_one()
    )
    execute(
        sa.text(
            "INSERT INTO consent_event (contact_id, address_hash, channel, status, method, actor, "
            "occurred_at) VALUES (:contact_id, :email_hash, 'email', 'opted_out', 'one_click', "
            "'recipient', :now)"
        ),
        {"contact_id": contact_id, "email_hash": email_hash, "now": now},
    )
    execute(
        sa.text(
            "INSERT INTO suppression (channel, kind, address_hash, reason, origin, created_at) "
            "VALUES ('email', 'email', :email_hash, 'unsubscribe', 'recipient', :now)"
        ),
        {"email_hash": email_hash, "now": now},
    )
    return contact_id


def test_0013_keyed_hashes_match_as_before(db: Settings) -> None:
    """Keyed hashes stored as hex text before 0013 still find, refuse and prove the same
    person after it; on PostgreSQL they are then ``uuid`` (16 bytes), read back as the same
    32 hex digits (by the ORM and by raw queries alike), and the downgrade gives the text
    back unchanged."""
    import sqlalchemy as sa
    from sqlmodel import Session, col, select

    from app.contacts import service as contacts
    from app.imports.bulk import bulk_for
    from app.models import ConsentEvent, Contact
    from app.suppression import gate
    from app.suppression.hashing import IdentifierKind, keyed_hash
    from app.suppression.service import lookup_hashes

    cfg = alembic_config(db.resolved_database_url)
    engine = get_engine(db)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0012")
    email_hash = keyed_hash(IdentifierKind.EMAIL, "ada@example.org")
    phone_hash = keyed_hash(IdentifierKind.PHONE, "+4930123456")
    domain_hash = keyed_hash(IdentifierKind.DOMAIN, "example.org")
    with engine.begin() as conn:
        contact_id = _insert_pre_0013(conn, email_hash, phone_hash, domain_hash)
    upgrade(db)

    postgres = engine.dialect.name == "postgresql"
    columns = (
        "('contact', 'email_hash'), ('contact', 'domain_hash'), ('contact', 'phone_hash'), "
        "('contact', 'postal_hash'), ('consent_event', 'address_hash'), ('suppression', 'address_hash'), "
        "('data_request', 'address_hash'), ('import_seen', 'key_hash')"
    )
    types_sql = sa.text(
        "SELECT DISTINCT data_type FROM information_schema.columns "
        f"WHERE (table_name, column_name) IN ({columns})"
    )
    with Session(engine) as session:
        stored = session.get(Contact, contact_id)
        assert stored is not None
        assert (stored.email_hash, stored.phone_hash, stored.domain_hash) == (
            email_hash,
            phone_hash,
            domain_hash,
        )
        found = contacts.find_by_email(session, "Ada@Example.org")
        assert found is not None and found.id == contact_id
        decision = gate.check_one(session, contact_id, channel="email", topic=None, purpose="marketing")
        assert not decision.allowed and decision.reason is not None and "unsubscribe" in decision.reason
        events = session.exec(
            select(ConsentEvent).where(col(ConsentEvent.address_hash).in_(lookup_hashes("ada@example.org")))
        ).all()
        assert [e.address_hash for e in events] == [email_hash]
        # The import's own queries (raw psycopg on PostgreSQL) see the same hex digits.
        bulk = bulk_for(session)
        rows = bulk.contacts("email", [email_hash], ("id", "email_hash", "phone_hash"))
        assert rows == [{"id": contact_id, "email_hash": email_hash, "phone_hash": phone_hash}]
        assert bulk.suppressions([email_hash]) == [(email_hash, "email", None, "unsubscribe")]
        if postgres:
            assert session.execute(types_sql).scalars().all() == ["uuid"]
    if not postgres:
        return
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0012")
    with engine.connect() as conn:
        assert conn.execute(types_sql).scalars().all() == ["character varying"]
        back = conn.execute(sa.text("SELECT email_hash, phone_hash FROM contact")).one()
        assert tuple(back) == (email_hash, phone_hash)
    upgrade(db)


@pytest.mark.parametrize("backend_url", ["postgresql"], indirect=True)  # SQLite keeps hex text
def test_0013_refuses_a_stored_value_that_is_not_a_keyed_hash(db: Settings) -> None:
    """A hash column holding something other than 32 hex digits cannot become ``uuid``:
    the upgrade stops, names the column, and leaves the database at 0012."""
    import sqlalchemy as sa

    engine = get_engine(db)
    cfg = alembic_config(db.resolved_database_url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0012")
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO suppression (channel, kind, address_hash, reason, origin, created_at) "
                "VALUES ('email', 'email', 'not-a-keyed-hash', 'complaint', 'inbound', now())"
            )
        )
    try:
        with pytest.raises(RuntimeError, match=r"suppression\.address_hash: 1 stored value"):
            upgrade(db)
        with engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == "0012"
    finally:
        # The database is shared by the rest of the session: back to the head revision.
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM suppression WHERE address_hash = 'not-a-keyed-hash'"))
        upgrade(db)
