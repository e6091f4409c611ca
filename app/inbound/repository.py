"""Queries over received mail (``inbound_message``) and the few delivery rows it touches."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, update
from sqlmodel import Session, col, select

from app.models import Contact, Delivery, InboundMessage, utcnow

_im = InboundMessage.__table__  # type: ignore[attr-defined]
_d = Delivery.__table__  # type: ignore[attr-defined]


def get(session: Session, message_id: int) -> InboundMessage | None:
    return session.get(InboundMessage, message_id)


def find_duplicate(session: Session, sha256: str, envelope_to: str | None) -> InboundMessage | None:
    """The same bytes received for the same recipient before (a retried POST, an SMTP
    client that did not see our 250): one row, so a bounce is never counted twice."""
    stmt = select(InboundMessage).where(InboundMessage.sha256 == sha256)
    if envelope_to is None:
        stmt = stmt.where(col(InboundMessage.envelope_to).is_(None))
    else:
        stmt = stmt.where(InboundMessage.envelope_to == envelope_to)
    return session.exec(stmt.order_by(col(InboundMessage.id)).limit(1)).first()


def search(
    session: Session,
    *,
    kind: str | None = None,
    contact_id: int | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[InboundMessage]:
    stmt = select(InboundMessage)
    if kind is not None:
        stmt = stmt.where(InboundMessage.kind == kind)
    if contact_id is not None:
        stmt = stmt.where(InboundMessage.contact_id == contact_id)
    stmt = stmt.order_by(col(InboundMessage.received_at).desc(), col(InboundMessage.id).desc())
    return list(session.exec(stmt.limit(limit).offset(offset)))


def claim(session: Session, message_id: int) -> bool:
    """Take the message for processing in this transaction (a row lock on PostgreSQL, the
    write lock on SQLite): True for exactly one of two concurrent runs."""
    result = session.execute(
        update(_im).where(_im.c.id == message_id, _im.c.processed_at.is_(None)).values(processed_at=utcnow())
    )
    return bool(getattr(result, "rowcount", 0) == 1)


def stale_pending(
    session: Session, *, older_than: datetime, max_attempts: int, limit: int = 1000
) -> list[int]:
    stmt = (
        select(InboundMessage.id)
        .where(
            InboundMessage.kind == "pending",
            col(InboundMessage.processed_at).is_(None),
            col(InboundMessage.received_at) < older_than,
            col(InboundMessage.attempts) < max_attempts,
        )
        .order_by(col(InboundMessage.id))
        .limit(limit)
    )
    return [int(i) for i in session.exec(stmt) if i is not None]


def delivery(session: Session, delivery_id: int) -> Delivery | None:
    return session.get(Delivery, delivery_id)


def contact(session: Session, contact_id: int) -> Contact | None:
    return session.get(Contact, contact_id)


def contact_by_email_hash(session: Session, email_hash: str) -> Contact | None:
    return session.exec(select(Contact).where(Contact.email_hash == email_hash).limit(1)).first()


def mark_delivery_bounced(session: Session, delivery_id: int, reason: str) -> bool:
    """A bounce for a message we sent: ``sent`` -> ``bounced`` (other states are left)."""
    result = session.execute(
        update(_d)
        .where(_d.c.id == delivery_id, _d.c.status == "sent")
        .values(status="bounced", reason=reason[:40], updated_at=utcnow())
    )
    return bool(getattr(result, "rowcount", 0) == 1)


def soft_bounces_since(session: Session, contact_id: int, since: datetime) -> list[InboundMessage]:
    """Bounces of the contact received since ``since`` (the caller keeps the soft ones:
    the bounce type sits in the JSON detail, read the same way on every backend)."""
    stmt = (
        select(InboundMessage)
        .where(
            InboundMessage.contact_id == contact_id,
            InboundMessage.kind == "bounce",
            col(InboundMessage.received_at) >= since,
        )
        .order_by(col(InboundMessage.id))
        .limit(1000)
    )
    return list(session.exec(stmt))


def count_by_kind(session: Session) -> dict[str, int]:
    rows = session.exec(select(InboundMessage.kind, func.count()).group_by(col(InboundMessage.kind)))
    return {str(kind): int(n) for kind, n in rows}
