"""Erasure reaches inbound mail: the raw message of an erased person is blanked, the
suppression their reply caused stays."""

from __future__ import annotations

from sqlmodel import Session, select

from app.auth.actor import Actor
from app.contacts import service as contacts
from app.inbound import service as inbound
from app.models import InboundMessage, Suppression
from tests.inbound.helpers import make_sent, reply


def test_erasure_blanks_the_persons_inbound_mail(session: Session, db) -> None:  # type: ignore[no-untyped-def]
    sent = make_sent(session, "eve@example.org")
    raw = reply("Please remove me from your list.", to=sent.reply_address, sender="eve@example.org")
    stored, _created = inbound.store(
        session, inbound.Received.of(raw), envelope_from="eve@example.org", envelope_to=sent.reply_address
    )
    session.commit()
    assert stored.id is not None
    message_id = stored.id
    assert inbound.process(message_id) == "optout"
    session.expire_all()
    message = session.get(InboundMessage, message_id)
    assert message is not None and message.contact_id == sent.contact_id and b"remove me" in message.raw
    contacts.erase(session, contacts.get(session, sent.contact_id), Actor(kind="staff", role="compliance"))
    session.commit()
    session.expire_all()
    message = session.get(InboundMessage, message_id)
    assert message is not None and message.raw == b"" and message.envelope_from is None
    assert message.detail == {"erased": True, "kind": "optout"}
    reasons = {s.reason for s in session.exec(select(Suppression).where(Suppression.lifted_at.is_(None)))}  # type: ignore[union-attr]
    assert {"reply", "erasure"} <= reasons
