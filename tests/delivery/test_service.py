"""Building a campaign message (``build_envelope``): the prepared path gives, byte for
byte, the message ``OutgoingMessage`` assembles from the same values, with tokens that
name the contact and the delivery, a DKIM signature that verifies and covers the
unsubscribe headers, and no header a contact's data could add."""

from __future__ import annotations

import base64
import itertools
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlmodel import Session, select

from app.campaigns.schemas import CampaignIn
from app.config import Settings
from app.delivery.message import OutgoingMessage, ascii_address, format_address
from app.delivery.repository import CONTACT_COLUMNS
from app.delivery.service import build_envelope, recipient_links, send_context, template_context
from app.models import Campaign
from app.recipients.tokens import (
    TokenKind,
    make_address_token,
    read_address_token,
    read_url_token,
)

_ids = itertools.count(900_000)

CONTACTS: list[dict[str, Any]] = [
    {"email": "person1@example.com", "name": "Person 1"},
    {"email": "zoe@example.org", "name": "Zoë Ünïcödé", "company": "Acme & Co", "zip": "10115"},
    {"email": "anna@example.net", "name": "Anna  Tab\tbed", "city": "Köln"},
    {"email": "eve@example.com", "name": "Eve\r\nBcc: victim@example.com", "company": "X\r\nY: z"},
    {"email": "max@bücher.example", "name": None},
    {"email": "o'neil@example.com", "name": 'Dr. "Quoted", Jr.'},
    {"email": "jürgen@example.com", "name": "Jürgen"},
]


def _contact(values: dict[str, Any]) -> dict[str, Any]:
    contact = dict.fromkeys(CONTACT_COLUMNS)
    contact.update(attributes={}, source="import", **values)
    return contact


def _reference(ctx: Any, delivery_id: int, contact_id: int, contact: dict[str, Any], data: bytes) -> bytes:
    """The message as the general path makes it, from the same values (the time and the
    Message-ID read back from ``data``)."""
    links = recipient_links(ctx.public_url, contact_id, delivery_id)
    rendered = ctx.compiled.render_encoded(template_context(ctx, contact, links))
    unsubscribe = links["unsubscribe_url"].rpartition("/")[2]
    mailto = make_address_token(TokenKind.UNSUBSCRIBE, contact_id, delivery_id)
    same = read_address_token(mailto, TokenKind.UNSUBSCRIBE)
    assert read_url_token(unsubscribe, TokenKind.UNSUBSCRIBE) == same
    head = data.partition(b"\r\n\r\n")[0].decode()
    date = re.search(r"\r\nDate: ([^\r]*)", head)
    message_id = re.search(r"\r\nMessage-ID: ([^\r]*)", head)
    stamp = re.search(r" t=(\d+);", head)
    assert date and message_id and stamp
    email = str(contact["email"])
    bounce = make_address_token(TokenKind.BOUNCE, contact_id, delivery_id)
    return OutgoingMessage(
        mail_from=f"bounce+{bounce}@{ctx.bounce_domain}",
        rcpt_to=ascii_address(email),
        from_header=ctx.from_header,
        to_header=format_address(contact.get("name"), email),
        subject=rendered.subject,
        html="",
        text="",
        html_qp=rendered.html,
        text_qp=rendered.text,
        message_id=message_id.group(1),
        date=date.group(1),
        reply_to=f"reply+{make_address_token(TokenKind.REPLY, contact_id, delivery_id)}@{ctx.reply_domain}",
        list_unsubscribe=f"<{links['unsubscribe_url']}>, <mailto:unsubscribe+{mailto}@{ctx.reply_domain}>",
        one_click=True,
        list_id=ctx.list_id,
        feedback_id=f"{ctx.campaign_id}:{ctx.topic or 'all'}:listwarden",
    ).to_bytes(ctx.signer, timestamp=int(stamp.group(1)))


@pytest.mark.parametrize("values", CONTACTS, ids=range(len(CONTACTS)))
def test_campaign_messages_are_what_the_general_path_assembles(
    db: Settings, session: Session, tmp_path: Path, values: dict[str, Any]
) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    pem = tmp_path / "dkim.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    record = b"v=DKIM1; k=ed25519; p=" + base64.b64encode(
        key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    settings = db.model_copy(update={"dkim_key_path": str(pem), "dkim_domain": "example.com"})
    data = CampaignIn(
        name="Offers",
        topic="special-offers",
        purpose="marketing",
        subject="Hello {{ first_name }}, offers for {{ company or 'you' }}",
        html=(
            "<h1>Hello {{ name }}</h1><p>{{ company or 'you' }} in {{ city }}"
            " <a href='https://s.example/?z={{ zip }}'>shop</a></p>"
        ),
    )
    campaign = Campaign(
        id=next(_ids), **data.model_dump(exclude={"audience"}), audience={}, updated_at=datetime.now(UTC)
    )
    ctx = send_context(session, campaign, settings)
    contact = _contact(values)
    envelope, message_id = build_envelope(ctx, 4711, 815, contact)
    assert envelope.data == _reference(ctx, 4711, 815, contact, envelope.data)
    assert dkim.verify(envelope.data, dnsfunc=lambda name, timeout=5: record)
    signed = envelope.data.split(b" h=", 1)[1].split(b";", 1)[0].decode().split(":")
    assert {"from", "subject", "list-unsubscribe", "list-unsubscribe-post"} <= set(signed)
    head = envelope.data.partition(b"\r\n\r\n")[0]
    names = [line.split(b":", 1)[0] for line in head.split(b"\r\n") if line[:1] not in (b" ", b"\t")]
    assert b"Bcc" not in names and b"Y" not in names  # the contact's data added no header
    assert len(names) == len(set(names))
    assert f"Message-ID: {message_id}\r\n".encode() in head
    bounce = envelope.mail_from.removeprefix("bounce+").partition("@")[0]
    payload = read_address_token(bounce, TokenKind.BOUNCE)
    assert (payload.contact_id, payload.delivery_id) == (815, 4711)
    assert envelope.smtputf8 is not str(values["email"]).partition("@")[0].isascii()


def test_a_slice_loads_the_campaign_once_and_checks_its_status_every_micro_batch(
    db: Settings, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each micro-batch reads the campaign's status and version (a pause or cancel stops
    the slice at the next one); the campaign itself is loaded again only when it changed."""
    from sqlalchemy import update

    from app.auth.actor import Actor
    from app.campaigns import service as campaigns
    from app.delivery import service as delivery
    from app.delivery.transport import Outcome
    from app.models import Delivery
    from tests.campaigns.helpers import CAMPAIGN, bulk_contacts

    bulk_contacts(session, [f"p{i}@example.com" for i in range(9)])
    monkeypatch.setattr("app.campaigns.dispatch.enqueue_build", lambda cid: None)
    campaign = campaigns.create(session, CampaignIn(**CAMPAIGN), Actor.system())
    campaigns.send(session, campaign, Actor.system())
    session.commit()
    assert campaign.id is not None
    campaigns.build_audience(campaign.id)
    settings = db.model_copy(update={"send_batch_size": 2})
    loads: list[int] = []
    real_get = Session.get

    def counting_get(self: Session, entity: Any, ident: Any, **kwargs: Any) -> Any:
        if entity is Campaign:
            loads.append(ident)
        return real_get(self, entity, ident, **kwargs)

    sent: list[int] = []

    class Transport:
        def send_batch(self, envelopes: list[Any]) -> list[Outcome]:
            sent.extend(e.key for e in envelopes)
            if len(sent) == 4:  # the campaign is paused while its second micro-batch is out
                with Session(delivery.get_engine(settings)) as other:
                    other.execute(update(Campaign).where(Campaign.id == campaign.id).values(status="paused"))
                    other.commit()
            return [Outcome("sent", 250, "ok") for _ in envelopes]

    monkeypatch.setattr(Session, "get", counting_get)
    monkeypatch.setattr(delivery, "get_transport", lambda url: Transport())
    result = delivery.process_slice(campaign.id, 0, 10**9, settings=settings)
    assert result.stopped == "paused" and len(sent) == 4
    assert loads == [campaign.id]  # once, for two micro-batches and the check that stopped
    counts = session.execute(select(Delivery.status)).scalars().all()  # type: ignore[call-overload]
    assert sorted(counts).count("sent") == 4
