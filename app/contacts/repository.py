"""Queries over contacts."""

from __future__ import annotations

from sqlalchemy import ColumnElement, func, or_
from sqlmodel import Session, col, select

from app.models import Contact


def get_live(session: Session, contact_id: int) -> Contact | None:
    contact = session.get(Contact, contact_id)
    if contact is None or contact.erased_at is not None:
        return None
    return contact


def by_email_hash(session: Session, email_hash: str) -> Contact | None:
    return session.exec(select(Contact).where(Contact.email_hash == email_hash)).first()


def matches(q: str) -> ColumnElement[bool]:
    """Case-insensitive substring match on email, name and company; ``%`` and ``_`` in
    ``q`` are literal characters."""
    escaped = q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    like = f"%{escaped}%"
    return or_(
        func.lower(col(Contact.email)).like(like, escape="\\"),
        func.lower(col(Contact.name)).like(like, escape="\\"),
        func.lower(col(Contact.company)).like(like, escape="\\"),
    )


def search(session: Session, *, q: str | None = None, limit: int = 50, offset: int = 0) -> list[Contact]:
    stmt = select(Contact).where(col(Contact.erased_at).is_(None))
    if q:
        stmt = stmt.where(matches(q))
    return list(session.exec(stmt.order_by(col(Contact.id).desc()).limit(limit).offset(offset)))


def count_live(session: Session, q: str | None = None) -> int:
    stmt = select(func.count()).select_from(Contact).where(col(Contact.erased_at).is_(None))
    if q:
        stmt = stmt.where(matches(q))
    return int(session.exec(stmt).one())
