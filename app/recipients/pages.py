"""Rendering of the recipient pages (``templates/web/recipient``) and reading their forms.

The pages use the staff UI's autoescaping Jinja2 environment, security headers (CSP with a
nonce, no framing, no referrer to other sites, no caching) and CSRF tokens, with a layout of
their own that names the sender and shows their postal address. A page without a form does
not touch the session, so it sets no cookie."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlparse

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response

from app.auth.actor import Actor
from app.config import get_settings
from app.deps import client_ip
from app.recipients.service import LinkProblem
from app.web import csrf
from app.web.templating import environment, security_headers

log = logging.getLogger("listwarden.recipients")

#: Larger bodies are refused before they are read (no recipient form comes near it).
MAX_FORM_BYTES = 64 * 1024
_URLENCODED = "application/x-www-form-urlencoded"
_FORM_TYPES = (_URLENCODED, "multipart/form-data")
#: The RFC 8058 body, as mail providers send it.
_ONE_CLICK_BODY = b"List-Unsubscribe=One-Click"


def recipient_actor(request: Request) -> Actor:
    return Actor.recipient(client_ip(request), (request.headers.get("user-agent") or "")[:500] or None)


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
    form: bool = True,
) -> Response:
    """Render ``templates/web/recipient/<template>``. ``form``: the page has a POST form
    (it gets a CSRF token, kept in the session cookie)."""
    settings = get_settings()
    nonce = secrets.token_urlsafe(16)
    values: dict[str, Any] = {
        "csp_nonce": nonce,
        "sender_name": settings.sender_name,
        "postal_address": settings.postal_address,
        #: Path prefix of the public URL, for links between the pages.
        "root": urlparse(settings.public_url).path.rstrip("/"),
        "csrf_field": csrf.FIELD_NAME,
        "csrf_token": csrf.ensure_token(request) if form else "",
        "error": None,
        "notice": None,
    }
    values.update(context or {})
    html = environment().get_template(f"web/recipient/{template}").render(values)
    headers = {**security_headers(nonce), "X-Robots-Tag": "noindex, nofollow"}
    if request.method == "HEAD":
        return Response(status_code=status_code, headers=headers, media_type="text/html")
    return HTMLResponse(html, status_code=status_code, headers=headers)


def options_response(allow: str) -> Response:
    """OPTIONS (link scanners, CORS preflights): say what is allowed, change nothing."""
    return Response(status_code=204, headers={"Allow": allow, "Cache-Control": "no-store"})


def one_click_done() -> Response:
    """RFC 8058: 200, a short body, no redirect, no cookie."""
    return PlainTextResponse("You are unsubscribed.\n", headers={"Cache-Control": "no-store"})


_PROBLEMS = {
    "invalid": (
        400,
        "This link does not work",
        "The link may have been cut short or changed on its way to you, for example when it "
        "was copied or wrapped over two lines.",
    ),
    "expired": (
        410,
        "This link has expired",
        "Links that we email on request work for a limited time.",
    ),
    "used": (
        410,
        "This link has been used",
        "Links that we email on request work once, and this one has done its job.",
    ),
    "erased": (
        200,
        "We no longer hold your details",
        "Your details were erased, and we have kept only what is needed to never contact you again.",
    ),
}


def link_problem(request: Request, problem: LinkProblem) -> Response:
    """The friendly page for a bad, expired or spent link: it offers the "unsubscribe by
    email address" form so that nobody is stuck."""
    status_code, title, message = _PROBLEMS[problem.kind]
    return render(
        request,
        "link_problem.html",
        {"title": title, "message": message, "kind": problem.kind, "address": ""},
        status_code=status_code,
    )


def error_page(request: Request, status_code: int, title: str, message: str) -> Response:
    return render(
        request,
        "error.html",
        {"title": title, "message": message, "status_code": status_code},
        status_code=status_code,
        form=False,
    )


# --------------------------------------------------------------------------- forms
@dataclass
class FormFields:
    values: dict[str, list[str]] = field(default_factory=dict)

    def get(self, name: str) -> str:
        found = self.values.get(name)
        return found[0] if found else ""

    def getlist(self, name: str) -> list[str]:
        return list(self.values.get(name, []))

    @property
    def one_click(self) -> bool:
        """The RFC 8058 body ``List-Unsubscribe=One-Click`` (urlencoded or multipart)."""
        return any(
            key.strip().lower() == "list-unsubscribe"
            and any(v.strip().lower() == "one-click" for v in values)
            for key, values in self.values.items()
        )


async def read_form(request: Request) -> FormFields | None:
    """The fields of a POST (urlencoded or multipart; another body is read as urlencoded).
    None when the body is too large or cannot be read."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_FORM_BYTES):
        return None
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    values: dict[str, list[str]] = {}
    try:
        if kind == _URLENCODED and length is not None:
            body = await request.body()
            if body == _ONE_CLICK_BODY:  # what mail providers send: no parser needed
                return FormFields({"List-Unsubscribe": ["One-Click"]})
        if kind in _FORM_TYPES:
            form = await request.form(max_files=1, max_fields=200, max_part_size=MAX_FORM_BYTES)
            for key, value in form.multi_items():
                if isinstance(value, str):
                    values.setdefault(key, []).append(value)
            await form.close()
        elif length is not None:
            body = await request.body()
            for key, value in parse_qsl(body.decode("utf-8", "replace").strip(), keep_blank_values=True):
                values.setdefault(key, []).append(value)
    except Exception:  # malformed multipart, bad encoding, a client that went away
        log.info("unreadable recipient form", exc_info=True)
        return None
    return FormFields(values)


# --------------------------------------------------------------------------- route class
class RecipientRoute(APIRoute):
    """Recipient routes never answer with a stack trace or a JSON error: whatever goes
    wrong, the person gets a page that says what to do."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        path = self.path  # the template (``/u/{token}``): tokens stay out of the log

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except StarletteHTTPException as exc:
                return error_page(
                    request,
                    exc.status_code,
                    "This request could not be handled",
                    "Please go back and try again.",
                )
            except RequestValidationError:
                return error_page(
                    request, 400, "This request could not be handled", "Please go back and try again."
                )
            except Exception:
                log.exception("recipient page failed: %s %s", request.method, path)
                return error_page(
                    request,
                    503,
                    "Something went wrong on our side",
                    "Your request may not have been saved. Please try again in a minute.",
                )

        return guarded
