"""Building the mail that comes back to us: replies to, and bounces of, our campaign mail."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime

from sqlmodel import Session

from app.contacts.identifiers import normalise_email
from app.models import Campaign, Contact, Delivery
from app.recipients.tokens import TokenKind, make_address_token
from app.suppression.hashing import IdentifierKind, keyed_hash

DOMAIN = "listwarden.example"  # the default bounce and reply domain (from LISTWARDEN_FROM_EMAIL)

FOOTER = (
    "--\n"
    'You receive this email from Listwarden about "Special offers".\n'
    "Unsubscribe: https://lists.example.test/u/AbCdEfGh\n"
    "Manage your preferences: https://lists.example.test/preferences/AbCdEfGh\n"
    "Listwarden Demo Ltd, 1 Example Street, 10115 Berlin, Germany\n"
)
CAMPAIGN_TEXT = "Hello Anna,\n\nOur spring offers are here: 20% off everything this week.\n\n" + FOOTER


@dataclass
class Sent:
    """One delivered campaign message: who, which delivery, and its VERP addresses."""

    contact: Contact
    delivery: Delivery
    message_id: str
    bounce_address: str
    reply_address: str
    unsubscribe_address: str

    @property
    def contact_id(self) -> int:
        assert self.contact.id is not None
        return self.contact.id

    @property
    def delivery_id(self) -> int:
        assert self.delivery.id is not None
        return self.delivery.id


def make_contact(session: Session, email: str, name: str = "Anna Example") -> Contact:
    key = normalise_email(email).key
    contact = Contact(
        email=key,
        email_hash=keyed_hash(IdentifierKind.EMAIL, key),
        domain_hash=keyed_hash(IdentifierKind.DOMAIN, key.rpartition("@")[2]),
        name=name,
        source="api",
    )
    session.add(contact)
    session.flush()
    return contact


def make_sent(session: Session, email: str = "anna@example.org", campaign: Campaign | None = None) -> Sent:
    """A contact and a ``sent`` delivery of a campaign to them, committed."""
    contact = make_contact(session, email)
    if campaign is None:
        campaign = Campaign(
            name="Spring", subject="Spring offers", html="<p>Hi</p>", text="Hi", status="sent"
        )
        session.add(campaign)
        session.flush()
    assert campaign.id is not None and contact.id is not None
    delivery = Delivery(campaign_id=campaign.id, contact_id=contact.id, status="sent")
    session.add(delivery)
    session.flush()
    assert delivery.id is not None
    delivery.message_id = f"<lw.{delivery.id}.0123456789ab@{DOMAIN}>"
    session.add(delivery)
    session.commit()
    return Sent(
        contact=contact,
        delivery=delivery,
        message_id=delivery.message_id,
        bounce_address=f"bounce+{make_address_token(TokenKind.BOUNCE, contact.id, delivery.id)}@{DOMAIN}",
        reply_address=f"reply+{make_address_token(TokenKind.REPLY, contact.id, delivery.id)}@{DOMAIN}",
        unsubscribe_address=(
            f"unsubscribe+{make_address_token(TokenKind.UNSUBSCRIBE, contact.id, delivery.id)}@{DOMAIN}"
        ),
    )


def campaign_headers(sent: Sent | None = None) -> str:
    if sent is None:
        return (
            "From: Listwarden <news@listwarden.example>\nTo: anna@example.org\n"
            "Subject: Spring offers\nMessage-ID: <lw.1.0123456789ab@listwarden.example>\n"
        )
    return (
        f"Return-Path: <{sent.bounce_address}>\n"
        "From: Listwarden <news@listwarden.example>\n"
        f"To: {sent.contact.email}\n"
        f"Reply-To: {sent.reply_address}\n"
        "Subject: Spring offers\n"
        f"Message-ID: {sent.message_id}\n"
        f"List-Unsubscribe: <https://lists.example.test/u/AbCd>, <mailto:{sent.unsubscribe_address}>\n"
    )


def reply(
    text: str,
    *,
    to: str = f"reply@{DOMAIN}",
    sender: str = "anna@example.org",
    subject: str = "Re: Spring offers",
    in_reply_to: str | None = None,
    quote: bool = True,
    quote_header: str = "On Tue, 3 Mar 2026 at 10:00, Listwarden <news@listwarden.example> wrote:",
    html: str | None = None,
    extra_headers: dict[str, str] | None = None,
) -> bytes:
    """A person's reply: their text, then (by default) our message quoted with ">"."""
    msg = EmailMessage()
    msg["From"] = f"Anna Example <{sender}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime(2026, 3, 3, 11, 0, tzinfo=UTC))
    msg["Message-ID"] = "<reply-1@example.org>"
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    for name, value in (extra_headers or {}).items():
        msg[name] = value
    body = text
    if quote:
        quoted = "\n".join("> " + line for line in CAMPAIGN_TEXT.splitlines())
        body = f"{text}\n\n{quote_header}\n{quoted}\n"
    msg.set_content(body)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    return msg.as_bytes()


def dsn(
    recipient: str,
    *,
    status: str = "5.1.1",
    action: str = "failed",
    diagnostic: str = "smtp; 550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown",
    to: str = f"bounce@{DOMAIN}",
    original_headers: str = "",
) -> bytes:
    """An RFC 3464 delivery-status report, as Postfix writes it."""
    boundary = "B0UND4RY.1234"
    diag = diagnostic.format(rcpt=recipient)
    return (
        "Return-Path: <>\n"
        "From: MAILER-DAEMON@mx.example.org (Mail Delivery System)\n"
        f"To: {to}\n"
        "Subject: Undelivered Mail Returned to Sender\n"
        "Date: Tue, 3 Mar 2026 10:00:05 +0000\n"
        "Auto-Submitted: auto-replied\n"
        "MIME-Version: 1.0\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\n'
        "\n"
        f"--{boundary}\n"
        "Content-Type: text/plain; charset=us-ascii\n\n"
        "This is the mail system at host mx.example.org.\n\n"
        "I'm sorry to have to inform you that your message could not\n"
        "be delivered to one or more recipients.\n\n"
        f"<{recipient}>: {diag}\n\n"
        f"--{boundary}\n"
        "Content-Type: message/delivery-status\n\n"
        "Reporting-MTA: dns; mx.example.org\n\n"
        f"Final-Recipient: rfc822; {recipient}\n"
        f"Original-Recipient: rfc822;{recipient}\n"
        f"Action: {action}\n"
        f"Status: {status}\n"
        f"Diagnostic-Code: {diag}\n\n"
        f"--{boundary}\n"
        "Content-Type: text/rfc822-headers\n\n"
        f"{original_headers or campaign_headers()}"
        f"\n--{boundary}--\n"
    ).encode()


def arf(recipient: str, *, feedback_type: str = "abuse", original_headers: str = "") -> bytes:
    boundary = "ARF-BOUNDARY"
    return (
        "From: staff@hotmail.example\n"
        f"To: fbl@{DOMAIN}\n"
        "Subject: complaint about message from 192.0.2.1\n"
        "MIME-Version: 1.0\n"
        f'Content-Type: multipart/report; report-type=feedback-report; boundary="{boundary}"\n\n'
        f"--{boundary}\n"
        "Content-Type: text/plain\n\n"
        "This is an email abuse report for an email message received from IP 192.0.2.1.\n\n"
        f"--{boundary}\n"
        "Content-Type: message/feedback-report\n\n"
        f"Feedback-Type: {feedback_type}\n"
        "User-Agent: SomeGenerator/1.0\n"
        "Version: 1\n"
        f"Original-Rcpt-To: <{recipient}>\n\n"
        f"--{boundary}\n"
        "Content-Type: message/rfc822\n\n"
        f"{original_headers or campaign_headers()}\n"
        "Hello Anna\n"
        f"--{boundary}--\n"
    ).encode()
