"""References to a contact: foreign keys on SQLite, statement-level triggers on PostgreSQL
(migration 0009). Either way a preference or a consent event never names a contact that
does not exist, a contact's deletion takes its preferences along, and the ledger's events
keep the append-only rule."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from app.config import Settings
from app.db import get_engine
from app.models import ConsentEvent, Contact, Preference, utcnow


def _contact(session: Session, email: str = "ada@example.org") -> int:
    contact = Contact(email=email, source="import")
    session.add(contact)
    session.commit()
    assert contact.id is not None
    return contact.id


def _event(contact_id: int | None) -> ConsentEvent:
    return ConsentEvent(
        contact_id=contact_id,
        channel="email",
        status="opted_in",
        method="import",
        actor="staff",
        occurred_at=utcnow(),
    )


def test_a_preference_or_event_for_a_missing_contact_is_refused(session: Session) -> None:
    known = _contact(session)
    for row in (
        Preference(contact_id=known + 1000, channel="email", status="opted_in"),
        _event(known + 1000),
    ):
        session.add(row)
        with pytest.raises(sa.exc.IntegrityError):
            session.commit()
        session.rollback()
    # One missing contact among many rows of one statement is enough to refuse them all.
    rows = [
        {"contact_id": known, "channel": "email", "topic": f"t{i}", "status": "opted_in"} for i in range(50)
    ]
    rows[37]["contact_id"] = known + 1000
    with pytest.raises(sa.exc.IntegrityError):
        session.execute(sa.insert(Preference), rows)
    session.rollback()
    assert session.scalar(sa.select(sa.func.count()).select_from(Preference)) == 0
    session.add(Preference(contact_id=known, channel="email", status="opted_in"))
    session.add(_event(known))
    session.add(_event(None))  # an event whose contact was erased names none
    session.commit()


def test_a_preference_cannot_move_to_a_missing_contact(session: Session) -> None:
    known = _contact(session)
    pref = Preference(contact_id=known, channel="email", status="opted_in")
    session.add(pref)
    session.commit()
    with pytest.raises(sa.exc.IntegrityError):
        session.execute(sa.update(Preference).values(contact_id=known + 1000))
    session.rollback()
    session.execute(sa.update(Preference).values(status="opted_out"))  # other changes are fine
    session.commit()


def test_deleting_a_contact_takes_its_preferences_and_is_refused_while_events_name_it(
    session: Session,
) -> None:
    gone, kept = _contact(session), _contact(session, "bob@example.org")
    session.add_all(
        [
            Preference(contact_id=gone, channel="email", status="opted_in"),
            Preference(contact_id=gone, channel="email", topic="news", status="opted_in"),
            Preference(contact_id=kept, channel="email", status="opted_in"),
        ]
    )
    session.commit()
    session.execute(sa.delete(Contact).where(Contact.id == gone))  # type: ignore[arg-type]
    session.commit()
    left = session.scalars(sa.select(Preference.contact_id)).all()
    assert left == [kept]
    session.add(_event(kept))
    session.commit()
    with pytest.raises(sa.exc.DatabaseError, match="append-only"):
        session.execute(sa.delete(Contact).where(Contact.id == kept))  # type: ignore[arg-type]
    session.rollback()


@pytest.mark.parametrize("backend_url", ["postgresql"], indirect=True)
def test_a_referenced_contact_keeps_its_id(session: Session) -> None:
    known = _contact(session)
    session.add(Preference(contact_id=known, channel="email", status="opted_in"))
    session.commit()
    with pytest.raises(sa.exc.IntegrityError):
        session.execute(sa.update(Contact).where(Contact.id == known).values(id=known + 1000))  # type: ignore[arg-type]
    session.rollback()


@pytest.mark.parametrize("backend_url", ["postgresql"], indirect=True)
def test_a_new_reference_holds_its_contact_against_a_concurrent_delete(db: Settings) -> None:
    """As a foreign key's check does, writing a preference locks its contact (FOR KEY
    SHARE) until the transaction ends: a delete of that contact waits; and a preference
    written while the contact's delete is in flight is refused once the delete commits."""
    engine = get_engine(db)
    with Session(engine) as setup:
        known, other = _contact(setup), _contact(setup, "bob@example.org")
    with engine.connect() as writer, engine.connect() as deleter:
        writer.execute(sa.insert(Preference).values(contact_id=known, channel="email", status="opted_in"))
        deleter.execute(sa.text("SET lock_timeout = '300ms'"))
        with pytest.raises(sa.exc.OperationalError, match="lock timeout"):
            deleter.execute(sa.delete(Contact).where(Contact.id == known))  # type: ignore[arg-type]
        deleter.rollback()
        writer.commit()

        deleter.execute(sa.delete(Contact).where(Contact.id == other))  # type: ignore[arg-type]
        failure: list[BaseException] = []

        def write() -> None:
            try:
                writer.execute(
                    sa.insert(Preference).values(contact_id=other, channel="email", status="opted_in")
                )
                writer.commit()
            except BaseException as exc:
                failure.append(exc)
                writer.rollback()

        thread = threading.Thread(target=write)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive(), "the write did not wait for the delete in flight"
        deleter.commit()
        thread.join(10)
        assert len(failure) == 1 and isinstance(failure[0], sa.exc.IntegrityError), failure
    with Session(engine) as check:
        assert check.scalars(sa.select(Preference.contact_id)).all() == [known]


@pytest.mark.parametrize("backend_url", ["postgresql"], indirect=True)
def test_one_statement_naming_new_and_stored_contacts_locks_the_stored_ones(db: Settings) -> None:
    """In one statement, a contact this transaction wrote needs no lock (nobody else can
    see it), and one stored before is locked against a concurrent delete; a missing one is
    named in the error, the smallest first."""
    engine = get_engine(db)
    with Session(engine) as setup:
        stored = _contact(setup)
    with engine.connect() as writer, engine.connect() as deleter:
        new = writer.execute(
            sa.insert(Contact).values(email="new@example.org", source="import").returning(Contact.id)  # type: ignore[arg-type]
        ).scalar_one()
        writer.execute(
            sa.insert(Preference),
            [
                {"contact_id": stored, "channel": "email", "topic": None, "status": "opted_in"},
                {"contact_id": new, "channel": "email", "topic": None, "status": "opted_in"},
                {"contact_id": new, "channel": "email", "topic": "news", "status": "opted_in"},
            ],
        )
        deleter.execute(sa.text("SET lock_timeout = '300ms'"))
        with pytest.raises(sa.exc.OperationalError, match="lock timeout"):
            deleter.execute(sa.delete(Contact).where(Contact.id == stored))  # type: ignore[arg-type]
        deleter.rollback()
        with pytest.raises(sa.exc.IntegrityError, match=rf"Key \(contact_id\)=\({new + 5}\) is not present"):
            writer.execute(  # one statement, four rows
                sa.text(
                    "INSERT INTO consent_event (contact_id, channel, status, method, actor) "
                    "SELECT id, 'email', 'opted_in', 'import', 'staff' "
                    "FROM unnest(CAST(:ids AS int[])) AS t(id)"
                ),
                {"ids": [stored, new + 9, new, new + 5]},
            )
        writer.rollback()
    with Session(engine) as check:
        assert check.scalars(sa.select(Preference.contact_id)).all() == []
        assert check.scalars(sa.select(Contact.id)).all() == [stored]


def _actors(session: Session) -> tuple[int, int]:
    """A user and an API token (written directly: no audit entry names them)."""
    from app.models import ApiToken, User

    user = User(email="staff@example.org", name="Staff", role="admin")
    session.add(user)
    session.flush()
    token = ApiToken(name="sales", role="admin", token_hash="ab" * 16, prefix="lw_x", user_id=None)
    session.add(token)
    session.commit()
    assert user.id is not None and token.id is not None
    return user.id, token.id


def test_a_consent_event_names_only_actors_that_exist_and_they_stay(session: Session) -> None:
    """Foreign keys on SQLite, statement-level triggers on PostgreSQL (migration 0012): an
    event naming a missing user or token is refused, alone or among many rows; a user or
    token an event names cannot be deleted."""
    from app.models import ApiToken, User

    contact = _contact(session)
    user_id, token_id = _actors(session)
    for column, missing in (("actor_user_id", user_id + 100), ("actor_token_id", token_id + 100)):
        event = _event(contact)
        setattr(event, column, missing)
        session.add(event)
        with pytest.raises(sa.exc.IntegrityError):
            session.commit()
        session.rollback()
        rows = [
            {"contact_id": contact, "channel": "email", "status": "opted_in", "method": "import"}
            | {
                "actor": "staff",
                "occurred_at": utcnow(),
                "actor_user_id": user_id,
                "actor_token_id": token_id,
            }
            for _ in range(30)
        ]
        rows[17][column] = missing
        with pytest.raises(sa.exc.IntegrityError):
            session.execute(sa.insert(ConsentEvent), rows)
        session.rollback()
    assert session.scalar(sa.select(sa.func.count()).select_from(ConsentEvent)) == 0

    event = _event(contact)
    event.actor_user_id, event.actor_token_id = user_id, token_id
    session.add(event)
    session.commit()
    for model, key in ((User, user_id), (ApiToken, token_id)):
        with pytest.raises(sa.exc.IntegrityError):
            session.execute(sa.delete(model).where(model.id == key))  # type: ignore[arg-type]
            session.commit()
        session.rollback()
    assert session.get(User, user_id) is not None and session.get(ApiToken, token_id) is not None


@pytest.mark.parametrize("backend_url", ["postgresql"], indirect=True)
def test_an_events_actor_is_held_against_a_concurrent_delete_and_keeps_its_id(db: Settings) -> None:
    from app.models import ApiToken, User

    engine = get_engine(db)
    with Session(engine) as setup:
        contact = _contact(setup)
        user_id, token_id = _actors(setup)
    with engine.connect() as writer, engine.connect() as deleter:
        writer.execute(
            sa.insert(ConsentEvent).values(
                contact_id=contact,
                channel="email",
                status="opted_in",
                method="import",
                actor="staff",
                occurred_at=utcnow(),
                actor_token_id=token_id,
            )
        )
        deleter.execute(sa.text("SET lock_timeout = '300ms'"))
        with pytest.raises(sa.exc.OperationalError, match="lock timeout"):
            deleter.execute(sa.delete(ApiToken).where(ApiToken.id == token_id))  # type: ignore[arg-type]
        deleter.rollback()
        # A token's other columns change freely (last_used_at on every request).
        deleter.execute(sa.update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=utcnow()))  # type: ignore[arg-type]
        deleter.commit()
        writer.commit()
    with engine.connect() as conn:
        with pytest.raises(sa.exc.IntegrityError, match="changes id"):
            conn.execute(sa.update(ApiToken).where(ApiToken.id == token_id).values(id=token_id + 50))  # type: ignore[arg-type]
        conn.rollback()
        conn.execute(sa.update(User).where(User.id == user_id).values(id=user_id + 50))  # type: ignore[arg-type]
        conn.commit()  # no event names this user: its id may change
