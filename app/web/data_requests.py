"""Staff web UI: the queue of data-subject requests (access, erasure, rectification).

Compliance staff (and admins) see the open requests by due date, overdue ones first and
marked, and complete or refuse each one; they also record requests that arrived by letter
or phone. Thin, like the rest of ``app.web``: the rules live in ``app.compliance.service``."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlmodel import Session

from app.auth import audit
from app.compliance import service
from app.compliance.service import Arrival, Kind, Status
from app.contacts import repository as contacts_repo
from app.contacts import service as contacts
from app.deps import SessionDep
from app.errors import DomainError
from app.models import DataRequest, User
from app.web import csrf
from app.web.endpoints import (
    REQUEST_HANDLERS,
    UserDep,
    csrf_rejected,
    error_page,
    not_found,
    parse_id,
    staff_actor,
    to_login,
)
from app.web.templating import flash, render

router = APIRouter(include_in_schema=False)

HANDLERS = REQUEST_HANDLERS
PER_PAGE = 100
KINDS: tuple[tuple[str, str], ...] = (
    (Kind.ACCESS.value, "Access (a copy of their data)"),
    (Kind.ERASURE.value, "Erasure"),
    (Kind.RECTIFICATION.value, "Rectification"),
)
ARRIVALS: tuple[tuple[str, str], ...] = (
    (Arrival.EMAIL.value, "Email"),
    (Arrival.PHONE.value, "Phone call"),
    (Arrival.LETTER.value, "Letter"),
    (Arrival.IN_PERSON.value, "In person"),
    (Arrival.OTHER.value, "Other"),
)
STATUSES: tuple[tuple[str, str], ...] = (
    ("open", "Open"),
    ("done", "Done"),
    ("refused", "Refused"),
    ("all", "All"),
)
FormText = Annotated[str, Form()]


def may_handle(user: User) -> bool:
    return user.role in HANDLERS


def not_allowed(request: Request, user: User) -> Response:
    return error_page(request, user, 403, "Not allowed", "Only compliance staff can see data requests.")


def _page(
    request: Request,
    session: Session,
    user: User,
    *,
    status: str = "open",
    kind: str = "",
    overdue: bool = False,
    form: dict[str, str] | None = None,
    error: str | None = None,
    error_for: int | None = None,
    status_code: int = 200,
) -> Response:
    views = service.list_requests(
        session,
        status=None if status == "all" else Status(status),
        kind=Kind(kind) if kind else None,
        overdue_only=overdue,
        limit=PER_PAGE,
    )
    context: dict[str, Any] = {
        "views": views,
        "counts": service.counts(session),
        "status": status,
        "kind": kind,
        "overdue": overdue,
        "kinds": KINDS,
        "arrivals": ARRIVALS,
        "statuses": STATUSES,
        "form": form or {"person": "", "kind": Kind.ACCESS.value, "channel": Arrival.EMAIL.value, "note": ""},
        "error": error,
        "error_for": error_for,
        "per_page": PER_PAGE,
    }
    return render(
        request, "data_requests.html", context, user=user, status_code=status_code, active="requests"
    )


@router.get("/requests")
def requests_page(
    request: Request,
    session: SessionDep,
    user: UserDep,
    status: str = "open",
    kind: str = "",
    overdue: str = "",
) -> Response:
    if user is None:
        return to_login()
    if not may_handle(user):
        return not_allowed(request, user)
    return _page(
        request,
        session,
        user,
        status=status if status in {value for value, _ in STATUSES} else "open",
        kind=kind if kind in {value for value, _ in KINDS} else "",
        overdue=overdue in ("1", "on", "true"),
    )


@router.post("/requests")
def record_request(
    request: Request,
    session: SessionDep,
    user: UserDep,
    person: FormText = "",
    kind: FormText = "",
    channel: FormText = "",
    note: FormText = "",
    csrf_token: FormText = "",
) -> Response:
    if user is None:
        return to_login()
    if not csrf.is_valid(request, csrf_token):
        return csrf_rejected(request, user)
    if not may_handle(user):
        return not_allowed(request, user)
    form = {"person": person.strip()[:320], "kind": kind, "channel": channel, "note": note.strip()}
    problem = None
    if not form["person"]:
        problem = "Enter the person's email address or contact number."
    elif kind not in {value for value, _ in KINDS}:
        problem = "Choose what the person asks for."
    elif channel not in {value for value, _ in ARRIVALS}:
        problem = "Choose how the request arrived."
    if problem is not None:
        return _page(request, session, user, form=form, error=problem, status_code=422)
    contact_id = parse_id(form["person"].lstrip("#"))
    try:
        view, created = service.create(
            session,
            staff_actor(request, user),
            kind=Kind(kind),
            contact_id=contact_id,
            email=None if contact_id is not None else form["person"],
            channel=Arrival(channel),
            note=form["note"] or None,
        )
    except DomainError as exc:
        session.rollback()
        return _page(request, session, user, form=form, error=exc.message, status_code=exc.status_code)
    due = view.request.due_at.strftime("%d %B %Y")
    if created:
        flash(request, f"Request {view.request.id} recorded; it is due on {due}.")
    else:
        flash(request, f"An open {kind} request for this person already exists (request {view.request.id}).")
    return RedirectResponse("/requests", status_code=303)


def _target(request: Request, session: Session, user: User | None, raw_id: str) -> DataRequest | Response:
    if user is None:
        return to_login()
    if not may_handle(user):
        return not_allowed(request, user)
    number = parse_id(raw_id)
    found = session.get(DataRequest, number) if number is not None else None
    if found is None:
        return not_found(request, user, "There is no data request with this number.")
    return found


@router.post("/requests/{request_id}/complete")
def complete(
    request: Request,
    session: SessionDep,
    user: UserDep,
    request_id: str,
    note: FormText = "",
    confirm: FormText = "",
    csrf_token: FormText = "",
) -> Response:
    if user is not None and not csrf.is_valid(request, csrf_token):
        return csrf_rejected(request, user)
    target = _target(request, session, user, request_id)
    if isinstance(target, Response):
        return target
    assert user is not None and target.id is not None
    if target.kind == Kind.ERASURE and target.status == Status.OPEN and confirm != "yes":
        return _page(
            request,
            session,
            user,
            error="Tick the box to confirm the erasure: it cannot be undone.",
            error_for=target.id,
            status_code=422,
        )
    try:
        done = service.complete(session, target.id, staff_actor(request, user), note=note)
    except DomainError as exc:
        session.rollback()
        return _page(
            request, session, user, error=exc.message, error_for=target.id, status_code=exc.status_code
        )
    message = f"Request {target.id} is done. {done.message}"
    if done.export is not None:
        message += " Download the export from the request's row (Done requests)."
    flash(request, message)
    return RedirectResponse("/requests", status_code=303)


@router.post("/requests/{request_id}/refuse")
def refuse(
    request: Request,
    session: SessionDep,
    user: UserDep,
    request_id: str,
    reason: FormText = "",
    csrf_token: FormText = "",
) -> Response:
    if user is not None and not csrf.is_valid(request, csrf_token):
        return csrf_rejected(request, user)
    target = _target(request, session, user, request_id)
    if isinstance(target, Response):
        return target
    assert user is not None and target.id is not None
    if not reason.strip():
        return _page(
            request,
            session,
            user,
            error="Say why the request is refused (for example: identity not verified).",
            error_for=target.id,
            status_code=422,
        )
    try:
        service.refuse(session, target.id, staff_actor(request, user), reason=reason)
    except DomainError as exc:
        session.rollback()
        return _page(
            request, session, user, error=exc.message, error_for=target.id, status_code=exc.status_code
        )
    flash(request, f"Request {target.id} refused.")
    return RedirectResponse("/requests", status_code=303)


@router.get("/requests/{request_id}/export.json")
def export(request: Request, session: SessionDep, user: UserDep, request_id: str) -> Response:
    """Everything held about the person who made an access request (audited, like the API)."""
    target = _target(request, session, user, request_id)
    if isinstance(target, Response):
        return target
    assert user is not None
    contact = (
        contacts_repo.get_live(session, target.contact_id)
        if target.kind == Kind.ACCESS and target.contact_id is not None
        else None
    )
    if contact is None:
        return not_found(request, user, "There is nothing to export: the person is not (or no longer) held.")
    audit.record(
        session,
        staff_actor(request, user),
        "contact.export",
        target_type="contact",
        target_id=contact.id,
        detail={"data_request": target.id},
    )
    body = json.dumps(contacts.export(session, contact), ensure_ascii=False, indent=2)
    return Response(
        body,
        media_type="application/json; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="data-request-{target.id}-export.json"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )
