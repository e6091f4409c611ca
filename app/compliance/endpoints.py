"""Compliance: the audit trail, and proof of who consented to what."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel
from sqlalchemy import ColumnElement
from sqlmodel import col, or_, select

from app.auth.actor import Actor
from app.deps import Require, SessionDep
from app.models import AuditLog, ConsentEvent, Role
from app.suppression.service import lookup_hashes

router = APIRouter(prefix="/api/v1", tags=["compliance"])
Compliance = Annotated[Actor, Depends(Require(Role.COMPLIANCE))]


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor_token_id: int | None
    actor_user_id: int | None
    actor_role: str | None
    action: str
    target_type: str | None
    target_id: str | None
    detail: dict[str, Any]


class ConsentOut(BaseModel):
    id: int
    contact_id: int | None
    channel: str | None
    topic: str | None
    status: str
    previous_status: str | None
    method: str
    actor: str
    text_shown: str | None
    text_version: str | None
    ip: str | None
    user_agent: str | None
    evidence: dict[str, Any]
    occurred_at: datetime


@router.get("/audit", response_model=dict[str, list[AuditOut]])
def audit_log(
    session: SessionDep,
    actor: Compliance,
    action: Annotated[str | None, Query(max_length=60, pattern=r"^[a-z0-9_.]+$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> dict[str, list[AuditOut]]:
    stmt = select(AuditLog)
    if action:
        stmt = stmt.where(AuditLog.action == action)
    rows = session.exec(stmt.order_by(col(AuditLog.id).desc()).limit(limit).offset(offset))
    return {"items": [AuditOut.model_validate(r, from_attributes=True) for r in rows]}


@router.get("/consent-events", response_model=dict[str, list[ConsentOut]])
def consent_events(
    session: SessionDep,
    actor: Compliance,
    contact_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    address: Annotated[str | None, Query(max_length=320)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> dict[str, list[ConsentOut]]:
    """The consent ledger for a contact or an address (found by its keyed hash)."""
    stmt = select(ConsentEvent)
    conditions: list[ColumnElement[bool]] = []
    if contact_id is not None:
        conditions.append(col(ConsentEvent.contact_id) == contact_id)
    if address:
        conditions.append(col(ConsentEvent.address_hash).in_(lookup_hashes(address, field="query.address")))
    if conditions:
        stmt = stmt.where(or_(*conditions))
    rows = session.exec(stmt.order_by(col(ConsentEvent.id)).limit(limit))
    return {"items": [ConsentOut.model_validate(r, from_attributes=True) for r in rows]}
