"""Staff web UI (server-rendered, autoescaped).

Pages: login/logout, dashboard, contacts (list, detail), suppressions (list, add); imports
and data requests have modules of their own.
Every page needs a logged-in, active staff user (else 303 to ``/login``); every POST form
carries a CSRF token (else 403). The rules stay in the domain services; this module only
reads forms, calls them and renders templates."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlmodel import Session

from app.auth.actor import Actor
from app.auth.service import authenticate_user
from app.compliance import service as data_requests
from app.deps import SessionDep, client_ip
from app.errors import DomainError, NotFound
from app.models import Channel, Role, User
from app.suppression import repository as suppression_repo
from app.suppression import service as suppression_service
from app.suppression.policy import Reason
from app.topics.service import list_topics, require_topic
from app.web import csrf, service
from app.web.charts import bar_chart
from app.web.templating import flash, render

router = APIRouter(include_in_schema=False)

CONTACTS_PER_PAGE = 25
SUPPRESSIONS_PER_PAGE = 50
MAX_PAGE = 100_000
SESSION_USER_ID = "user_id"
SESSION_ROLE = "role"
#: Roles that answer data-subject requests (the "Requests" page).
REQUEST_HANDLERS = frozenset({Role.ADMIN.value, Role.COMPLIANCE.value})

#: Reasons staff may record; unsubscribe, one-click and reply come from the recipient paths.
STAFF_REASONS: tuple[str, ...] = tuple(
    r.value for r in Reason if r not in (Reason.UNSUBSCRIBE, Reason.ONE_CLICK, Reason.REPLY)
)
METHODS: tuple[tuple[str, str], ...] = (
    ("phone", "Phone call"),
    ("letter", "Letter"),
    ("email", "Email"),
    ("in_person", "In person"),
    ("other", "Other"),
)
CHANNELS: tuple[tuple[str, str], ...] = (
    ("email", "Email"),
    ("postal", "Postal"),
    ("phone", "Phone"),
    ("all", "All channels"),
)
FormText = Annotated[str, Form()]


def current_user(request: Request, session: SessionDep) -> User | None:
    user = service.active_user(session, request.session.get(SESSION_USER_ID))
    if user is None and SESSION_USER_ID in request.session:
        request.session.pop(SESSION_USER_ID, None)  # deleted or deactivated since login
        request.session.pop(SESSION_ROLE, None)
    if user is not None and user.role in REQUEST_HANDLERS:
        # The nav shows it on every page, so that nobody misses the one-month deadline.
        request.state.overdue_requests = data_requests.count_overdue(session)
    return user


UserDep = Annotated[User | None, Depends(current_user)]


def to_login() -> RedirectResponse:
    return RedirectResponse("/login", status_code=303)


def staff_actor(request: Request, user: User) -> Actor:
    return Actor(
        kind="staff",
        role=user.role,
        user_id=user.id,
        ip=client_ip(request),
        user_agent=(request.headers.get("user-agent") or "")[:500] or None,
    )


def error_page(request: Request, user: User | None, status_code: int, title: str, message: str) -> Response:
    return render(
        request,
        "error.html",
        {"title": title, "message": message, "status_code": status_code},
        user=user,
        status_code=status_code,
    )


def csrf_rejected(request: Request, user: User | None) -> Response:
    return error_page(
        request,
        user,
        403,
        "Form expired",
        "This form was not accepted because its security token is missing or out of date. "
        "Go back, reload the page and try again.",
    )


def not_found(request: Request, user: User | None, message: str) -> Response:
    return error_page(request, user, 404, "Not found", message)


def parse_page(raw: str | None) -> int:
    try:
        page = int(raw or "1")
    except ValueError:
        return 1
    return min(max(page, 1), MAX_PAGE)


def parse_id(raw: str) -> int | None:
    if not raw.isascii() or not raw.isdigit():
        return None
    value = int(raw)
    return value if 1 <= value <= 2**31 - 1 else None


# ---------------------------------------------------------------------------- login / logout
@router.get("/login")
def login_form(request: Request, user: UserDep) -> Response:
    if user is not None:
        return RedirectResponse("/", status_code=303)
    return render(request, "login.html", {"email": "", "error": None})


@router.post("/login")
def login(
    request: Request,
    session: SessionDep,
    email: FormText = "",
    password: FormText = "",
    csrf_token: FormText = "",
) -> Response:
    if not csrf.is_valid(request, csrf_token):
        return csrf_rejected(request, None)
    user = None
    if email and password and len(email) <= 320 and len(password) <= 1000:
        user = authenticate_user(session, email, password)
    if user is None:
        return render(
            request,
            "login.html",
            {"email": email[:320], "error": "The email address or password is incorrect."},
            status_code=400,
        )
    request.session.clear()
    request.session[SESSION_USER_ID] = user.id
    request.session[SESSION_ROLE] = user.role
    csrf.rotate_token(request)
    return RedirectResponse("/", status_code=303)


@router.post("/logout")
def logout(request: Request, user: UserDep, csrf_token: FormText = "") -> Response:
    if not csrf.is_valid(request, csrf_token):
        return csrf_rejected(request, user)
    request.session.clear()
    csrf.rotate_token(request)
    flash(request, "You have been logged out.")
    return to_login()


# ---------------------------------------------------------------------------- dashboard
@router.get("/")
def dashboard(request: Request, session: SessionDep, user: UserDep) -> Response:
    if user is None:
        return to_login()
    stats = service.dashboard(session)
    return render(
        request,
        "dashboard.html",
        {
            "stats": stats,
            "request_counts": data_requests.counts(session) if user.role in REQUEST_HANDLERS else None,
            "recent_days": service.RECENT_DAYS,
            "reason_chart": bar_chart("Active suppressions by reason", stats.suppressions_by_reason),
            "source_chart": bar_chart("Live contacts by source", stats.contacts_by_source),
        },
        user=user,
        active="dashboard",
    )


# ---------------------------------------------------------------------------- contacts
@router.get("/contacts")
def contacts(request: Request, session: SessionDep, user: UserDep, q: str = "", page: str = "1") -> Response:
    if user is None:
        return to_login()
    query = q.strip()[:200]
    number = parse_page(page)
    rows, has_next = service.search_contacts(session, query, page=number, per_page=CONTACTS_PER_PAGE)
    return render(
        request,
        "contacts.html",
        {
            "q": query,
            "contacts": rows,
            "page": number,
            "has_next": has_next,
            "total": service.count_contacts_matching(session, query),
        },
        user=user,
        active="contacts",
    )


@router.get("/contacts/{contact_id}")
def contact(request: Request, session: SessionDep, user: UserDep, contact_id: str) -> Response:
    if user is None:
        return to_login()
    number = parse_id(contact_id)
    if number is None:
        return not_found(request, user, "There is no contact with this id.")
    try:
        detail = service.contact_detail(session, number)
    except NotFound:
        return not_found(request, user, f"Contact {number} does not exist or was erased.")
    return render(request, "contact.html", {"detail": detail}, user=user, active="contacts")


# ---------------------------------------------------------------------------- suppressions
def suppressions_page(
    request: Request,
    session: Session,
    user: User,
    *,
    reason: str = "",
    include_lifted: bool = False,
    page: int = 1,
    form: dict[str, str] | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    rows = suppression_repo.search(
        session,
        reason=reason or None,
        include_lifted=include_lifted,
        limit=SUPPRESSIONS_PER_PAGE + 1,
        offset=(page - 1) * SUPPRESSIONS_PER_PAGE,
    )
    context: dict[str, Any] = {
        "suppressions": rows[:SUPPRESSIONS_PER_PAGE],
        "has_next": len(rows) > SUPPRESSIONS_PER_PAGE,
        "page": page,
        "reason": reason,
        "include_lifted": include_lifted,
        "all_reasons": [r.value for r in Reason],
        "staff_reasons": STAFF_REASONS,
        "methods": METHODS,
        "channels": CHANNELS,
        "topics": list_topics(session),
        "form": form
        or {
            "address": "",
            "channel": Channel.EMAIL.value,
            "scope": "all",
            "reason": Reason.MANUAL_REQUEST.value,
            "method": "phone",
            "note": "",
        },
        "error": error,
    }
    return render(
        request, "suppressions.html", context, user=user, status_code=status_code, active="suppressions"
    )


@router.get("/suppressions")
def suppressions(
    request: Request,
    session: SessionDep,
    user: UserDep,
    reason: str = "",
    include_lifted: str = "",
    page: str = "1",
    address: str = "",
) -> Response:
    if user is None:
        return to_login()
    chosen = reason if reason in {r.value for r in Reason} else ""
    prefill = None
    if address:
        prefill = {
            "address": address.strip()[:320],
            "channel": Channel.EMAIL.value,
            "scope": "all",
            "reason": Reason.MANUAL_REQUEST.value,
            "method": "phone",
            "note": "",
        }
    return suppressions_page(
        request,
        session,
        user,
        reason=chosen,
        include_lifted=include_lifted in ("1", "on", "true"),
        page=parse_page(page),
        form=prefill,
    )


def _check_suppression_form(form: dict[str, str], topic_slugs: set[str]) -> str | None:
    """A message naming what is wrong with the form, or None."""
    if not form["address"]:
        return "Enter the email address, @domain or phone number to suppress."
    if len(form["address"]) > 320:
        return "The address is too long (320 characters at most)."
    if form["channel"] not in {value for value, _ in CHANNELS}:
        return "Choose a channel."
    if form["scope"] != "all" and form["scope"] not in topic_slugs:
        return "Choose “all topics” or one of the listed topics."
    if form["reason"] not in STAFF_REASONS:
        return "Choose one of the listed reasons."
    if form["method"] not in {value for value, _ in METHODS}:
        return "Choose how the request arrived."
    if len(form["note"]) > 2000:
        return "The note is too long (2000 characters at most)."
    return None


@router.post("/suppressions")
def add_suppression(
    request: Request,
    session: SessionDep,
    user: UserDep,
    address: FormText = "",
    channel: FormText = "email",
    scope: FormText = "all",
    reason: FormText = Reason.MANUAL_REQUEST.value,
    method: FormText = "phone",
    note: FormText = "",
    csrf_token: FormText = "",
) -> Response:
    if user is None:
        return to_login()
    if not csrf.is_valid(request, csrf_token):
        return csrf_rejected(request, user)
    form = {
        "address": address.strip(),
        "channel": channel,
        "scope": scope,
        "reason": reason,
        "method": method,
        "note": note.strip(),
    }
    problem = _check_suppression_form(form, {t.slug for t in list_topics(session)})
    if problem is not None:
        return suppressions_page(request, session, user, form=form, error=problem, status_code=422)
    try:
        row, created = suppression_service.add_for_address(
            session,
            address=form["address"],
            channel=None if form["channel"] == "all" else form["channel"],
            topic=require_topic(session, None if form["scope"] == "all" else form["scope"]),
            reason=form["reason"],
            method=form["method"],
            note=form["note"] or None,
            actor=staff_actor(request, user),
        )
    except DomainError as exc:
        session.rollback()  # nothing half-done is committed with the error page
        return suppressions_page(
            request, session, user, form=form, error=exc.message, status_code=exc.status_code
        )
    hint = row.address_hint or "the address"
    if created:
        flash(request, f"Suppression recorded for {hint} (reason: {row.reason}).")
    else:
        flash(request, f"{hint} was already suppressed for this reason and scope; nothing changed.")
    return RedirectResponse("/suppressions", status_code=303)
