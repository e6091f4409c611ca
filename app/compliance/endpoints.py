"""Compliance: the audit trail, proof of who consented to what, and the queue of
data-subject requests (access, erasure, rectification). Thin: the rules are in
``app.compliance.service``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import ColumnElement
from sqlmodel import col, or_, select

from app.auth.actor import Actor
from app.compliance import service
from app.compliance.schemas import (
    CompleteIn,
    CompletionOut,
    CountsOut,
    DataRequestCreated,
    DataRequestIn,
    DataRequestList,
    DataRequestOut,
    RefuseIn,
)
from app.compliance.service import Kind, Status
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


# --------------------------------------------------------------------------- data requests
RequestId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.get("/data-requests", response_model=DataRequestList)
def list_data_requests(
    session: SessionDep,
    actor: Compliance,
    status: Annotated[Status | Literal["all"], Query()] = Status.OPEN,
    kind: Annotated[Kind | None, Query()] = None,
    overdue: Annotated[bool, Query(description="only open requests past their due date")] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> DataRequestList:
    """The queue, earliest due date first (``status`` defaults to ``open``; ``all`` for every one)."""
    views = service.list_requests(
        session,
        status=None if status == "all" else Status(status),
        kind=kind,
        overdue_only=overdue,
        limit=limit,
        offset=offset,
    )
    return DataRequestList(
        items=[DataRequestOut.of(v) for v in views], counts=CountsOut.of(service.counts(session))
    )


@router.post(
    "/data-requests",
    response_model=DataRequestCreated,
    status_code=201,
    responses={200: {"description": "an open request of this kind for this person already exists"}},
)
def create_data_request(data: DataRequestIn, session: SessionDep, actor: Compliance) -> Any:
    """Record a request that arrived by letter, phone or email."""
    view, created = service.create(
        session,
        actor,
        kind=data.kind,
        contact_id=data.contact_id,
        email=data.email,
        channel=data.channel,
        note=data.note,
        received_at=data.received_at,
    )
    out = DataRequestCreated(**DataRequestOut.of(view).model_dump(), created=created)
    return JSONResponse(out.model_dump(mode="json"), status_code=201 if created else 200)


@router.get("/data-requests/{request_id}", response_model=DataRequestOut)
def read_data_request(request_id: RequestId, session: SessionDep, actor: Compliance) -> DataRequestOut:
    return DataRequestOut.of(service.view(session, service.get(session, request_id)))


@router.post("/data-requests/{request_id}/complete", response_model=CompletionOut)
def complete_data_request(
    request_id: RequestId, session: SessionDep, actor: Compliance, data: CompleteIn | None = None
) -> CompletionOut:
    """Access: returns the export of everything held. Erasure: erases the contact (the
    keyed-hash suppression stays). Then the request is done; a closed one answers 409."""
    return CompletionOut.of(service.complete(session, request_id, actor, note=data.note if data else None))


@router.post("/data-requests/{request_id}/refuse", response_model=DataRequestOut)
def refuse_data_request(
    request_id: RequestId, data: RefuseIn, session: SessionDep, actor: Compliance
) -> DataRequestOut:
    """Refuse with a reason (e.g. the identity could not be verified); a closed one answers 409."""
    return DataRequestOut.of(service.refuse(session, request_id, actor, reason=data.reason))
