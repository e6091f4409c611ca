"""The suppression list: add (idempotently), look up by address, lift (audited)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, col, select

from app.auth import audit
from app.auth.actor import Actor
from app.config import get_settings
from app.contacts.identifiers import (
    mask_email,
    mask_phone,
    normalise_domain,
    normalise_email,
    normalise_phone,
)
from app.errors import NotFound, ValidationProblem
from app.models import Contact, Suppression, utcnow
from app.suppression import repository
from app.suppression.hashing import IdentifierKind, keyed_hash
from app.suppression.policy import BLOCKING_REASONS, Origin, Reason


@dataclass(frozen=True, slots=True)
class Identifier:
    kind: IdentifierKind
    hash: str
    hint: str

    @property
    def default_channel(self) -> str:
        return "phone" if self.kind is IdentifierKind.PHONE else "email"


def identify(address: str, *, kind: str | None = None, field: str = "address") -> Identifier:
    """Turn what staff typed (an email, ``@domain``, a phone number) into a keyed hash."""
    raw = (address or "").strip()
    if not raw:
        raise ValidationProblem("an address is required", field=field)
    settings = get_settings()
    if kind == IdentifierKind.DOMAIN or (kind is None and raw.startswith("@")):
        domain = normalise_domain(raw, field=field)
        return Identifier(IdentifierKind.DOMAIN, keyed_hash(IdentifierKind.DOMAIN, domain), f"@{domain}")
    if kind == IdentifierKind.EMAIL or (kind is None and "@" in raw):
        email = normalise_email(raw, check_deliverability=settings.check_deliverability, field=field)
        return Identifier(
            IdentifierKind.EMAIL, keyed_hash(IdentifierKind.EMAIL, email.key), mask_email(email.key)
        )
    if kind in (None, IdentifierKind.PHONE):
        phone = normalise_phone(raw, field=field)
        return Identifier(IdentifierKind.PHONE, keyed_hash(IdentifierKind.PHONE, phone), mask_phone(phone))
    raise ValidationProblem(
        "postal opt-outs are recorded against the person's email, phone or contact_id", field=field
    )


def lookup_hashes(address: str, *, field: str = "address") -> list[str]:
    """Hashes to search for an address: the address itself and, for email, its domain."""
    ident = identify(address, field=field)
    hashes = [ident.hash]
    if ident.kind is IdentifierKind.EMAIL:
        domain = ident.hint.split("@", 1)[1]
        hashes.append(keyed_hash(IdentifierKind.DOMAIN, domain))
    return hashes


def add_hashed(
    session: Session,
    *,
    address_hash: str,
    kind: str,
    hint: str | None,
    channel: str | None,
    topic: str | None,
    reason: str,
    origin: str,
    method: str | None,
    note: str | None,
    actor: Actor,
    consent_event_id: int | None = None,
    inbound_message_id: int | None = None,
    delivery_id: int | None = None,
) -> tuple[Suppression, bool]:
    """Add a suppression unless the same one is already active. Returns (row, created)."""
    Reason(reason)
    Origin(origin)
    if reason in BLOCKING_REASONS:
        topic = None  # blocking reasons are never topic-scoped
    for existing in repository.active_for_hashes(session, [address_hash], reasons=[reason]):
        if existing.channel == channel and existing.topic == topic:
            return existing, False
    row = Suppression(
        channel=channel,
        kind=str(kind),
        address_hash=address_hash,
        address_hint=hint,
        topic=topic,
        reason=reason,
        origin=origin,
        method=method,
        note=note,
        consent_event_id=consent_event_id,
        inbound_message_id=inbound_message_id,
        delivery_id=delivery_id,
        created_by_user_id=actor.user_id,
        created_by_token_id=actor.token_id,
    )
    session.add(row)
    session.flush()
    if actor.kind != "system":
        from app.preferences.service import settle_after_commit

        ids = [c.id for c in matching_contacts(session, address_hash) if c.id is not None]
        settle_after_commit(session, ids, actor)
    return row, True


def matching_contacts(session: Session, address_hash: str) -> list[Contact]:
    stmt = select(Contact).where(
        (Contact.email_hash == address_hash)
        | (Contact.phone_hash == address_hash)
        | (Contact.postal_hash == address_hash)
        | (Contact.domain_hash == address_hash)
    )
    return list(session.exec(stmt.limit(1000)))


def add_for_address(
    session: Session,
    *,
    address: str,
    channel: str | None,
    topic: str | None,
    reason: str,
    method: str | None,
    note: str | None,
    actor: Actor,
    kind: str | None = None,
) -> tuple[Suppression, bool]:
    """Staff records an opt-out (a phone call, a letter, an email to sales) or a block."""
    from app.preferences.service import record_consent  # the modules use each other

    ident = identify(address, kind=kind)
    if ident.kind is IdentifierKind.DOMAIN and reason not in (Reason.DOMAIN_BLOCK, Reason.INVALID):
        reason = Reason.DOMAIN_BLOCK
    contacts = [c for c in matching_contacts(session, ident.hash) if ident.kind is not IdentifierKind.DOMAIN]
    event = record_consent(
        session,
        contact=contacts[0] if len(contacts) == 1 else None,
        channel=channel,
        topic=topic,
        status="suppressed",
        method=method or "staff",
        actor=actor,
        address_hash=ident.hash,
        evidence={"reason": reason, "note": note} if note else {"reason": reason},
    )
    row, created = add_hashed(
        session,
        address_hash=ident.hash,
        kind=ident.kind,
        hint=ident.hint,
        channel=channel,
        topic=topic,
        reason=reason,
        origin=Origin.STAFF if actor.kind == "staff" else Origin.SYSTEM,
        method=method,
        note=note,
        actor=actor,
        consent_event_id=event.id,
    )
    if created:
        audit.record(
            session,
            actor,
            "suppression.add",
            target_type="suppression",
            target_id=row.id,
            detail={"reason": reason, "channel": channel, "topic": topic, "method": method},
        )
    return row, created


def get(session: Session, suppression_id: int) -> Suppression:
    row = session.get(Suppression, suppression_id)
    if row is None:
        raise NotFound(f"suppression {suppression_id} not found")
    return row


def lift(session: Session, suppression_id: int, *, actor: Actor, note: str | None) -> Suppression:
    """Lift a suppression (admin only at the endpoint). Kept as history, never deleted."""
    from app.preferences.service import record_consent

    row = get(session, suppression_id)
    if row.lifted_at is not None:
        return row
    row.lifted_at = utcnow()
    row.lifted_by_token_id = actor.token_id
    row.lifted_by_user_id = actor.user_id
    row.lift_note = note
    session.add(row)
    record_consent(
        session,
        contact=None,
        channel=row.channel,
        topic=row.topic,
        status="lifted",
        previous_status="suppressed",
        method="staff",
        actor=actor,
        address_hash=row.address_hash,
        evidence={"suppression_id": row.id, "reason": row.reason, "note": note},
    )
    audit.record(
        session,
        actor,
        "suppression.lift",
        target_type="suppression",
        target_id=row.id,
        detail={"reason": row.reason, "note": note},
    )
    session.flush()
    return row


def list_for_address(
    session: Session, address: str, *, include_lifted: bool = False, field: str = "address"
) -> list[Suppression]:
    hashes = lookup_hashes(address, field=field)
    return repository.search(session, hashes=hashes, include_lifted=include_lifted, limit=1000)


def count_active(session: Session) -> int:
    from sqlalchemy import func

    return int(session.exec(select(func.count()).where(col(Suppression.lifted_at).is_(None))).one())
