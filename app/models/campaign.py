"""Campaigns and the delivery ledger (one row per campaign and contact)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from app.models.base import JSONType, UTCDateTime, utcnow


class Campaign(SQLModel, table=True):
    """Status: draft -> scheduled -> sending -> paused -> sent | cancelled."""

    __tablename__ = "campaign"
    __table_args__ = (Index("ix_campaign_status", "status", "scheduled_at"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=Column(String(200), nullable=False))
    channel: str = Field(default="email", sa_column=Column(String(10), nullable=False))
    topic: str | None = Field(
        default=None, sa_column=Column(String(64), ForeignKey("topic.slug"), nullable=True)
    )
    purpose: str = Field(default="marketing", sa_column=Column(String(10), nullable=False))
    from_name: str | None = Field(default=None, sa_column=Column(String(200)))
    from_email: str | None = Field(default=None, sa_column=Column(String(320)))
    reply_to: str | None = Field(default=None, sa_column=Column(String(320)))
    subject: str = Field(default="", sa_column=Column(Text, nullable=False))
    html: str = Field(default="", sa_column=Column(Text, nullable=False))
    text: str = Field(default="", sa_column=Column(Text, nullable=False))
    audience: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONType))
    status: str = Field(default="draft", sa_column=Column(String(12), nullable=False))
    scheduled_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: When the delivery ledger for the audience was completely written.
    audience_built_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: Messages per second for this campaign; None: the configured default.
    rate_limit: float | None = None
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_by_token_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("api_token.id"))
    )
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Delivery(SQLModel, table=True):
    """Status: pending -> claimed -> sent | suppressed | failed | deferred | bounced | unknown."""

    __tablename__ = "delivery"
    __table_args__ = (
        UniqueConstraint("campaign_id", "contact_id", name="uq_delivery_campaign_contact"),
        Index("ix_delivery_campaign_status", "campaign_id", "status"),
        Index("ix_delivery_contact", "contact_id"),
        # No index on message_id: inbound mail is matched by the delivery id the
        # Message-ID carries, then compared (migration 0010).
        # The claims in flight, for the lease expiry (the scheduler, every few seconds).
        Index(
            "ix_delivery_claimed",
            "claimed_at",
            postgresql_where=text("status = 'claimed'"),
            sqlite_where=text("status = 'claimed'"),
        ),
        # The due rows of each campaign in id order: a claim reads the first ones of its
        # slice without a sort and without passing the rows already sent.
        Index(
            "ix_delivery_due",
            "campaign_id",
            "id",
            postgresql_where=text("status IN ('pending', 'deferred')"),
            sqlite_where=text("status IN ('pending', 'deferred')"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(
        sa_column=Column(Integer, ForeignKey("campaign.id", ondelete="CASCADE"), nullable=False)
    )
    contact_id: int = Field(
        sa_column=Column(Integer, ForeignKey("contact.id", ondelete="CASCADE"), nullable=False)
    )
    status: str = Field(default="pending", sa_column=Column(String(12), nullable=False))
    reason: str | None = Field(default=None, sa_column=Column(String(40)))
    attempts: int = 0
    smtp_code: int | None = None
    smtp_reply: str | None = Field(default=None, sa_column=Column(Text))
    message_id: str | None = Field(default=None, sa_column=Column(String(255)))
    claimed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    next_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
