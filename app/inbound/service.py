"""Inbound mail: store first, classify later, then apply the effects with evidence.

Invariant 6 (DESIGN.md): nothing received is lost. :func:`store` writes the raw message
(and answers only after that commits); classification runs in the ``classify_inbound``
actor, so a crash or a bug leaves the message stored, ``pending`` and retryable.

Effects, each recorded with the stored message as evidence (the consent event's
``evidence.inbound_message_id``, the suppression's ``inbound_message_id``):

- hard bounce: the address is suppressed at once (``hard_bounce``), the delivery becomes
  ``bounced``; soft bounce: the delivery becomes ``bounced`` and the bounce counts; the
  configured number within the window (3 in 30 days) suppresses like a hard bounce;
  a delay warning (``Action: delayed``) does nothing;
- complaint (feedback types abuse, fraud, opt-out, other): ``complaint`` suppression, which
  stops all marketing mail (and, being a blocking reason, service mail too);
- opt-out request (a reply that asks, or mail to the ``mailto:`` unsubscribe address): the
  person's email preference becomes ``opted_out`` through the preference rules, which
  record the consent event and the suppression; with no contact, the sender's address is
  suppressed by its keyed hash, so no later import can bring it back;
- auto-replies, replies and unparseable mail change nothing (replies are listed for sales).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlmodel import Session

from app.auth.actor import Actor
from app.config import get_settings
from app.contacts.identifiers import mask_email
from app.db import after_commit, session_scope
from app.errors import NotFound
from app.inbound import repository
from app.inbound.attribution import Attribution, attribute
from app.inbound.classify import Classification, Hints, classify
from app.inbound.settings import InboundSettings, get_inbound_settings
from app.models import Contact, InboundMessage, utcnow
from app.models.base import Channel, PreferenceStatus
from app.suppression.policy import Origin, Reason

log = logging.getLogger("listwarden.inbound")

Effect = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Received:
    """A message as it arrived: the bytes kept (at most the configured maximum), its real
    size and the SHA-256 of all of it."""

    data: bytes
    size: int
    sha256: str

    @property
    def truncated(self) -> bool:
        return self.size > len(self.data)

    @classmethod
    def of(cls, raw: bytes, max_bytes: int | None = None) -> Received:
        limit = max_bytes if max_bytes is not None else get_inbound_settings().max_bytes
        return cls(data=raw[:limit], size=len(raw), sha256=hashlib.sha256(raw).hexdigest())


# --------------------------------------------------------------------------- intake
def store(
    session: Session,
    received: Received,
    *,
    envelope_from: str | None = None,
    envelope_to: str | None = None,
    source: str = "api",
) -> tuple[InboundMessage, bool]:
    """Store a received message (before anything else) and enqueue its classification
    once the transaction commits. Returns (row, created); the same bytes for the same
    recipient are stored once."""
    envelope_to = (envelope_to or "").strip()[:320] or None
    envelope_from = None if envelope_from is None else envelope_from.strip()[:320]
    existing = repository.find_duplicate(session, received.sha256, envelope_to)
    if existing is not None:
        if existing.kind == "pending" and existing.id is not None:
            _enqueue_after_commit(session, existing.id)
        return existing, False
    detail: dict[str, Any] = {"source": source}
    error = None
    if received.truncated:
        detail["truncated"] = True
        detail["stored_bytes"] = len(received.data)
        error = (
            f"oversized: {received.size} bytes exceed LISTWARDEN_INBOUND_MAX_BYTES; the first "
            f"{len(received.data)} bytes are stored and were classified"
        )
    row = InboundMessage(
        raw=received.data,
        sha256=received.sha256,
        size_bytes=received.size,
        envelope_from=envelope_from,
        envelope_to=envelope_to,
        kind="pending",
        detail=detail,
        error=error,
    )
    session.add(row)
    session.flush()
    assert row.id is not None
    _enqueue_after_commit(session, row.id)
    return row, True


def _enqueue_after_commit(session: Session, message_id: int) -> None:
    def enqueue() -> None:
        from workers.inbound import classify_inbound

        try:
            classify_inbound.send(message_id)
        except Exception:  # the message is stored: a sweep or an admin retries it
            log.exception("could not enqueue inbound message %s", message_id)

    after_commit(session, enqueue)


def get(session: Session, message_id: int) -> InboundMessage:
    row = repository.get(session, message_id)
    if row is None:
        raise NotFound(f"inbound message {message_id} not found")
    return row


def retry(session: Session, message_id: int) -> InboundMessage:
    """Classify a message again (an admin, after a fix): only if it was not processed."""
    row = get(session, message_id)
    if row.processed_at is None:
        assert row.id is not None
        _enqueue_after_commit(session, row.id)
    return row


def requeue_stale(session: Session, *, older_than_seconds: float = 300.0) -> list[int]:
    """Enqueue again the messages still pending after a while (the embedded broker keeps
    its queue in memory, so a restart forgets what it had not run)."""
    settings = get_inbound_settings()
    ids = repository.stale_pending(
        session,
        older_than=utcnow() - timedelta(seconds=older_than_seconds),
        max_attempts=settings.max_attempts,
    )
    for message_id in ids:
        _enqueue_after_commit(session, message_id)
    return ids


# --------------------------------------------------------------------------- processing
def hints() -> Hints:
    settings = get_settings()
    public = settings.public_url.rstrip("/").lower()
    markers = [f"{public}/u/", f"{public}/preferences/"]
    postal = settings.postal_address.strip().split(",")[0].strip().lower()
    if len(postal) >= 8:
        markers.append(postal)
    return Hints(footer_markers=tuple(markers))


def process(message_id: int, *, settings: InboundSettings | None = None) -> str:
    """Classify a stored message and apply its effects. Returns the kind. Raises when the
    effects could not be applied (the actor retries); the message stays ``pending``."""
    settings = settings or get_inbound_settings()
    with session_scope() as session:
        row = repository.get(session, message_id)
        if row is None:
            return "missing"
        if row.processed_at is not None:
            return row.kind
        row.attempts += 1
        attempts = row.attempts
        raw, envelope_from, envelope_to = row.raw, row.envelope_from, row.envelope_to
        session.add(row)
    result = classify(raw, envelope_from=envelope_from, envelope_to=envelope_to, hints=hints())
    try:
        with session_scope() as session:
            if not repository.claim(session, message_id):
                return "already-processed"
            row = get(session, message_id)
            apply(session, row, result, settings=settings)
            return row.kind
    except Exception as exc:
        with session_scope() as session:
            row = get(session, message_id)
            row.error = f"processing failed (attempt {attempts}): {type(exc).__name__}: {exc}"[:2000]
            session.add(row)
        if attempts >= settings.max_attempts:
            log.exception("inbound message %s: giving up after %d attempts", message_id, attempts)
            return "failed"
        raise


def apply(
    session: Session, row: InboundMessage, result: Classification, *, settings: InboundSettings
) -> list[Effect]:
    """Record the classification on the row and apply its effects (never commits)."""
    assert row.id is not None
    who = attribute(session, result)
    row.kind = result.kind
    row.contact_id = who.contact_id
    row.delivery_id = who.delivery_id
    kept = {k: v for k, v in (row.detail or {}).items() if k in ("source", "truncated", "stored_bytes")}
    row.detail = {**kept, **result.to_detail(), "attribution": who.method}
    if row.error and row.error.startswith("processing failed"):
        row.error = None
    session.add(row)
    session.flush()
    effects: list[Effect] = []
    if result.kind == "bounce":
        effects = _bounce_effects(session, row, result, who, settings)
    elif result.kind == "complaint":
        effects = _complaint_effects(session, row, result, who)
    elif result.kind == "optout":
        effects = _optout_effects(session, row, result, who)
    row.detail = {**row.detail, "effects": effects}
    row.processed_at = utcnow()
    session.add(row)
    session.flush()
    return effects


def _system() -> Actor:
    return Actor.system()


def _suppress_contact(
    session: Session,
    row: InboundMessage,
    who: Attribution,
    *,
    reason: str,
    method: str,
    note: str,
    evidence: dict[str, Any],
) -> list[Effect]:
    """Consent event + suppression of the contact's email address (system origin)."""
    from app.preferences.service import record_consent
    from app.suppression.service import add_hashed

    contact = who.contact
    if contact is None or not contact.email_hash:
        return [{"type": "none", "why": "no contact with an email address to suppress"}]
    actor = _system()
    event = record_consent(
        session,
        contact=contact,
        channel=Channel.EMAIL.value,
        topic=None,
        status="suppressed",
        method=method,
        actor=actor,
        address_hash=contact.email_hash,
        evidence={"inbound_message_id": row.id, "reason": reason, **evidence},
    )
    suppression, created = add_hashed(
        session,
        address_hash=contact.email_hash,
        kind="email",
        hint=mask_email(contact.email) if contact.email else None,
        channel=Channel.EMAIL.value,
        topic=None,
        reason=reason,
        origin=Origin.SYSTEM,
        method=method,
        note=note,
        actor=actor,
        consent_event_id=event.id,
        inbound_message_id=row.id,
        delivery_id=who.delivery_id,
    )
    return [
        {"type": "consent_event", "id": event.id, "status": "suppressed", "method": method},
        {"type": "suppression", "id": suppression.id, "reason": reason, "created": created},
    ]


def _bounce_effects(
    session: Session, row: InboundMessage, result: Classification, who: Attribution, settings: InboundSettings
) -> list[Effect]:
    if result.bounce_type == "delayed":
        return [{"type": "none", "why": "delay warning: the server is still trying"}]
    if who.contact is None:
        return [{"type": "none", "why": "no contact or delivery matches this bounce"}]
    effects: list[Effect] = []
    if who.delivery_id is not None and repository.mark_delivery_bounced(
        session, who.delivery_id, f"{result.bounce_type}_bounce:{result.reason}"
    ):
        effects.append({"type": "delivery_bounced", "delivery_id": who.delivery_id})
    evidence = {
        "bounce_type": result.bounce_type,
        "bounce_reason": result.reason,
        "status": result.status,
        "recipients": result.recipients[:5],
    }
    if result.bounce_type == "hard":
        effects += _suppress_contact(
            session,
            row,
            who,
            reason=Reason.HARD_BOUNCE,
            method="bounce",
            note=f"hard bounce ({result.reason} {result.status})".strip(),
            evidence=evidence,
        )
        return effects
    assert who.contact is not None and who.contact.id is not None
    window = timedelta(days=settings.soft_bounce_window_days)
    counted = _soft_bounce_count(session, who.contact.id, since=utcnow() - window)
    effects.append(
        {
            "type": "soft_bounce",
            "count": counted,
            "threshold": settings.soft_bounce_threshold,
            "window_days": settings.soft_bounce_window_days,
        }
    )
    if counted >= settings.soft_bounce_threshold:
        effects += _suppress_contact(
            session,
            row,
            who,
            reason=Reason.HARD_BOUNCE,
            method="bounce",
            note=(
                f"{counted} soft bounces within {settings.soft_bounce_window_days:g} days "
                f"(threshold {settings.soft_bounce_threshold})"
            ),
            evidence={**evidence, "soft_bounces": counted},
        )
    return effects


def _soft_bounce_count(session: Session, contact_id: int, *, since: Any) -> int:
    """Soft bounces of the contact within the window, one per delivery (several reports
    about one message count once)."""
    seen: set[str] = set()
    for message in repository.soft_bounces_since(session, contact_id, since):
        if (message.detail or {}).get("bounce_type") != "soft":
            continue
        seen.add(f"d{message.delivery_id}" if message.delivery_id else f"m{message.id}")
    return len(seen)


def _complaint_effects(
    session: Session, row: InboundMessage, result: Classification, who: Attribution
) -> list[Effect]:
    if not result.suppressing_complaint:
        return [{"type": "none", "why": f"feedback type {result.feedback_type!r} does not suppress"}]
    if who.contact is None:
        return [{"type": "none", "why": "no contact or delivery matches this complaint"}]
    return _suppress_contact(
        session,
        row,
        who,
        reason=Reason.COMPLAINT,
        method="complaint",
        note=f"feedback report ({result.feedback_type})",
        evidence={"feedback_type": result.feedback_type},
    )


def _optout_effects(
    session: Session, row: InboundMessage, result: Classification, who: Attribution
) -> list[Effect]:
    from app.preferences.service import PreferenceChange, apply_changes, record_consent
    from app.suppression.service import add_hashed

    actor = Actor.recipient()
    evidence: dict[str, Any] = {"inbound_message_id": row.id, "via": result.reason}
    if result.opt_out_phrase:
        evidence["phrase"] = result.opt_out_phrase
        evidence["language"] = result.language
    if who.contact is not None:
        contact: Contact = who.contact
        outcome = apply_changes(
            session,
            contact,
            [PreferenceChange(Channel.EMAIL, None, PreferenceStatus.OPTED_OUT)],
            method="reply",
            actor=actor,
            evidence=evidence,
        )
        if not outcome.applied:
            return [{"type": "none", "why": "already opted out of email"}]
        return [
            {"type": "preference", "channel": "email", "topic": None, "status": "opted_out"},
            *_link_evidence(session, contact, row),
        ]
    if who.address is None:
        return [{"type": "none", "why": "no contact and no sender address to suppress"}]
    from app.inbound.attribution import email_hash

    found = email_hash(who.address)
    if found is None:
        return [{"type": "none", "why": "the sender address is not a valid email address"}]
    key, hashed = found
    event = record_consent(
        session,
        contact=None,
        channel=Channel.EMAIL.value,
        topic=None,
        status="suppressed",
        method="reply",
        actor=actor,
        address_hash=hashed,
        evidence=evidence,
    )
    suppression, created = add_hashed(
        session,
        address_hash=hashed,
        kind="email",
        hint=mask_email(key),
        channel=Channel.EMAIL.value,
        topic=None,
        reason=Reason.REPLY,
        origin=Origin.RECIPIENT,
        method="reply",
        note="opt-out request by email from an address with no contact",
        actor=actor,
        consent_event_id=event.id,
        inbound_message_id=row.id,
    )
    return [
        {"type": "consent_event", "id": event.id, "status": "suppressed", "method": "reply"},
        {"type": "suppression", "id": suppression.id, "reason": Reason.REPLY.value, "created": created},
    ]


def _link_evidence(session: Session, contact: Contact, row: InboundMessage) -> list[Effect]:
    """The preference rules wrote the consent event (evidence: this message) and the
    suppression; point the suppression at the message too."""
    from sqlmodel import col, select

    from app.models import ConsentEvent, Suppression

    assert contact.id is not None
    events = [
        e
        for e in session.exec(
            select(ConsentEvent)
            .where(ConsentEvent.contact_id == contact.id, ConsentEvent.method == "reply")
            .order_by(col(ConsentEvent.id).desc())
            .limit(20)
        )
        if (e.evidence or {}).get("inbound_message_id") == row.id
    ]
    effects: list[Effect] = []
    for event in events:
        effects.append({"type": "consent_event", "id": event.id, "status": event.status, "method": "reply"})
        for suppression in session.exec(select(Suppression).where(Suppression.consent_event_id == event.id)):
            if suppression.inbound_message_id is None:
                suppression.inbound_message_id = row.id
                session.add(suppression)
            effects.append({"type": "suppression", "id": suppression.id, "reason": suppression.reason})
    session.flush()
    return effects
