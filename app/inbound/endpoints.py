"""Inbound mail routes: intake (store, then classify in the background) and reading.

``POST /api/v1/inbound`` takes the raw RFC 5322 message as the body (``Content-Type:
message/rfc822``; ``text/plain`` and ``application/octet-stream`` are accepted too) and
answers ``202 {"id", …}`` once the message is stored. A message larger than
``LISTWARDEN_INBOUND_MAX_BYTES`` (25 MB) is stored *truncated* to that size, marked
(``truncated: true``, its real size, an ``error`` note) and still answered 202: its head
holds the headers and any delivery report. Above the hard limit (4 × the maximum) the
answer is 413 and nothing is stored. An empty body is refused (422).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from app.auth.actor import Actor
from app.deps import ALL_STAFF, Require, SessionDep
from app.errors import PayloadTooLarge, UnsupportedType, ValidationProblem
from app.inbound import repository, service
from app.inbound.schemas import InboundAccepted, InboundList, InboundOut, InboundSummary
from app.inbound.settings import get_inbound_settings
from app.models import Role

router = APIRouter(prefix="/api/v1/inbound", tags=["inbound"])

Staff = Annotated[Actor, Depends(Require(*ALL_STAFF))]
Admin = Annotated[Actor, Depends(Require(Role.ADMIN))]

_REFUSED_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded", "application/json")
_KINDS = "^(pending|bounce|complaint|autoreply|optout|reply|unparseable)$"


@dataclass(frozen=True, slots=True)
class RawBody:
    received: service.Received


async def read_raw_body(request: Request) -> RawBody:
    """Stream the body: keep the first ``max_bytes``, hash and count all of it."""
    settings = get_inbound_settings()
    ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if ctype in _REFUSED_TYPES:
        raise UnsupportedType(f"send the raw message as the body (Content-Type: message/rfc822), not {ctype}")
    digest = hashlib.sha256()
    kept = bytearray()
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > settings.resolved_hard_limit:
            raise PayloadTooLarge(
                f"message larger than {settings.resolved_hard_limit} bytes "
                "(LISTWARDEN_INBOUND_HARD_LIMIT_BYTES)"
            )
        digest.update(chunk)
        room = settings.max_bytes - len(kept)
        if room > 0:
            kept.extend(chunk[:room])
    if size == 0:
        raise ValidationProblem("the body must be the raw message (it is empty)", field="body")
    return RawBody(service.Received(data=bytes(kept), size=size, sha256=digest.hexdigest()))


@router.post("", response_model=InboundAccepted, status_code=202)
def receive(
    session: SessionDep,
    actor: Staff,
    body: Annotated[RawBody, Depends(read_raw_body)],
    envelope_from: Annotated[str | None, Query(max_length=320, pattern=r"^[^\x00\r\n]*$")] = None,
    envelope_to: Annotated[str | None, Query(max_length=320, pattern=r"^[^\x00\r\n]*$")] = None,
) -> JSONResponse:
    """Store a reply, bounce, complaint or auto-reply; it is classified in the background
    (``GET /api/v1/inbound/{id}`` shows the kind and effects)."""
    row, created = service.store(
        session, body.received, envelope_from=envelope_from, envelope_to=envelope_to, source="api"
    )
    assert row.id is not None
    answer = InboundAccepted(
        id=row.id,
        kind=row.kind,
        duplicate=not created,
        truncated=bool((row.detail or {}).get("truncated")),
        size_bytes=row.size_bytes,
    )
    return JSONResponse(answer.model_dump(), status_code=202)


@router.get("", response_model=InboundList)
def list_inbound(
    session: SessionDep,
    actor: Staff,
    kind: Annotated[str | None, Query(pattern=_KINDS)] = None,
    contact_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> InboundList:
    """Received mail, newest first; ``?kind=reply`` lists the replies for sales."""
    rows = repository.search(session, kind=kind, contact_id=contact_id, limit=limit, offset=offset)
    return InboundList(items=[InboundSummary.of(r) for r in rows])


@router.get("/{message_id}", response_model=InboundOut)
def read(
    message_id: Annotated[int, Path(ge=1, le=2**31 - 1)], session: SessionDep, actor: Staff
) -> InboundOut:
    return InboundOut.of(service.get(session, message_id))


@router.get("/{message_id}/raw", response_class=Response)
def read_raw(
    message_id: Annotated[int, Path(ge=1, le=2**31 - 1)], session: SessionDep, actor: Staff
) -> Response:
    """The message as stored (``message/rfc822``)."""
    row = service.get(session, message_id)
    return Response(content=row.raw, media_type="message/rfc822")


@router.post("/{message_id}/retry", response_model=InboundOut, status_code=202)
def retry(
    message_id: Annotated[int, Path(ge=1, le=2**31 - 1)], session: SessionDep, actor: Admin
) -> JSONResponse:
    """Classify a message again that is still pending (after an error); admin only."""
    row = service.retry(session, message_id)
    return JSONResponse(InboundOut.of(row).model_dump(mode="json"), status_code=202)
