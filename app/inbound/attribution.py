"""Which contact (and delivery) a received message is about.

In order of trust:

1. a VERP address token where the message was delivered (envelope recipient, then the
   ``To`` / ``Delivered-To`` headers): ``bounce+…``, ``reply+…``, ``unsubscribe+…`` — they
   are authenticated (AES-SIV), so they name the delivery without guessing;
2. our Message-ID in ``In-Reply-To`` / ``References`` (or inside a returned message),
   matched exactly against ``delivery.message_id`` (its random part cannot be guessed);
3. a token found inside the message (the Return-Path or List-Unsubscribe of the original
   message a bounce or complaint returns);
4. bounces and complaints: the failed recipient the report names (reliable sources only:
   DSN fields, ``X-Failed-Recipients``, ``flufl.bounce``, ARF ``Original-Rcpt-To``);
   replies: the sender's address. Matched by keyed hash against contacts.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session

from app.contacts.identifiers import normalise_email
from app.errors import ValidationProblem
from app.inbound import repository
from app.inbound.classify import Classification, TokenRef
from app.models import Contact, Delivery
from app.recipients.tokens import BadToken, TokenKind, read_address_token
from app.suppression.hashing import IdentifierKind, keyed_hash

_TOKEN_KINDS = {"bounce": TokenKind.BOUNCE, "reply": TokenKind.REPLY, "unsubscribe": TokenKind.UNSUBSCRIBE}


@dataclass(slots=True)
class Attribution:
    contact: Contact | None = None
    delivery: Delivery | None = None
    #: token:<place> | message_id | failed_recipient | complaint_recipient | sender | none
    method: str = "none"
    #: An address the message names that matched no contact (for an opt-out by hash).
    address: str | None = None

    @property
    def contact_id(self) -> int | None:
        return self.contact.id if self.contact is not None else None

    @property
    def delivery_id(self) -> int | None:
        return self.delivery.id if self.delivery is not None else None


def email_hash(address: str) -> tuple[str, str] | None:
    """(normalised key, keyed hash) of an email address, or None when it is not one."""
    try:
        normalised = normalise_email(address)
    except ValidationProblem:
        return None
    return normalised.key, keyed_hash(IdentifierKind.EMAIL, normalised.key)


def _from_token(session: Session, ref: TokenRef) -> Attribution | None:
    kind = _TOKEN_KINDS.get(ref.kind)
    if kind is None:
        return None
    try:
        payload = read_address_token(ref.token, kind)
    except BadToken:
        return None
    contact = repository.contact(session, payload.contact_id)
    if contact is None:
        return None
    delivery = repository.delivery(session, payload.delivery_id) if payload.delivery_id else None
    if delivery is not None and delivery.contact_id != contact.id:
        delivery = None
    return Attribution(contact=contact, delivery=delivery, method=f"token:{ref.place}")


def _from_message_id(session: Session, message_id: str) -> Attribution | None:
    # <lw.<delivery id>.<hex>@domain>
    try:
        delivery_id = int(message_id.split(".", 2)[1])
    except (IndexError, ValueError):
        return None
    delivery = repository.delivery(session, delivery_id)
    if delivery is None or (delivery.message_id or "").lower() != message_id.lower():
        return None
    contact = repository.contact(session, delivery.contact_id)
    if contact is None:
        return None
    return Attribution(contact=contact, delivery=delivery, method="message_id")


def _from_addresses(session: Session, addresses: list[str], method: str) -> Attribution | None:
    first: str | None = None
    for address in addresses:
        found = email_hash(address)
        if found is None:
            continue
        key, hashed = found
        first = first or key
        contact = repository.contact_by_email_hash(session, hashed)
        if contact is not None:
            return Attribution(contact=contact, method=method, address=key)
    if first is not None:
        return Attribution(method="none", address=first)
    return None


def attribute(session: Session, result: Classification) -> Attribution:
    for ref in result.tokens:
        if ref.place in ("envelope", "header"):
            found = _from_token(session, ref)
            if found is not None:
                return found
    for message_id in result.message_ids:
        found = _from_message_id(session, message_id)
        if found is not None:
            return found
    for ref in result.tokens:
        if ref.place == "enclosed":
            found = _from_token(session, ref)
            if found is not None:
                return found
    if result.kind in ("bounce", "complaint"):
        method = "failed_recipient" if result.kind == "bounce" else "complaint_recipient"
        found = _from_addresses(session, result.recipients, method)
        if found is not None and found.contact is not None:
            return found
        return Attribution(address=found.address if found else None)
    if result.kind in ("optout", "reply") and result.from_address:
        found = _from_addresses(session, [result.from_address], "sender")
        if found is not None:
            return found
    return Attribution()
