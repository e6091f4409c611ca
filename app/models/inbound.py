"""Inbound mail: stored raw first, then classified."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlmodel import Field, SQLModel

from app.models.base import JSONType, UTCDateTime, utcnow


class InboundMessage(SQLModel, table=True):
    """kind: pending | bounce | complaint | autoreply | optout | reply | unparseable."""

    __tablename__ = "inbound_message"
    __table_args__ = (
        Index("ix_inbound_kind", "kind", "received_at"),
        Index("ix_inbound_sha256", "sha256"),
    )

    id: int | None = Field(default=None, primary_key=True)
    raw: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    sha256: str = Field(sa_column=Column(String(64), nullable=False))
    size_bytes: int = 0
    envelope_from: str | None = Field(default=None, sa_column=Column(String(320)))
    envelope_to: str | None = Field(default=None, sa_column=Column(String(320)))
    kind: str = Field(default="pending", sa_column=Column(String(12), nullable=False))
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONType))
    error: str | None = Field(default=None, sa_column=Column(Text))
    delivery_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("delivery.id", ondelete="SET NULL"))
    )
    contact_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("contact.id", ondelete="SET NULL"))
    )
    attempts: int = 0
    received_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    processed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
