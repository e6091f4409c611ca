"""Staff users, API tokens (stored hashed) and the audit trail of staff actions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, ForeignKey, Index, Integer, String
from sqlmodel import Field, SQLModel

from app.models.base import HashString, JSONType, UTCDateTime, utcnow


class User(SQLModel, table=True):
    __tablename__ = "app_user"

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(sa_column=Column(String(320), unique=True, nullable=False))
    name: str = Field(default="", sa_column=Column(String(200), nullable=False))
    role: str = Field(sa_column=Column(String(12), nullable=False))
    password_hash: str | None = Field(default=None, sa_column=Column(String(300)))
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_login_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class ApiToken(SQLModel, table=True):
    __tablename__ = "api_token"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(default="", sa_column=Column(String(200), nullable=False))
    role: str = Field(sa_column=Column(String(12), nullable=False))
    #: SHA-256 of the whole token: tokens carry 256 random bits, so a fast hash suffices.
    token_hash: str = Field(sa_column=Column(HashString, unique=True, nullable=False))
    prefix: str = Field(sa_column=Column(String(16), nullable=False))
    user_id: int | None = Field(default=None, sa_column=Column(Integer, ForeignKey("app_user.id")))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class AuditLog(SQLModel, table=True):
    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_at", "at"),
        Index("ix_audit_target", "target_type", "target_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    actor_token_id: int | None = Field(default=None, sa_column=Column(Integer, ForeignKey("api_token.id")))
    actor_user_id: int | None = Field(default=None, sa_column=Column(Integer, ForeignKey("app_user.id")))
    actor_role: str | None = Field(default=None, sa_column=Column(String(12)))
    action: str = Field(sa_column=Column(String(60), nullable=False))
    target_type: str | None = Field(default=None, sa_column=Column(String(40)))
    target_id: str | None = Field(default=None, sa_column=Column(String(64)))
    ip: str | None = Field(default=None, sa_column=Column(String(64)))
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONType))
