"""Preferences and the append-only consent ledger that explains every one of them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, ForeignKey, Index, Integer, String, Text, text
from sqlmodel import Field, SQLModel

from app.models.base import KeyedHash, ProvenanceJSON, UTCDateTime, utcnow


class Preference(SQLModel, table=True):
    """(contact, channel, topic-or-all) -> opted_in | opted_out. No row means unset."""

    __tablename__ = "preference"
    __table_args__ = (
        # A person's preferences, all channels and topics (the unique indexes below are
        # partial: neither serves ``contact_id = …`` alone; migration 0008).
        Index("ix_preference_contact", "contact_id"),
        Index(
            "uq_preference_channel",
            "contact_id",
            "channel",
            unique=True,
            sqlite_where=text("topic IS NULL"),
            postgresql_where=text("topic IS NULL"),
        ),
        Index(
            "uq_preference_topic",
            "contact_id",
            "channel",
            "topic",
            unique=True,
            sqlite_where=text("topic IS NOT NULL"),
            postgresql_where=text("topic IS NOT NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    contact_id: int = Field(
        sa_column=Column(Integer, ForeignKey("contact.id", ondelete="CASCADE"), nullable=False)
    )
    channel: str = Field(sa_column=Column(String(10), nullable=False))
    #: A topic's slug (checked by the services: topics are archived, never deleted).
    topic: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    status: str = Field(sa_column=Column(String(10), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    #: The consent event that set this state. No foreign key (migration 0005): the
    #: services write it from the event they have just inserted, and an erasure deletes
    #: the preferences with the events.
    consent_event_id: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))


class ConsentEvent(SQLModel, table=True):
    """Append-only: a database trigger refuses UPDATE. Rows go only with an erasure."""

    __tablename__ = "consent_event"
    __table_args__ = (
        Index("ix_consent_event_contact", "contact_id", "occurred_at"),
        Index("ix_consent_event_address_hash", "address_hash"),
    )

    id: int | None = Field(default=None, primary_key=True)
    contact_id: int | None = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("contact.id", ondelete="SET NULL"), nullable=True),
    )
    #: Keyed hash of the address the event concerns (survives erasure of the contact).
    address_hash: str | None = Field(default=None, sa_column=Column(KeyedHash))
    channel: str | None = Field(default=None, sa_column=Column(String(10)))
    topic: str | None = Field(default=None, sa_column=Column(String(64)))
    #: opted_in | opted_out | suppressed | lifted | erased | unset
    status: str = Field(sa_column=Column(String(12), nullable=False))
    previous_status: str | None = Field(default=None, sa_column=Column(String(12)))
    #: How it happened: form, import, api, one_click, link, preference_centre, reply,
    #: phone, letter, email, staff, bounce, complaint, system.
    method: str = Field(sa_column=Column(String(20), nullable=False))
    #: Who: recipient | staff | system
    actor: str = Field(sa_column=Column(String(10), nullable=False))
    actor_user_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("app_user.id"), nullable=True)
    )
    actor_token_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("api_token.id"), nullable=True)
    )
    text_shown: str | None = Field(default=None, sa_column=Column(Text))
    text_version: str | None = Field(default=None, sa_column=Column(String(64)))
    ip: str | None = Field(default=None, sa_column=Column(String(64)))
    user_agent: str | None = Field(default=None, sa_column=Column(String(500)))
    evidence: dict[str, Any] = Field(default_factory=dict, sa_column=Column(ProvenanceJSON))
    occurred_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
