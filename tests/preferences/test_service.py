"""Preferences and the consent ledger: append-only, and no write but the person's own
confirmed act can undo an opt-out."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, select

from app.auth.actor import Actor
from app.contacts import service as contacts
from app.contacts.schemas import ContactIn, PreferenceItem
from app.models import ConsentEvent, Suppression
from app.models.base import Channel, PreferenceStatus, Source
from app.preferences.service import PreferenceChange, apply_changes, list_preferences
from app.suppression import gate

STAFF = Actor(kind="staff", role="sales", ip="192.0.2.1", user_agent="pytest")
IN = PreferenceStatus.OPTED_IN
OUT = PreferenceStatus.OPTED_OUT


def _lead(session: Session, email: str = "lee@example.com", **kw: object) -> int:
    data = ContactIn(
        email=email,
        name="Lee",
        preferences=[PreferenceItem(channel=Channel.EMAIL, topic=None, status=IN)],
        consent_text="Send me news",
        consent_version="v1",
        source=Source.REGISTRATION,
        **kw,  # type: ignore[arg-type]
    )
    result = contacts.upsert(session, data, STAFF)
    assert result.contact.id is not None
    return result.contact.id


def test_every_change_is_in_the_ledger_with_its_evidence(session: Session) -> None:
    cid = _lead(session)
    contact = contacts.get(session, cid)
    apply_changes(
        session,
        contact,
        [PreferenceChange(Channel.EMAIL, "surveys", OUT)],
        method="phone",
        actor=STAFF,
        evidence={"call": "ticket-42"},
    )
    events = session.exec(
        select(ConsentEvent).where(ConsentEvent.contact_id == cid).order_by(ConsentEvent.id)
    ).all()
    assert [(e.channel, e.topic, e.status, e.method) for e in events] == [
        ("email", None, "opted_in", "form"),
        ("email", "surveys", "opted_out", "phone"),
    ]
    assert events[0].text_shown == "Send me news" and events[0].text_version == "v1"
    assert events[1].evidence == {"call": "ticket-42"} and events[1].ip == "192.0.2.1"
    assert events[1].previous_status is None and events[1].actor == "staff"
    # The opt-out also wrote a suppression keyed by the address hash, pointing at the event.
    supp = session.exec(select(Suppression).where(Suppression.consent_event_id == events[1].id)).one()
    assert (supp.channel, supp.topic, supp.reason) == ("email", "surveys", "manual_request")


def test_ledger_refuses_update_at_the_database(session: Session) -> None:
    _lead(session)
    session.commit()
    with pytest.raises(DBAPIError, match="append-only"):
        session.execute(text("UPDATE consent_event SET status = 'opted_out'"))
    session.rollback()


CLAIMS = st.lists(
    st.tuples(
        st.sampled_from(["import", "api", "registration", "survey", "manual"]),
        st.sampled_from([None, "special-offers", "surveys"]),
        st.sampled_from(["overwrite", "fill_empty"]),
        st.sampled_from(["lee@example.com", "LEE@Example.com", "Lee@EXAMPLE.COM"]),
    ),
    min_size=1,
    max_size=5,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(opt_out_topic=st.sampled_from([None, "special-offers"]), claims=CLAIMS)
def test_no_upsert_ever_lifts_an_opt_out(
    session: Session, opt_out_topic: str | None, claims: list[tuple[str, str | None, str, str]]
) -> None:
    try:
        cid = _lead(session)
        contact = contacts.get(session, cid)
        apply_changes(
            session,
            contact,
            [PreferenceChange(Channel.EMAIL, opt_out_topic, OUT)],
            method="link",
            actor=Actor.recipient(),
        )
        before = gate.check_one(
            session, cid, channel="email", topic=opt_out_topic or "special-offers", purpose="marketing"
        )
        assert not before.allowed
        for source, topic, merge, spelling in claims:
            result = contacts.upsert(
                session,
                ContactIn(
                    email=spelling,
                    source=Source(source),
                    merge=merge,  # type: ignore[arg-type]
                    preferences=[PreferenceItem(channel=Channel.EMAIL, topic=topic, status=IN)],
                ),
                STAFF,
            )
            assert result.contact.id == cid  # the same person, whatever the letter case
            after = gate.check_one(
                session, cid, channel="email", topic=opt_out_topic or "special-offers", purpose="marketing"
            )
            assert not after.allowed, (source, topic, after)
        statuses = {(p.channel, p.topic): p.status for p in list_preferences(session, cid)}
        assert statuses[("email", opt_out_topic)] == "opted_out"
    finally:
        session.rollback()


def test_the_person_can_opt_back_in_but_never_over_a_bounce(session: Session) -> None:
    from app.suppression.service import add_for_address

    cid = _lead(session)
    contact = contacts.get(session, cid)
    apply_changes(
        session,
        contact,
        [PreferenceChange(Channel.EMAIL, None, OUT)],
        method="one_click",
        actor=Actor.recipient(),
    )
    staff_try = apply_changes(
        session, contact, [PreferenceChange(Channel.EMAIL, None, IN)], method="staff", actor=STAFF
    )
    assert staff_try.refused and staff_try.refused[0][1] == "opted_out"
    own = apply_changes(
        session,
        contact,
        [PreferenceChange(Channel.EMAIL, None, IN)],
        method="preference_centre",
        actor=Actor.recipient(),
        confirmed_by_person=True,
    )
    assert own.applied
    assert gate.check_one(session, cid, channel="email", topic="surveys", purpose="marketing").allowed
    add_for_address(
        session,
        address="lee@example.com",
        channel="email",
        topic=None,
        reason="hard_bounce",
        method=None,
        note=None,
        actor=Actor.system(),
    )
    again = apply_changes(
        session,
        contact,
        [PreferenceChange(Channel.EMAIL, "surveys", IN)],
        method="preference_centre",
        actor=Actor.recipient(),
        confirmed_by_person=True,
    )
    assert again.refused == [(PreferenceChange(Channel.EMAIL, "surveys", IN), "suppressed:hard_bounce")]
