"""Queries over the suppression list."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import or_
from sqlmodel import Session, col, select

from app.models import Suppression


def active_for_hashes(
    session: Session,
    hashes: Sequence[str],
    *,
    channel: str | None = None,
    reasons: Sequence[str] | None = None,
    topic: str | None = None,
    exact_topic: bool = False,
) -> list[Suppression]:
    if not hashes:
        return []
    stmt = select(Suppression).where(
        col(Suppression.address_hash).in_(list(hashes)), col(Suppression.lifted_at).is_(None)
    )
    if channel is not None:
        stmt = stmt.where(or_(col(Suppression.channel).is_(None), col(Suppression.channel) == channel))
    if reasons is not None:
        stmt = stmt.where(col(Suppression.reason).in_(list(reasons)))
    if exact_topic:
        stmt = stmt.where(col(Suppression.topic).is_(None) if topic is None else Suppression.topic == topic)
    return list(session.exec(stmt.order_by(col(Suppression.id))))


def search(
    session: Session,
    *,
    hashes: Sequence[str] | None = None,
    channel: str | None = None,
    reason: str | None = None,
    include_lifted: bool = False,
    limit: int = 100,
    offset: int = 0,
) -> list[Suppression]:
    stmt = select(Suppression)
    if hashes is not None:
        stmt = stmt.where(col(Suppression.address_hash).in_(list(hashes)))
    if channel is not None:
        stmt = stmt.where(or_(col(Suppression.channel).is_(None), col(Suppression.channel) == channel))
    if reason is not None:
        stmt = stmt.where(Suppression.reason == reason)
    if not include_lifted:
        stmt = stmt.where(col(Suppression.lifted_at).is_(None))
    stmt = stmt.order_by(col(Suppression.id).desc()).limit(limit).offset(offset)
    return list(session.exec(stmt))
