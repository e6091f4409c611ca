"""Read models for the staff UI: dashboard statistics and the contact detail page.

Only reads; nothing here writes or commits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func
from sqlmodel import Session, col, select

from app.contacts import repository as contacts_repo
from app.contacts import service as contacts
from app.models import Campaign, ConsentEvent, Contact, Delivery, Preference, Suppression, User, utcnow
from app.preferences import service as preferences
from app.suppression import service as suppressions

RECENT_DAYS = 30


@dataclass(frozen=True, slots=True)
class DashboardStats:
    live_contacts: int
    active_suppressions: int
    recent_consent_events: int
    campaigns: int
    suppressions_by_reason: list[tuple[str, int]]
    contacts_by_source: list[tuple[str, int]]
    latest_events: list[ConsentEvent]


def suppressions_by_reason(session: Session) -> list[tuple[str, int]]:
    """Active suppressions per reason, largest first."""
    count = func.count(col(Suppression.id))
    stmt = (
        select(Suppression.reason, count)
        .where(col(Suppression.lifted_at).is_(None))
        .group_by(col(Suppression.reason))
        .order_by(count.desc(), col(Suppression.reason))
    )
    return [(str(reason), int(n)) for reason, n in session.exec(stmt)]


def contacts_by_source(session: Session) -> list[tuple[str, int]]:
    """Live (not erased) contacts per source, largest first."""
    count = func.count(col(Contact.id))
    stmt = (
        select(Contact.source, count)
        .where(col(Contact.erased_at).is_(None))
        .group_by(col(Contact.source))
        .order_by(count.desc(), col(Contact.source))
    )
    return [(str(source), int(n)) for source, n in session.exec(stmt)]


def count_consent_events_since(session: Session, days: int = RECENT_DAYS) -> int:
    since = utcnow() - timedelta(days=days)
    stmt = select(func.count(col(ConsentEvent.id))).where(col(ConsentEvent.occurred_at) >= since)
    return int(session.exec(stmt).one())


def count_campaigns(session: Session) -> int:
    return int(session.exec(select(func.count(col(Campaign.id)))).one())


def latest_consent_events(session: Session, limit: int = 10) -> list[ConsentEvent]:
    stmt = (
        select(ConsentEvent)
        .order_by(col(ConsentEvent.occurred_at).desc(), col(ConsentEvent.id).desc())
        .limit(limit)
    )
    return list(session.exec(stmt))


def dashboard(session: Session) -> DashboardStats:
    return DashboardStats(
        live_contacts=contacts_repo.count_live(session),
        active_suppressions=suppressions.count_active(session),
        recent_consent_events=count_consent_events_since(session),
        campaigns=count_campaigns(session),
        suppressions_by_reason=suppressions_by_reason(session),
        contacts_by_source=contacts_by_source(session),
        latest_events=latest_consent_events(session),
    )


@dataclass(frozen=True, slots=True)
class ContactDetail:
    contact: Contact
    preferences: list[Preference]
    consent_events: list[ConsentEvent]
    suppressions: list[Suppression]
    deliveries: int


def contact_hashes(contact: Contact) -> list[str]:
    """Every hash a suppression can match the contact by, the e-mail domain included."""
    candidates = (contact.email_hash, contact.phone_hash, contact.postal_hash, contact.domain_hash)
    return [h for h in candidates if h]


def contact_detail(session: Session, contact_id: int) -> ContactDetail:
    """Raises ``NotFound`` for an unknown or erased contact."""
    contact = contacts.get(session, contact_id)
    assert contact.id is not None
    hashes = contact_hashes(contact)
    events = session.exec(
        select(ConsentEvent)
        .where(ConsentEvent.contact_id == contact.id)
        .order_by(col(ConsentEvent.occurred_at).desc(), col(ConsentEvent.id).desc())
    )
    matching: list[Suppression] = []
    if hashes:
        stmt = (
            select(Suppression)
            .where(col(Suppression.address_hash).in_(hashes))
            .order_by(col(Suppression.lifted_at).is_not(None), col(Suppression.id).desc())
        )
        matching = list(session.exec(stmt))
    deliveries = session.exec(
        select(func.count(col(Delivery.id))).where(Delivery.contact_id == contact.id)
    ).one()
    return ContactDetail(
        contact=contact,
        preferences=preferences.list_preferences(session, contact.id),
        consent_events=list(events),
        suppressions=matching,
        deliveries=int(deliveries),
    )


def search_contacts(
    session: Session, q: str | None, *, page: int, per_page: int
) -> tuple[list[Contact], bool]:
    """One page of live contacts matching ``q``, and whether there is a next page."""
    rows = contacts_repo.search(session, q=q or None, limit=per_page + 1, offset=(page - 1) * per_page)
    return rows[:per_page], len(rows) > per_page


def count_contacts_matching(session: Session, q: str | None) -> int:
    return contacts_repo.count_live(session, q or None)


def active_user(session: Session, user_id: object) -> User | None:
    """The logged-in staff user, if the id names an active account."""
    if not isinstance(user_id, int) or isinstance(user_id, bool):
        return None
    user = session.get(User, user_id)
    return user if user is not None and user.active else None
