"""Data-subject requests (access, erasure, rectification): the compliance staff's queue.

Rules:
- a request is due ``data_request_due_days`` (a month by default) after it was received;
  the queue is ordered by due date, and an open request past it is *overdue*;
- completing an access request hands over the export of everything held (the same export
  as ``GET /api/v1/contacts/{id}/export``); completing an erasure request erases the
  contact through the contacts service, which leaves the keyed-hash suppression (DESIGN
  invariant 7) — and, when no contact is held any more, still makes sure the address is
  suppressed for good;
- a refusal needs a reason (e.g. the identity could not be verified);
- a closed request (done or refused) cannot be closed again: that is a conflict;
- every action is written to the audit trail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from app.auth import audit
from app.auth.actor import Actor
from app.config import get_settings
from app.contacts import repository as contacts_repo
from app.contacts import service as contacts
from app.contacts.identifiers import normalise_email
from app.errors import Conflict, NotFound, ValidationProblem
from app.models import Contact, DataRequest, utcnow
from app.suppression import repository as suppression_repo
from app.suppression.hashing import IdentifierKind, keyed_hash
from app.suppression.policy import Origin, Reason
from app.suppression.service import add_hashed

DUE_SOON_DAYS = 7
MAX_NOTE = 2000


class Kind(StrEnum):
    ACCESS = "access"
    ERASURE = "erasure"
    RECTIFICATION = "rectification"


class Status(StrEnum):
    OPEN = "open"
    DONE = "done"
    REFUSED = "refused"


class Arrival(StrEnum):
    """How the request reached us (``web`` is the preference centre)."""

    WEB = "web"
    EMAIL = "email"
    PHONE = "phone"
    LETTER = "letter"
    IN_PERSON = "in_person"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class RequestView:
    """A request as the queue shows it."""

    request: DataRequest
    contact_erased: bool
    #: Whole days until the due date (negative once overdue); None once closed.
    days_left: int | None
    overdue: bool


@dataclass(frozen=True, slots=True)
class Counts:
    open: int
    due_this_week: int
    overdue: int


@dataclass(frozen=True, slots=True)
class Completion:
    view: RequestView
    #: The export handed over for an access request (None when nothing is held).
    export: dict[str, Any] | None
    #: True when completing this request erased the contact.
    erased: bool
    message: str


def days_left(due_at: datetime, now: datetime) -> int:
    """Whole days until ``due_at``: 1 for "due within the next 24 hours", 0 or less once past."""
    return math.ceil((due_at - now) / timedelta(days=1))


def _view(request: DataRequest, contact: Contact | None, now: datetime) -> RequestView:
    erased = request.contact_id is None or contact is None or contact.erased_at is not None
    is_open = request.status == Status.OPEN
    return RequestView(
        request=request,
        contact_erased=erased,
        days_left=days_left(request.due_at, now) if is_open else None,
        overdue=is_open and request.due_at < now,
    )


def view(session: Session, request: DataRequest, *, now: datetime | None = None) -> RequestView:
    contact = session.get(Contact, request.contact_id) if request.contact_id is not None else None
    return _view(request, contact, now or utcnow())


def list_requests(
    session: Session,
    *,
    status: Status | None = Status.OPEN,
    kind: Kind | None = None,
    overdue_only: bool = False,
    limit: int = 100,
    offset: int = 0,
    now: datetime | None = None,
) -> list[RequestView]:
    """The queue, most urgent first (earliest due date). ``status=None`` lists every status."""
    now = now or utcnow()
    stmt = select(DataRequest, Contact).outerjoin(Contact, col(Contact.id) == col(DataRequest.contact_id))
    if overdue_only:
        stmt = stmt.where(DataRequest.status == Status.OPEN, col(DataRequest.due_at) < now)
    elif status is not None:
        stmt = stmt.where(DataRequest.status == status)
    if kind is not None:
        stmt = stmt.where(DataRequest.kind == kind)
    stmt = stmt.order_by(col(DataRequest.due_at), col(DataRequest.id)).limit(limit).offset(offset)
    return [_view(request, contact, now) for request, contact in session.exec(stmt)]


def get(session: Session, request_id: int, *, for_update: bool = False) -> DataRequest:
    """The request; ``for_update`` locks its row (PostgreSQL) so that two people answering
    it at once cannot both close it."""
    request = session.get(DataRequest, request_id, with_for_update=for_update)
    if request is None:
        raise NotFound(f"data request {request_id} not found")
    return request


def _count_open(session: Session, *, due_before: datetime | None = None) -> int:
    stmt = select(func.count(col(DataRequest.id))).where(DataRequest.status == Status.OPEN)
    if due_before is not None:
        stmt = stmt.where(col(DataRequest.due_at) < due_before)
    return int(session.exec(stmt).one())


def count_overdue(session: Session, *, now: datetime | None = None) -> int:
    return _count_open(session, due_before=now or utcnow())


def counts(session: Session, *, now: datetime | None = None) -> Counts:
    """Open requests; those due within a week (overdue ones included); those overdue."""
    now = now or utcnow()
    return Counts(
        open=_count_open(session),
        due_this_week=_count_open(session, due_before=now + timedelta(days=DUE_SOON_DAYS)),
        overdue=_count_open(session, due_before=now),
    )


def _clean_note(note: str | None, *, field: str = "note") -> str | None:
    note = (note or "").strip()
    if "\x00" in note:
        raise ValidationProblem("must not contain the NUL character (U+0000)", field=field)
    if len(note) > MAX_NOTE:
        raise ValidationProblem(f"at most {MAX_NOTE} characters", field=field)
    return note or None


def create(
    session: Session,
    actor: Actor,
    *,
    kind: Kind,
    contact_id: int | None = None,
    email: str | None = None,
    channel: Arrival = Arrival.EMAIL,
    note: str | None = None,
    received_at: datetime | None = None,
) -> tuple[RequestView, bool]:
    """Record a request that arrived by letter, phone or email. The person is named by a
    contact id or an email address (an address we hold nothing about is accepted: an
    erasure request for it still ends in a suppression). An open request of the same kind
    for the same person is not repeated. Returns (view, created)."""
    if (contact_id is None) == (not email):
        raise ValidationProblem("give either contact_id or email", field="contact_id")
    contact: Contact | None
    if contact_id is not None:
        contact = contacts_repo.get_live(session, contact_id)
        if contact is None:
            raise NotFound(f"contact {contact_id} not found (or already erased)")
        address_hash = contact.email_hash
    else:
        assert email is not None
        try:
            address = normalise_email(email)
        except ValidationProblem as exc:
            raise ValidationProblem(exc.message, field="email") from exc
        address_hash = keyed_hash(IdentifierKind.EMAIL, address.key)
        contact = contacts.find_by_email(session, email)
    clean_note = _clean_note(note)
    now = utcnow()
    received = received_at or now
    if received > now:
        raise ValidationProblem("the request cannot be received in the future", field="received_at")

    request, created = open_request(
        session,
        kind=kind,
        contact_id=contact.id if contact is not None else None,
        address_hash=address_hash,
        channel=channel,
        note=clean_note,
        received_at=received,
    )
    if not created:
        return view(session, request, now=now), False
    audit.record(
        session,
        actor,
        "data_request.create",
        target_type="data_request",
        target_id=request.id,
        detail={"kind": str(kind), "channel": str(channel), "contact_id": request.contact_id},
    )
    session.flush()
    return _view(request, contact, now), True


def open_request(
    session: Session,
    *,
    kind: str,
    contact_id: int | None,
    address_hash: str | None,
    channel: str,
    note: str | None,
    received_at: datetime,
) -> tuple[DataRequest, bool]:
    """The person's open request of this kind, or a new one, due
    ``data_request_due_days`` after it arrived. Returns (request, created): an open request
    is never repeated, wherever the new one comes from (preference centre, staff)."""
    same = select(DataRequest).where(DataRequest.kind == kind, DataRequest.status == Status.OPEN)
    if contact_id is not None:
        same = same.where(DataRequest.contact_id == contact_id)
    else:
        same = same.where(col(DataRequest.contact_id).is_(None), DataRequest.address_hash == address_hash)
    existing = session.exec(same.order_by(col(DataRequest.id))).first()
    if existing is not None:
        return existing, False
    request = DataRequest(
        contact_id=contact_id,
        address_hash=address_hash,
        kind=kind,
        status=Status.OPEN,
        channel=channel,
        note=note,
        received_at=received_at,
        due_at=received_at + timedelta(days=get_settings().data_request_due_days),
    )
    session.add(request)
    session.flush()
    return request, True


def _require_open(request: DataRequest) -> None:
    if request.status != Status.OPEN:
        closed = request.closed_at.strftime("%Y-%m-%d %H:%M UTC") if request.closed_at else "earlier"
        raise Conflict(f"data request {request.id} is already {request.status} (closed {closed})")


def _close(request: DataRequest, status: Status, line: str, actor: Actor) -> None:
    now = utcnow()
    if actor.user_id:
        who = f"user {actor.user_id}"
    else:
        who = f"token {actor.token_id}" if actor.token_id else "system"
    entry = f"[{status} {now:%Y-%m-%d} by {who}] {line}"
    request.status = status
    request.closed_at = now
    request.note = f"{request.note}\n{entry}" if request.note else entry


def _suppress_address(session: Session, address_hash: str, actor: Actor, request_id: int | None) -> None:
    """An erasure request for an address we hold no contact for: still never contact it."""
    stronger = [
        s
        for s in suppression_repo.active_for_hashes(session, [address_hash])
        if s.channel is None and s.topic is None and s.reason in (Reason.ERASURE, Reason.UNDERAGE)
    ]
    if stronger:
        return
    add_hashed(
        session,
        address_hash=address_hash,
        kind=IdentifierKind.EMAIL,
        hint=None,
        channel=None,
        topic=None,
        reason=Reason.ERASURE,
        origin=Origin.STAFF if actor.kind == "staff" else Origin.SYSTEM,
        method="staff",
        note=f"erasure request {request_id}",
        actor=actor,
    )


def _live_contact(session: Session, request: DataRequest) -> Contact | None:
    """The person the request is about, if we still hold them. A request recorded for an
    address we held nothing about is matched again: the person may have arrived since."""
    if request.contact_id is not None:
        return contacts_repo.get_live(session, request.contact_id)
    if not request.address_hash:
        return None
    contact = contacts_repo.by_email_hash(session, request.address_hash)
    if contact is None or contact.erased_at is not None:
        return None
    request.contact_id = contact.id
    return contact


def complete(session: Session, request_id: int, actor: Actor, *, note: str | None = None) -> Completion:
    """Answer an open request: hand over the export (access), erase (erasure) or record
    that the data was rectified (rectification); then mark it done."""
    request = get(session, request_id, for_update=True)
    _require_open(request)
    clean_note = _clean_note(note)
    contact = _live_contact(session, request)
    export: dict[str, Any] | None = None
    erased = False
    if request.kind == Kind.ACCESS:
        if contact is not None:
            export = contacts.export(session, contact)
            audit.record(session, actor, "contact.export", target_type="contact", target_id=contact.id)
            message = f"Export of contact {contact.id} handed over."
        else:
            message = "No personal data is held about this person (erased or never known)."
    elif request.kind == Kind.ERASURE:
        if contact is not None:
            contacts.erase(session, contact, actor, note=f"erasure request {request.id}")
            erased = True
            message = f"Contact {contact.id} erased; the address stays suppressed."
        else:
            if request.address_hash:
                _suppress_address(session, request.address_hash, actor, request.id)
            message = "Already erased (or never held); the address stays suppressed."
    else:
        message = "Rectification recorded."
    # ``contacts.erase`` closes the person's open erasure requests itself; close ours here
    # in every case so that the note and closing time are this answer's.
    _close(request, Status.DONE, clean_note or message, actor)
    session.add(request)
    audit.record(
        session,
        actor,
        "data_request.complete",
        target_type="data_request",
        target_id=request.id,
        detail={
            "kind": request.kind,
            "contact_id": request.contact_id,
            "erased": erased,
            "exported": export is not None,
            **({"note": clean_note} if clean_note else {}),
        },
    )
    session.flush()
    return Completion(view=view(session, request), export=export, erased=erased, message=message)


def refuse(session: Session, request_id: int, actor: Actor, *, reason: str) -> RequestView:
    """Refuse an open request, saying why (e.g. the identity could not be verified)."""
    request = get(session, request_id, for_update=True)
    _require_open(request)
    clean = _clean_note(reason, field="reason")
    if clean is None or len(clean) < 3:
        raise ValidationProblem("say why the request is refused", field="reason")
    _close(request, Status.REFUSED, f"Refused: {clean}", actor)
    session.add(request)
    audit.record(
        session,
        actor,
        "data_request.refuse",
        target_type="data_request",
        target_id=request.id,
        detail={"kind": request.kind, "contact_id": request.contact_id, "reason": clean},
    )
    session.flush()
    return view(session, request)
