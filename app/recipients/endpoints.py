"""Recipient pages: unsubscribe (RFC 8058 one-click and the page), the preference centre,
the opt-in confirmation, and "unsubscribe by email address". Thin: the rules are in
``app.recipients.service``; rendering and form reading in ``app.recipients.pages``.

GET, HEAD and OPTIONS never change anything (link scanners follow every link). The
one-click POST needs no cookie, CSRF token or confirmation and answers 200 without a
redirect; every other form carries a CSRF token. Changes are committed (and the opt-out
settled) before the answer is sent; mail is sent after it."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from app.recipients import oneclick, service
from app.recipients.pages import (
    FormFields,
    RecipientRoute,
    error_page,
    link_problem,
    one_click_done,
    options_response,
    read_form,
    recipient_actor,
    render,
)
from app.recipients.service import LinkProblem
from app.web import csrf

router = APIRouter(include_in_schema=False, route_class=RecipientRoute)

_READ_ONLY = ["GET", "HEAD"]
_EXPIRED_FORM = "For your security this form had expired. Please choose again."
_TOO_MANY = "Too many requests from your network. Please try again in an hour."


def _unreadable(request: Request) -> Response:
    return error_page(request, 400, "This request could not be handled", "Please go back and try again.")


def _with_mail(response: Response, mail: service.OutgoingMail | None) -> Response:
    if mail is not None:
        response.background = BackgroundTask(service.send_mail, mail)
    return response


# --------------------------------------------------------------------------- unsubscribe
def _unsubscribe_page(
    request: Request, token: str, *, error: str | None = None, status_code: int = 200
) -> Response:
    try:
        page = service.read(lambda s: service.unsubscribe_page(s, token))
    except LinkProblem as problem:
        return link_problem(request, problem)
    if page.recipient.erased:
        return link_problem(request, LinkProblem("erased"))
    return render(
        request,
        "unsubscribe.html",
        {
            "page": page,
            "preferences_url": page.recipient.preferences_url(),
            "default_scope": service.Scope.MARKETING.value,
            "error": error,
        },
        status_code=status_code,
    )


@router.api_route("/u/{token}", methods=_READ_ONLY)
def unsubscribe_page(request: Request, token: str) -> Response:
    """Shows the choices; changes nothing."""
    return _unsubscribe_page(request, token)


@router.options("/u/{token}")
def unsubscribe_options() -> Response:
    return options_response("GET, HEAD, POST, OPTIONS")


def _unsubscribe_form(request: Request, token: str, form: FormFields) -> Response:
    if not csrf.is_valid(request, form.get(csrf.FIELD_NAME)):
        return _unsubscribe_page(request, token, error=_EXPIRED_FORM, status_code=403)
    try:
        recipient = service.read(lambda s: service.resolve_unsubscribe(s, token))
    except LinkProblem as problem:
        return link_problem(request, problem)
    scope = service.parse_scope(form.get("scope"), recipient)
    if scope is None:
        return _unsubscribe_page(
            request, token, error="Choose what you want to stop receiving.", status_code=422
        )
    actor = recipient_actor(request)
    try:
        result = service.run(lambda s: service.unsubscribe_from_page(s, token, scope, actor))
    except LinkProblem as problem:
        return link_problem(request, problem)
    return render(
        request,
        "unsubscribed.html",
        {"result": result, "preferences_url": result.recipient.preferences_url()},
        form=False,
    )


@router.post("/u/{token}")
async def unsubscribe(request: Request, token: str) -> Response:
    """RFC 8058 one-click when the body is ``List-Unsubscribe=One-Click`` (no cookie, no
    CSRF token, no confirmation; 200 and no redirect); otherwise the page's form."""
    form = await read_form(request)
    if form is None:
        return _unreadable(request)
    if form.one_click:
        try:
            await oneclick.one_click(token, recipient_actor(request))
        except LinkProblem as problem:
            return await run_in_threadpool(link_problem, request, problem)
        return one_click_done()
    return await run_in_threadpool(_unsubscribe_form, request, token, form)


# --------------------------------------------------------------------------- preference centre
def _preferences_page(
    request: Request,
    view: service.PreferenceView,
    *,
    saved: service.SaveResult | None = None,
    notice: str | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    return render(
        request,
        "preferences.html",
        {"view": view, "saved": saved, "notice": notice, "error": error},
        status_code=status_code,
    )


@router.api_route("/preferences/{token}", methods=_READ_ONLY)
def preferences(request: Request, token: str) -> Response:
    """Shows the channels and topics with their current state; changes nothing."""
    try:
        view = service.read(lambda s: service.open_preferences(s, token))
    except LinkProblem as problem:
        return link_problem(request, problem)
    return _preferences_page(request, view)


@router.options("/preferences/{token}")
def preferences_options() -> Response:
    return options_response("GET, HEAD, POST, OPTIONS")


def _preferences_post(request: Request, token: str, form: FormFields) -> Response:
    actor = recipient_actor(request)
    action = form.get("action") or "save"
    try:
        if not csrf.is_valid(request, form.get(csrf.FIELD_NAME)):
            view = service.read(lambda s: service.open_preferences(s, token))
            return _preferences_page(request, view, error=_EXPIRED_FORM, status_code=403)
        if action == "save":
            topics, channels = form.getlist("email_topic"), form.getlist("channel")
            saved = service.run(lambda s: service.save_preferences(s, token, topics, channels, actor))
            return _with_mail(_preferences_page(request, saved.view, saved=saved), saved.mail)
        if action == "stop_all":
            result = service.run(
                lambda s: service.unsubscribe(
                    s,
                    service.resolve_preferences(s, token),
                    service.Scope.EVERYTHING,
                    actor,
                    method="preference_centre",
                    text_shown="Preference centre: Stop all marketing",
                )
            )
            view = service.read(lambda s: service.open_preferences(s, token))
            return _preferences_page(request, view, notice=result.statement)
        if action in ("access", "erasure"):
            kind: Literal["access", "erasure"] = "access" if action == "access" else "erasure"
            view, data_request, created = service.run(lambda s: service.request_data(s, token, kind, actor))
            what = "a copy of your data" if kind == "access" else "the erasure of your data"
            due = data_request.due_at.strftime("%d %B %Y")
            if created:
                notice = (
                    f"We have recorded your request for {what} (reference {data_request.id}). "
                    f"We will answer by {due}."
                )
            else:
                notice = (
                    f"Your request for {what} (reference {data_request.id}) is already with us. "
                    f"We will answer by {due}."
                )
            return _preferences_page(request, view, notice=notice)
    except LinkProblem as problem:
        return link_problem(request, problem)
    return _unreadable(request)


@router.post("/preferences/{token}")
async def save_preferences(request: Request, token: str) -> Response:
    form = await read_form(request)
    if form is None:
        return _unreadable(request)
    return await run_in_threadpool(_preferences_post, request, token, form)


# --------------------------------------------------------------------------- opt-in confirmation
@router.api_route("/preferences/confirm/{token}", methods=_READ_ONLY)
def confirm_page(request: Request, token: str) -> Response:
    """Shows a button to confirm; changes nothing (scanners open links in mail too)."""
    try:
        confirmation = service.read(lambda s: service.resolve_confirmation(s, token))
    except LinkProblem as problem:
        return link_problem(request, problem)
    return render(
        request,
        "confirm.html",
        {"confirmation": confirmation, "preferences_url": confirmation.recipient.preferences_url()},
        form=confirmation.state == "pending",
    )


@router.options("/preferences/confirm/{token}")
def confirm_options() -> Response:
    return options_response("GET, HEAD, POST, OPTIONS")


def _confirm_post(request: Request, token: str, form: FormFields) -> Response:
    try:
        if not csrf.is_valid(request, form.get(csrf.FIELD_NAME)):
            confirmation = service.read(lambda s: service.resolve_confirmation(s, token))
            return render(
                request,
                "confirm.html",
                {
                    "confirmation": confirmation,
                    "preferences_url": confirmation.recipient.preferences_url(),
                    "error": "For your security this form had expired. Please press the button again.",
                },
                status_code=403,
            )
        actor = recipient_actor(request)
        result = service.run(lambda s: service.confirm_opt_in(s, token, actor))
    except LinkProblem as problem:
        return link_problem(request, problem)
    return render(
        request,
        "confirmed.html",
        {"result": result, "preferences_url": result.confirmation.recipient.preferences_url()},
        form=False,
    )


@router.post("/preferences/confirm/{token}")
async def confirm(request: Request, token: str) -> Response:
    form = await read_form(request)
    if form is None:
        return _unreadable(request)
    return await run_in_threadpool(_confirm_post, request, token, form)


# --------------------------------------------------------------------------- by email address
@router.api_route("/unsubscribe", methods=_READ_ONLY)
@router.api_route("/u", methods=_READ_ONLY)
def by_email_page(request: Request) -> Response:
    return render(request, "by_email.html", {"address": ""})


@router.options("/unsubscribe")
def by_email_options() -> Response:
    return options_response("GET, HEAD, POST, OPTIONS")


def _by_email_post(request: Request, form: FormFields) -> Response:
    address = form.get("email")[:320]
    if not csrf.is_valid(request, form.get(csrf.FIELD_NAME)):
        return render(request, "by_email.html", {"address": address, "error": _EXPIRED_FORM}, status_code=403)
    ip = recipient_actor(request).ip
    outcome = service.run(lambda s: service.request_emailed_link(s, address, ip))
    if outcome.status == "rate_limited":
        return render(
            request,
            "by_email.html",
            {
                "address": address,
                "error": "Too many requests from your network. Please try again in an hour.",
            },
            status_code=429,
        )
    if outcome.status == "invalid":
        return render(request, "by_email.html", {"address": address, "error": outcome.error}, status_code=422)
    page = render(request, "by_email_sent.html", {"address": outcome.address}, form=False)
    return _with_mail(page, outcome.mail)


@router.post("/unsubscribe")
async def by_email(request: Request) -> Response:
    """Mails a one-time unsubscribe link; answers the same whether or not the address is known."""
    form = await read_form(request)
    if form is None:
        return _unreadable(request)
    return await run_in_threadpool(_by_email_post, request, form)
