"""Fast test data: contacts written in bulk, with the hashes the gate matches on."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select
from sqlmodel import Session

from app.contacts.identifiers import normalise_email
from app.models import Contact, Preference, utcnow
from app.suppression.hashing import IdentifierKind, keyed_hash


def bulk_contacts(
    session: Session,
    emails: list[str],
    *,
    topic: str | None = "special-offers",
    opted_in: bool = True,
    channel_level: bool = True,
    extra: dict[str, Any] | None = None,
) -> dict[str, int]:
    """Insert contacts opted in to email as a whole (``channel_level``) and to ``topic``;
    returns email -> id."""
    now = utcnow()
    rows = []
    for email in emails:
        norm = normalise_email(email)
        rows.append(
            {
                "email": norm.address,
                "email_hash": keyed_hash(IdentifierKind.EMAIL, norm.key),
                "domain_hash": keyed_hash(IdentifierKind.DOMAIN, norm.domain),
                "name": email.split("@")[0].replace(".", " ").title(),
                "source": "import",
                "attributes": {},
                "source_detail": {},
                "age_confirmed": True,
                "created_at": now,
                "updated_at": now,
                **(extra or {}),
            }
        )
    session.execute(insert(Contact), rows)
    found = session.execute(
        select(Contact.id, Contact.email).where(Contact.email.in_([r["email"] for r in rows]))
    ).all()  # type: ignore[union-attr]
    ids = {str(email).lower(): int(cid) for cid, email in found}
    if opted_in:
        prefs = []
        for cid in ids.values():
            if channel_level:
                prefs.append(
                    {
                        "contact_id": cid,
                        "channel": "email",
                        "topic": None,
                        "status": "opted_in",
                        "updated_at": now,
                    }
                )
            if topic:
                prefs.append(
                    {
                        "contact_id": cid,
                        "channel": "email",
                        "topic": topic,
                        "status": "opted_in",
                        "updated_at": now,
                    }
                )
        session.execute(insert(Preference), prefs)
    session.commit()
    return ids


CAMPAIGN = {
    "name": "Autumn offers",
    "topic": "special-offers",
    "purpose": "marketing",
    "subject": "Hello {{ first_name }}: autumn offers",
    "html": "<h1>Hi {{ name }}</h1><p>Our offers for {{ company or 'you' }}.</p>",
}
