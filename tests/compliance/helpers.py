"""Data requests as the preference centre records them, for the staff-side tests."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from app.config import Settings
from app.db import session_scope
from app.models import Contact, DataRequest, utcnow

CONTACTS = "/api/v1/contacts"
REQUESTS = "/api/v1/data-requests"
OPT_IN_EMAIL = [{"channel": "email", "topic": None, "status": "opted_in"}]


def make_contact(client: TestClient, headers: dict[str, str], email: str, **extra: Any) -> int:
    body = {"email": email, "name": "Olga Example", "preferences": OPT_IN_EMAIL, **extra}
    r = client.post(CONTACTS, json=body, headers=headers)
    assert r.status_code in (200, 201), r.text
    return int(r.json()["id"])


def recipient_request(
    db: Settings, contact_id: int, kind: str, *, days_ago: float = 0, note: str | None = None
) -> int:
    """A request as ``app.recipients.service.request_data`` records it, received ``days_ago``."""
    received: datetime = utcnow() - timedelta(days=days_ago)
    with session_scope(db) as s:
        contact = s.get(Contact, contact_id)
        assert contact is not None
        row = DataRequest(
            contact_id=contact_id,
            address_hash=contact.email_hash,
            kind=kind,
            status="open",
            channel="web",
            note=note or "Asked for in the preference centre",
            received_at=received,
            due_at=received + timedelta(days=db.data_request_due_days),
        )
        s.add(row)
        s.flush()
        assert row.id is not None
        return row.id
