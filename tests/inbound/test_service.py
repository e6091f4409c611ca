"""Store first, classify in the actor, apply the effects with the stored message as
evidence — on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlmodel import Session, col, select

from app.config import Settings
from app.db import get_engine, session_scope
from app.inbound import service
from app.inbound.settings import InboundSettings, use_inbound_settings
from app.models import Campaign, ConsentEvent, Delivery, InboundMessage, Preference, Suppression
from app.suppression.service import list_for_address
from tests.inbound.helpers import DOMAIN, arf, campaign_headers, dsn, make_contact, make_sent, reply


def _row(db: Settings, message_id: int) -> InboundMessage:
    with Session(get_engine(db)) as s:
        row = s.get(InboundMessage, message_id)
        assert row is not None
        return row


def _suppressions(db: Settings, address: str) -> list[Suppression]:
    with session_scope(db) as s:
        return list_for_address(s, address)


def _delivery(db: Settings, delivery_id: int) -> Delivery:
    with Session(get_engine(db)) as s:
        row = s.get(Delivery, delivery_id)
        assert row is not None
        return row


def test_hard_bounce_to_the_verp_address_suppresses_with_evidence(db, session, receive) -> None:
    sent = make_sent(session)
    message_id = receive(dsn("anna@example.org"), envelope_to=sent.bounce_address)
    assert _row(db, message_id).kind == "pending"  # stored first
    assert service.process(message_id) == "bounce"
    row = _row(db, message_id)
    assert row.kind == "bounce" and row.detail["bounce_type"] == "hard"
    assert row.contact_id == sent.contact_id and row.delivery_id == sent.delivery_id
    assert row.detail["attribution"] == "token:envelope"
    [supp] = _suppressions(db, "anna@example.org")
    assert supp.reason == "hard_bounce" and supp.inbound_message_id == message_id
    assert supp.delivery_id == sent.delivery_id
    with Session(get_engine(db)) as s:
        event = s.get(ConsentEvent, supp.consent_event_id)
    assert (
        event is not None and event.method == "bounce" and event.evidence["inbound_message_id"] == message_id
    )
    assert _delivery(db, sent.delivery_id).status == "bounced"
    kinds = {e["type"] for e in row.detail["effects"]}
    assert {"suppression", "consent_event", "delivery_bounced"} <= kinds


def test_bounce_attributed_by_our_message_id_in_the_returned_headers(db, session, receive) -> None:
    sent = make_sent(session)
    headers = campaign_headers(None).replace("<lw.1.0123456789ab@listwarden.example>", sent.message_id)
    message_id = receive(dsn("someone-else@example.org", original_headers=headers))
    service.process(message_id)
    row = _row(db, message_id)
    assert row.detail["attribution"] == "message_id"
    assert row.contact_id == sent.contact_id
    assert _suppressions(db, "anna@example.org")


def test_forged_message_id_and_token_attribute_nothing(db, session, receive) -> None:
    sent = make_sent(session)
    forged_id = sent.message_id.replace("0123456789ab", "ffffffffffff")
    headers = campaign_headers(None).replace("<lw.1.0123456789ab@listwarden.example>", forged_id)
    message_id = receive(
        dsn("nobody@example.net", original_headers=headers), envelope_to=f"bounce+{'a' * 56}@{DOMAIN}"
    )
    service.process(message_id)
    row = _row(db, message_id)
    assert row.kind == "bounce" and row.contact_id is None
    assert row.detail["effects"][0]["type"] == "none"
    assert not _suppressions(db, "anna@example.org")


def test_bounce_attributed_by_the_failed_recipient(db, session, receive) -> None:
    make_contact(session, "bob@example.net")
    session.commit()
    message_id = receive(dsn("Bob@Example.net"))
    service.process(message_id)
    row = _row(db, message_id)
    assert row.detail["attribution"] == "failed_recipient"
    assert [s.reason for s in _suppressions(db, "bob@example.net")] == ["hard_bounce"]


def test_delay_warning_has_no_effect(db, session, receive) -> None:
    sent = make_sent(session)
    raw = dsn("anna@example.org", status="4.4.1", action="delayed", diagnostic="smtp; 451 4.4.1 try later")
    message_id = receive(raw, envelope_to=sent.bounce_address)
    service.process(message_id)
    row = _row(db, message_id)
    assert row.kind == "bounce" and row.detail["bounce_type"] == "delayed"
    assert row.detail["effects"][0]["type"] == "none"
    assert not _suppressions(db, "anna@example.org")
    assert _delivery(db, sent.delivery_id).status == "sent"


def _soft(recipient: str) -> bytes:
    return dsn(recipient, status="5.2.2", diagnostic="smtp; 552 5.2.2 <{rcpt}>: Mailbox full")


def test_soft_bounces_count_and_the_third_within_the_window_suppresses(db, session, receive) -> None:
    first = make_sent(session)
    contact = first.contact
    deliveries = [first.delivery]
    for n in range(2):
        campaign = Campaign(name=f"C{n}", subject="s", html="h", text="t", status="sent")
        session.add(campaign)
        session.flush()
        assert campaign.id is not None and contact.id is not None
        d = Delivery(campaign_id=campaign.id, contact_id=contact.id, status="sent")
        session.add(d)
        session.flush()
        d.message_id = f"<lw.{d.id}.00000000000{n}@{DOMAIN}>"
        deliveries.append(d)
    session.commit()
    counts = []
    for n, delivery in enumerate(deliveries):
        headers = campaign_headers(None).replace(
            "<lw.1.0123456789ab@listwarden.example>", str(delivery.message_id)
        )
        raw = _soft("anna@example.org").replace(campaign_headers().encode(), headers.encode())
        message_id = receive(raw)
        service.process(message_id)
        row = _row(db, message_id)
        assert row.detail["bounce_type"] == "soft"
        counts.append(next(e["count"] for e in row.detail["effects"] if e["type"] == "soft_bounce"))
        if n < 2:
            assert not _suppressions(db, "anna@example.org"), n
    assert counts == [1, 2, 3]
    [supp] = _suppressions(db, "anna@example.org")
    assert supp.reason == "hard_bounce" and "3 soft bounces" in (supp.note or "")


def test_soft_bounces_of_one_delivery_count_once(db, session, receive) -> None:
    sent = make_sent(session)
    for n in range(3):
        raw = _soft("anna@example.org").replace(b"Date:", f"X-Report: {n}\nDate:".encode())
        message_id = receive(raw, envelope_to=sent.bounce_address)
        service.process(message_id)
    assert not _suppressions(db, "anna@example.org")


def test_soft_bounce_threshold_is_configurable(db, session, receive) -> None:
    use_inbound_settings(InboundSettings(soft_bounce_threshold=1))
    sent = make_sent(session)
    message_id = receive(_soft("anna@example.org"), envelope_to=sent.bounce_address)
    service.process(message_id)
    assert [s.reason for s in _suppressions(db, "anna@example.org")] == ["hard_bounce"]


def test_complaint_suppresses_and_auth_failure_report_does_not(db, session, receive) -> None:
    sent = make_sent(session)
    message_id = receive(arf("redacted@hotmail.example", original_headers=campaign_headers(sent)))
    assert service.process(message_id) == "complaint"
    row = _row(db, message_id)
    assert row.contact_id == sent.contact_id and row.detail["feedback_type"] == "abuse"
    [supp] = _suppressions(db, "anna@example.org")
    assert supp.reason == "complaint" and supp.inbound_message_id == message_id

    other = make_sent(session, "carl@example.org", campaign=session.get(Campaign, sent.delivery.campaign_id))
    message_id = receive(
        arf("carl@example.org", feedback_type="auth-failure", original_headers=campaign_headers(other))
    )
    service.process(message_id)
    assert _row(db, message_id).kind == "complaint"
    assert not _suppressions(db, "carl@example.org")


def test_opt_out_reply_records_consent_and_suppression(db, session, receive) -> None:
    sent = make_sent(session)
    raw = reply("Bitte melden Sie mich ab.", to=sent.reply_address, in_reply_to=sent.message_id)
    message_id = receive(raw, envelope_to=sent.reply_address)
    assert service.process(message_id) == "optout"
    row = _row(db, message_id)
    assert row.contact_id == sent.contact_id and row.detail["language"] == "de"
    with Session(get_engine(db)) as s:
        prefs = list(s.exec(select(Preference).where(Preference.contact_id == sent.contact_id)))
        events = list(s.exec(select(ConsentEvent).where(ConsentEvent.contact_id == sent.contact_id)))
    assert [(p.channel, p.topic, p.status) for p in prefs] == [("email", None, "opted_out")]
    [event] = events
    assert event.method == "reply" and event.actor == "recipient"
    assert event.evidence["inbound_message_id"] == message_id
    [supp] = _suppressions(db, "anna@example.org")
    assert supp.reason == "reply" and supp.inbound_message_id == message_id
    assert {"preference", "consent_event", "suppression"} <= {e["type"] for e in row.detail["effects"]}


def test_reply_that_quotes_our_footer_changes_nothing(db, session, receive) -> None:
    sent = make_sent(session)
    message_id = receive(reply("Can I still get the discount on Sunday?", to=sent.reply_address))
    assert service.process(message_id) == "reply"
    row = _row(db, message_id)
    assert row.contact_id == sent.contact_id
    assert row.detail["text"] == "Can I still get the discount on Sunday?"
    assert not _suppressions(db, "anna@example.org")


def test_mail_to_the_unsubscribe_address_opts_out(db, session, receive) -> None:
    sent = make_sent(session)
    raw = reply("", to=sent.unsubscribe_address, subject="unsubscribe", quote=False)
    message_id = receive(raw, envelope_to=sent.unsubscribe_address)
    service.process(message_id)
    row = _row(db, message_id)
    assert row.kind == "optout" and row.detail["reason"] == "list_unsubscribe"
    assert [s.reason for s in _suppressions(db, "anna@example.org")] == ["reply"]


def test_opt_out_from_an_unknown_sender_is_kept_by_hash(db, receive) -> None:
    message_id = receive(reply("Please remove me", sender="stranger@example.com", quote=False))
    service.process(message_id)
    [supp] = _suppressions(db, "Stranger@example.com")
    assert supp.reason == "reply" and supp.origin == "recipient" and supp.inbound_message_id == message_id


def test_auto_reply_changes_nothing(db, session, receive) -> None:
    sent = make_sent(session)
    raw = reply(
        "I am out of the office. Unsubscribe me? No.",
        to=sent.reply_address,
        subject="Automatic reply: Spring",
    )
    message_id = receive(raw, envelope_to=sent.bounce_address)
    assert service.process(message_id) == "autoreply"
    assert _row(db, message_id).detail["effects"] == []
    assert not _suppressions(db, "anna@example.org")


def test_same_bytes_are_stored_once_and_processing_is_idempotent(db, session, receive) -> None:
    sent = make_sent(session)
    raw = dsn("anna@example.org")
    first = receive(raw, envelope_to=sent.bounce_address)
    assert receive(raw, envelope_to=sent.bounce_address) == first
    assert service.process(first) == "bounce"
    assert service.process(first) == "bounce"  # already processed: nothing more
    assert len(_suppressions(db, "anna@example.org")) == 1
    with Session(get_engine(db)) as s:
        assert len(list(s.exec(select(InboundMessage)))) == 1
        assert len(list(s.exec(select(ConsentEvent)))) == 1


def test_a_processing_failure_leaves_the_message_stored_and_retryable(
    db, session, receive, monkeypatch
) -> None:
    sent = make_sent(session)
    message_id = receive(dsn("anna@example.org"), envelope_to=sent.bounce_address)

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("database hiccup")

    monkeypatch.setattr(service, "_bounce_effects", boom)
    with pytest.raises(RuntimeError):
        service.process(message_id)
    row = _row(db, message_id)
    assert row.kind == "pending" and row.processed_at is None and row.attempts == 1
    assert row.error is not None and "database hiccup" in row.error
    assert not _suppressions(db, "anna@example.org")
    monkeypatch.undo()
    assert service.process(message_id) == "bounce"
    row = _row(db, message_id)
    assert row.attempts == 2 and row.error is None and row.processed_at is not None


def test_stale_pending_messages_are_requeued(db, receive) -> None:
    from datetime import timedelta

    from app.models import utcnow

    message_id = receive(reply("hello", quote=False))
    with Session(get_engine(db)) as s:
        row = s.get(InboundMessage, message_id)
        assert row is not None
        row.received_at = utcnow() - timedelta(hours=1)
        s.add(row)
        s.commit()
    with session_scope(db) as s:
        assert service.requeue_stale(s, older_than_seconds=60) == [message_id]


def test_erased_contact_bounce_is_not_attributed_to_anyone(db, session, receive) -> None:
    sent = make_sent(session)
    contact = sent.contact
    contact.email = None
    contact.email_hash = None
    session.add(contact)
    session.commit()
    message_id = receive(dsn("anna@example.org"), envelope_to=sent.bounce_address)
    service.process(message_id)
    row = _row(db, message_id)
    assert row.contact_id == sent.contact_id
    assert row.detail["effects"][-1]["type"] == "none"


def test_listing_by_kind(db, session, receive) -> None:
    sent = make_sent(session)
    ids = [
        receive(reply("What time do you open?", to=sent.reply_address)),
        receive(dsn("anna@example.org"), envelope_to=sent.bounce_address),
    ]
    for message_id in ids:
        service.process(message_id)
    from app.inbound import repository

    with Session(get_engine(db)) as s:
        replies = repository.search(s, kind="reply")
        assert [r.id for r in replies] == [ids[0]]
        assert repository.count_by_kind(s) == {"reply": 1, "bounce": 1}
        assert list(s.exec(select(InboundMessage).order_by(col(InboundMessage.id))))
