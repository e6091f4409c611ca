"""Suppressions: "never contact this identifier on this channel (for this topic)".

They are keyed by a keyed hash of the normalised identifier (email, phone, postal
address or e-mail domain), not by the contact, so they outlive the contact row."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, ForeignKey, Index, Integer, String, Text
from sqlmodel import Field, SQLModel

from app.models.base import KeyedHash, UTCDateTime, utcnow


class Suppression(SQLModel, table=True):
    __tablename__ = "suppression"
    __table_args__ = (
        Index("ix_suppression_hash", "address_hash", "lifted_at"),
        Index("ix_suppression_created_at", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    #: email | postal | phone, or NULL for every channel.
    channel: str | None = Field(default=None, sa_column=Column(String(10)))
    #: email | phone | postal | domain: what the hash was made of.
    kind: str = Field(sa_column=Column(String(10), nullable=False))
    address_hash: str = Field(sa_column=Column(KeyedHash, nullable=False))
    #: Masked hint for staff (``jo…@example.com``); cleared on erasure.
    address_hint: str | None = Field(default=None, sa_column=Column(String(120)))
    #: NULL = every topic; otherwise a topic slug.
    topic: str | None = Field(default=None, sa_column=Column(String(64)))
    reason: str = Field(sa_column=Column(String(20), nullable=False))
    origin: str = Field(sa_column=Column(String(10), nullable=False))
    #: How the request arrived when staff recorded it: phone, letter, email, in_person, …
    method: str | None = Field(default=None, sa_column=Column(String(20)))
    note: str | None = Field(default=None, sa_column=Column(Text))
    consent_event_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("consent_event.id", ondelete="SET NULL"))
    )
    inbound_message_id: int | None = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("inbound_message.id", ondelete="SET NULL")),
    )
    delivery_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("delivery.id", ondelete="SET NULL"))
    )
    created_by_user_id: int | None = Field(default=None, sa_column=Column(Integer, ForeignKey("app_user.id")))
    created_by_token_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("api_token.id"))
    )
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    lifted_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    lifted_by_token_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("api_token.id"))
    )
    lifted_by_user_id: int | None = Field(default=None, sa_column=Column(Integer, ForeignKey("app_user.id")))
    lift_note: str | None = Field(default=None, sa_column=Column(Text))
