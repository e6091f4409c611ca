"""Data-subject requests (access and erasure) with their statutory due date."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, ForeignKey, Integer, String, Text
from sqlmodel import Field, SQLModel

from app.models.base import KeyedHash, UTCDateTime, utcnow


class DataRequest(SQLModel, table=True):
    __tablename__ = "data_request"

    id: int | None = Field(default=None, primary_key=True)
    contact_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("contact.id", ondelete="SET NULL"))
    )
    address_hash: str | None = Field(default=None, sa_column=Column(KeyedHash))
    #: access | erasure | rectification
    kind: str = Field(sa_column=Column(String(16), nullable=False))
    #: open | done | refused
    status: str = Field(default="open", sa_column=Column(String(10), nullable=False))
    channel: str = Field(default="web", sa_column=Column(String(20), nullable=False))
    note: str | None = Field(default=None, sa_column=Column(Text))
    received_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    due_at: datetime = Field(sa_type=UTCDateTime)
    closed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
