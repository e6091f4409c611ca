"""The SMTP / LMTP listener stores each message before it answers 250 (real aiosmtpd
server, real smtplib client)."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator

import pytest
from sqlmodel import Session, col, select

from app.db import get_engine
from app.inbound import service
from app.inbound.listener import InboundController, make_listener
from app.models import InboundMessage
from tests.inbound.helpers import DOMAIN, dsn, make_sent, reply
from tests.smtp_server import free_port


@pytest.fixture(params=["smtp", "lmtp"])
def listener(request: pytest.FixtureRequest, db) -> Iterator[InboundController]:
    controller = make_listener("127.0.0.1", free_port(), lmtp=request.param == "lmtp")
    controller.start()
    yield controller
    controller.stop()
    from workers.broker import broker

    broker.flush_all()


def _client(controller: InboundController) -> smtplib.SMTP:
    if controller.lmtp:
        client = smtplib.LMTP("127.0.0.1", controller.port, timeout=10)
        client.ehlo_or_helo_if_needed()
        return client
    return smtplib.SMTP("127.0.0.1", controller.port, timeout=10)


def crlf(raw: bytes) -> bytes:
    """Mail travels with CRLF line ends (smtplib sends bytes as they are)."""
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _rows(db) -> list[InboundMessage]:
    with Session(get_engine(db)) as s:
        return list(s.exec(select(InboundMessage).order_by(col(InboundMessage.id))))


def test_bounce_over_smtp_is_stored_before_250_and_classified(listener, session, db) -> None:
    sent = make_sent(session)
    with _client(listener) as client:
        refused = client.sendmail("", [sent.bounce_address], crlf(dsn("anna@example.org")))
    assert refused == {}
    [row] = _rows(db)
    assert row.envelope_to == sent.bounce_address and row.envelope_from == "" and row.kind == "pending"
    assert row.detail["source"] == ("lmtp" if listener.lmtp else "smtp")
    assert service.process(row.id or 0) == "bounce"
    assert _rows(db)[0].contact_id == sent.contact_id


def test_one_row_per_recipient_and_foreign_domains_refused(listener, session, db) -> None:
    sent = make_sent(session)
    raw = crlf(reply("Please unsubscribe me", to=sent.reply_address))
    recipients = [sent.reply_address, sent.unsubscribe_address, "x@elsewhere.test"]
    with _client(listener) as client:
        if listener.lmtp:  # RFC 2033: one DATA reply per accepted recipient (smtplib reads one)
            client.mail("anna@example.org")
            codes = [client.rcpt(r)[0] for r in recipients]
            assert codes == [250, 250, 550]
            replies = [client.data(raw), client.getreply()]
            assert [code for code, _text in replies] == [250, 250]
            assert replies[0][1] != replies[1][1]  # each recipient its own stored message
        else:
            refused = client.sendmail("anna@example.org", recipients, raw)
            assert list(refused) == ["x@elsewhere.test"] and refused["x@elsewhere.test"][0] == 550
    rows = _rows(db)
    assert sorted(r.envelope_to or "" for r in rows) == sorted([sent.reply_address, sent.unsubscribe_address])
    assert all(r.raw == raw for r in rows)
    assert {service.process(r.id or 0) for r in rows} == {"optout"}


def test_every_recipient_refused_means_nothing_stored(listener, db) -> None:
    with _client(listener) as client, pytest.raises(smtplib.SMTPRecipientsRefused):
        client.sendmail("a@example.org", ["x@elsewhere.test"], b"Subject: x\r\n\r\nhi\r\n")
    assert _rows(db) == []
    assert DOMAIN in listener.handler.settings.accepted_domains()  # type: ignore[attr-defined]
