"""Topics: configurable, seeded by the first migration, extended from settings."""

from __future__ import annotations

from sqlmodel import Session, select

from app.errors import ValidationProblem
from app.models import Topic


def list_topics(session: Session, *, active_only: bool = True) -> list[Topic]:
    stmt = select(Topic).order_by(Topic.id)  # type: ignore[arg-type]
    if active_only:
        stmt = stmt.where(Topic.active == True)  # noqa: E712
    return list(session.exec(stmt))


def topic_slugs(session: Session) -> set[str]:
    return {t.slug for t in list_topics(session)}


def ensure_topics(session: Session, slugs: list[str]) -> None:
    """Create any configured topic that does not exist yet (never deletes)."""
    existing = {t.slug for t in list_topics(session, active_only=False)}
    for slug in slugs:
        if slug not in existing:
            session.add(Topic(slug=slug, name=slug.replace("-", " ").capitalize()))
    session.flush()


def require_topic(session: Session, slug: str | None, *, field: str = "topic") -> str | None:
    if slug is None:
        return None
    if slug not in topic_slugs(session):
        known = ", ".join(sorted(topic_slugs(session)))
        raise ValidationProblem(f"unknown topic {slug!r} (known: {known})", field=field)
    return slug
