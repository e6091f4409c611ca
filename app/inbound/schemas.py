"""Request and response models of the inbound API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from app.models import InboundMessage


class InboundAccepted(BaseModel):
    """The answer to ``POST /api/v1/inbound``: the message is stored (classification follows)."""

    id: int
    kind: str
    #: The same bytes for the same recipient were stored before: this is that message.
    duplicate: bool = False
    #: Larger than LISTWARDEN_INBOUND_MAX_BYTES: only the first bytes were stored.
    truncated: bool = False
    size_bytes: int


class InboundSummary(BaseModel):
    id: int
    kind: str
    received_at: datetime
    processed_at: datetime | None
    envelope_from: str | None
    envelope_to: str | None
    size_bytes: int
    from_address: str | None = None
    subject: str | None = None
    #: For replies and opt-outs: what the person wrote (quotes and signature removed).
    text: str | None = None
    bounce_type: str | None = None
    reason: str | None = None
    contact_id: int | None
    delivery_id: int | None
    error: str | None

    @classmethod
    def of(cls, row: InboundMessage) -> InboundSummary:
        assert row.id is not None
        detail = row.detail or {}
        return cls(
            id=row.id,
            kind=row.kind,
            received_at=row.received_at,
            processed_at=row.processed_at,
            envelope_from=row.envelope_from,
            envelope_to=row.envelope_to,
            size_bytes=row.size_bytes,
            from_address=detail.get("from_address"),
            subject=detail.get("subject"),
            text=detail.get("text"),
            bounce_type=detail.get("bounce_type"),
            reason=detail.get("reason"),
            contact_id=row.contact_id,
            delivery_id=row.delivery_id,
            error=row.error,
        )


class InboundOut(InboundSummary):
    #: What the message changed: consent events, suppressions, the delivery, bounce counts.
    effects: list[dict[str, Any]]
    attempts: int
    sha256: str
    truncated: bool
    detail: dict[str, Any]

    @classmethod
    def of(cls, row: InboundMessage) -> InboundOut:
        detail = dict(row.detail or {})
        summary = InboundSummary.of(row)
        return cls(
            **summary.model_dump(),
            effects=list(detail.get("effects") or []),
            attempts=row.attempts,
            sha256=row.sha256,
            truncated=bool(detail.get("truncated")),
            detail=detail,
        )


class InboundList(BaseModel):
    items: list[InboundSummary]
