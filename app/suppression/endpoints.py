"""Suppression routes: list, add (any staff role), lift (admin only, audited)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import JSONResponse

from app.auth.actor import Actor
from app.deps import ALL_STAFF, Require, SessionDep
from app.models import Role
from app.suppression import repository, service
from app.suppression.schemas import SuppressionIn, SuppressionList, SuppressionOut
from app.topics.service import require_topic

router = APIRouter(prefix="/api/v1/suppressions", tags=["suppressions"])

Staff = Annotated[Actor, Depends(Require(*ALL_STAFF))]
Admin = Annotated[Actor, Depends(Require(Role.ADMIN))]


@router.get("", response_model=SuppressionList)
def list_suppressions(
    session: SessionDep,
    actor: Staff,
    address: Annotated[str | None, Query(max_length=320)] = None,
    channel: Annotated[str | None, Query(pattern="^(email|postal|phone)$")] = None,
    reason: Annotated[str | None, Query(max_length=20, pattern="^[a-z_]+$")] = None,
    include_lifted: bool = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> SuppressionList:
    """``?address=`` finds the entries for that address by its keyed hash (also after
    erasure), including entries for its domain."""
    if address is not None:
        rows = service.list_for_address(
            session, address, include_lifted=include_lifted, field="query.address"
        )
    else:
        rows = repository.search(
            session, channel=channel, reason=reason, include_lifted=include_lifted, limit=limit, offset=offset
        )
    return SuppressionList(items=[SuppressionOut.of(r) for r in rows])


@router.post("", response_model=SuppressionOut, status_code=201)
def add(data: SuppressionIn, session: SessionDep, actor: Staff) -> JSONResponse:
    """Record an opt-out that reached staff (phone, letter, email) or block an address or domain."""
    topic = None if data.scope == "all" else require_topic(session, data.scope, field="scope")
    channel = data.channel or service.identify(data.address, kind=data.kind).default_channel
    row, created = service.add_for_address(
        session,
        address=data.address,
        channel=None if channel == "all" else channel,
        topic=topic,
        reason=data.reason,
        method=data.method,
        note=data.note,
        actor=actor,
        kind=data.kind,
    )
    return JSONResponse(SuppressionOut.of(row).model_dump(mode="json"), status_code=201 if created else 200)


@router.delete("/{suppression_id}", response_model=SuppressionOut)
def lift(
    suppression_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    session: SessionDep,
    actor: Admin,
    note: Annotated[str | None, Query(max_length=2000, pattern=r"^[^\x00]*$")] = None,
) -> SuppressionOut:
    """Lift a suppression (admin only). It is kept as history and the act is audited."""
    return SuppressionOut.of(service.lift(session, suppression_id, actor=actor, note=note))
