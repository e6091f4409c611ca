"""Queries over contacts."""

from __future__ import annotations

from sqlalchemy import func, or_
from sqlmodel import Session, col, select

from app.models import Contact


def get_live(session: Session, contact_id: int) -> Contact | None:
    contact = session.get(Contact, contact_id)
    if contact is None or contact.erased_at is not None:
        return None
    return contact


def by_email_hash(session: Session, email_hash: str) -> Contact | None:
    return session.exec(select(Contact).where(Contact.email_hash == email_hash)).first()


def search(session: Session, *, q: str | None = None, limit: int = 50, offset: int = 0) -> list[Contact]:
    stmt = select(Contact).where(col(Contact.erased_at).is_(None))
    if q:
        like = f"%{q.lower()}%"
        stmt = stmt.where(
            or_(
                func.lower(col(Contact.email)).like(like),
                func.lower(col(Contact.name)).like(like),
                func.lower(col(Contact.company)).like(like),
            )
        )
    return list(session.exec(stmt.order_by(col(Contact.id).desc()).limit(limit).offset(offset)))


def count_live(session: Session) -> int:
    stmt = select(func.count()).select_from(Contact).where(col(Contact.erased_at).is_(None))
    return int(session.exec(stmt).one())
