"""Public forms: ``GET /forms/{name}`` shows the form (plain HTML that works without
JavaScript; with ``Accept: application/json`` its definition and a render token), ``POST
/forms/{name}`` takes a submission (form-urlencoded, answered with a page; or JSON,
answered with JSON). Thin: the rules are in ``app.forms.service``.

No cookie and no CSRF token (a submission changes nothing but the submitter's own request,
which must be confirmed by mail); instead a signed render token, the honeypot, per-IP and
per-address rate limits and size limits. Changes are committed before the answer is sent;
the confirmation mail is sent after it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from app.forms import service as forms
from app.forms.config import FormsConfigError, FormSpec, load_forms
from app.recipients import service as recipients
from app.recipients.pages import error_page, options_response, recipient_actor, render

log = logging.getLogger("listwarden.forms")

_NO_STORE = {"Cache-Control": "no-store"}
_TOO_MANY = "Too many submissions from your network. Please try again in an hour."


def wants_json(request: Request) -> bool:
    """JSON in, JSON out; a page otherwise (unless only JSON is accepted)."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind == "application/json" or kind.endswith("+json"):
        return True
    accept = request.headers.get("accept", "").lower()
    return "application/json" in accept and "text/html" not in accept


def _problem(request: Request, status_code: int, status: str, message: str) -> Response:
    if wants_json(request):
        return JSONResponse(
            {"status": status, "message": message}, status_code=status_code, headers=_NO_STORE
        )
    title = {
        404: "There is no such form",
        413: "This form is too large",
        415: "This form could not be read",
        429: "Too many submissions",
    }.get(status_code, "This request could not be handled")
    return error_page(request, status_code, title, message)


class FormRoute(APIRoute):
    """Whatever goes wrong, a page (or JSON, for JSON) that says what to do; no stack trace."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except (StarletteHTTPException, RequestValidationError):
                return _problem(request, 400, "rejected", "Please go back and try again.")
            except FormsConfigError:
                log.exception("the forms file cannot be used")
                return _problem(request, 503, "unavailable", "This form is not available at the moment.")
            except Exception:
                log.exception("form failed: %s %s", request.method, self.path)
                return _problem(
                    request,
                    503,
                    "error",
                    "Something went wrong on our side. Your answers may not have been saved; "
                    "please try again in a minute.",
                )

        return guarded


router = APIRouter(include_in_schema=False, route_class=FormRoute)


def _lookup(name: str) -> FormSpec | None:
    return load_forms().get(name)


def _form_page(request: Request, view: forms.FormView, *, status_code: int = 200, **extra: Any) -> Response:
    return render(request, "form.html", {"view": view, **extra}, status_code=status_code, form=False)


@router.api_route("/forms/{name}", methods=["GET", "HEAD"])
def show_form(request: Request, name: str) -> Response:
    """The empty form (changes nothing)."""
    form = _lookup(name)
    if form is None:
        return _problem(request, 404, "not_found", "Please check the address of the page.")
    view = recipients.read(lambda s: forms.form_view(s, form))
    if wants_json(request):
        return JSONResponse(view.definition(), headers=_NO_STORE)
    return _form_page(request, view)


@router.options("/forms/{name}")
def form_options() -> Response:
    return options_response("GET, HEAD, POST, OPTIONS")


async def _read_body(request: Request) -> bytes | None:
    """The body, or None when it is larger than the forms accept (read no further)."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > forms.MAX_BODY_BYTES):
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > forms.MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _answer(request: Request, result: forms.SubmitResult) -> Response:
    as_json = wants_json(request)
    view = result.view
    if result.status in ("received", "saved"):
        if as_json:
            response: Response = JSONResponse(
                {"status": result.status, "message": result.message}, headers=_NO_STORE
            )
        else:
            response = render(
                request,
                "form_thanks.html",
                {"form": result.form, "message": result.message},
                form=False,
            )
        if result.mail is not None:
            response.background = BackgroundTask(recipients.send_mail, result.mail)
        return response
    if result.status == "refused":
        if as_json:
            return JSONResponse(
                {"status": "refused", "reason": "underage", "message": result.message},
                status_code=422,
                headers=_NO_STORE,
            )
        return render(
            request,
            "form_refused.html",
            {"form": result.form, "message": result.message},
            status_code=422,
            form=False,
        )
    assert view is not None
    status_code = 422 if result.status == "invalid" else 400
    if as_json:
        return JSONResponse(
            {
                "status": result.status,
                "message": result.message,
                "errors": view.error_map(),
                "form_token": view.token,
            },
            status_code=status_code,
            headers=_NO_STORE,
        )
    return _form_page(request, view, status_code=status_code)


@router.post("/forms/{name}")
async def submit_form(request: Request, name: str) -> Response:
    form = _lookup(name)
    if form is None:
        return _problem(request, 404, "not_found", "Please check the address of the page.")
    actor = recipient_actor(request)
    if not forms.allow_ip(actor.ip):
        return _problem(request, 429, "rate_limited", _TOO_MANY)
    body = await _read_body(request)
    if body is None:
        return _problem(
            request,
            413,
            "too_large",
            f"The submission is too large (at most {forms.MAX_BODY_BYTES // 1024} KiB).",
        )
    try:
        raw = forms.parse_body(body, request.headers.get("content-type", ""))
    except forms.BadInput as exc:
        return _problem(request, exc.status_code, "rejected", exc.message)
    result = await run_in_threadpool(recipients.run, lambda s: forms.submit(s, form, raw, actor))
    return await run_in_threadpool(_answer, request, result)
