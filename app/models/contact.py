"""Contact: one person or lead. Addresses are also kept as keyed hashes, which is what
the suppression list and the gate match on (see ``app.suppression.hashing``)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import Column, Index, String, text
from sqlmodel import Field, SQLModel

from app.models.base import JSONType, KeyedHash, ProvenanceJSON, UTCDateTime, utcnow


class Contact(SQLModel, table=True):
    __tablename__ = "contact"
    __table_args__ = (
        Index("ix_contact_email_hash", "email_hash", unique=True),
        Index(
            "ix_contact_phone_hash",
            "phone_hash",
            postgresql_where=text("phone_hash IS NOT NULL"),
            sqlite_where=text("phone_hash IS NOT NULL"),
        ),
        Index(
            "ix_contact_postal_hash",
            "postal_hash",
            postgresql_where=text("postal_hash IS NOT NULL"),
            sqlite_where=text("postal_hash IS NOT NULL"),
        ),
        Index("ix_contact_domain_hash", "domain_hash"),
    )

    id: int | None = Field(default=None, primary_key=True)
    email: str | None = Field(default=None, sa_column=Column(String(320)))
    email_hash: str | None = Field(default=None, sa_column=Column(KeyedHash))
    domain_hash: str | None = Field(default=None, sa_column=Column(KeyedHash))
    name: str | None = Field(default=None, sa_column=Column(String(200)))
    phone: str | None = Field(default=None, sa_column=Column(String(32)))
    phone_hash: str | None = Field(default=None, sa_column=Column(KeyedHash))
    address_line1: str | None = Field(default=None, sa_column=Column(String(200)))
    address_line2: str | None = Field(default=None, sa_column=Column(String(200)))
    city: str | None = Field(default=None, sa_column=Column(String(120)))
    region: str | None = Field(default=None, sa_column=Column(String(120)))
    zip: str | None = Field(default=None, sa_column=Column(String(20)))
    country: str | None = Field(default=None, sa_column=Column(String(2)))
    postal_hash: str | None = Field(default=None, sa_column=Column(KeyedHash))
    company: str | None = Field(default=None, sa_column=Column(String(200)))
    position: str | None = Field(default=None, sa_column=Column(String(200)))
    primary_business: str | None = Field(default=None, sa_column=Column(String(200)))
    attributes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONType))
    date_of_birth: date | None = None
    age_confirmed: bool = False
    source: str = Field(default="api", sa_column=Column(String(20), nullable=False))
    source_detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(ProvenanceJSON))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    #: Set when the person was erased; every personal field is then empty.
    erased_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
