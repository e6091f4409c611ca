"""Jinja2 for the staff UI: autoescaped templates under ``templates/web``, one ``render``."""

from __future__ import annotations

import secrets
from datetime import datetime
from functools import lru_cache
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from app.config import TEMPLATES_DIR, get_settings
from app.models import User
from app.web import csrf

FLASH_KEY = "flash"


def format_datetime(value: datetime | None) -> str:
    if value is None:
        return "—"
    return value.strftime("%Y-%m-%d %H:%M UTC")


def or_dash(value: object) -> object:
    """Show an em dash for a missing value."""
    return "—" if value is None or value == "" else value


def or_all(value: object) -> object:
    """Channel or topic NULL means "every channel / topic"."""
    return "all" if value is None or value == "" else value


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["dt"] = format_datetime
    env.filters["or_dash"] = or_dash
    env.filters["or_all"] = or_all
    return env


def flash(request: Request, message: str) -> None:
    """A one-time message shown on the next page (after a redirect)."""
    request.session[FLASH_KEY] = message


def security_headers(nonce: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": (
            f"default-src 'none'; style-src 'nonce-{nonce}'; img-src 'self' data:; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        ),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        # Pages show personal data: keep them out of shared and back-button caches.
        "Cache-Control": "no-store",
    }


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    user: User | None = None,
    status_code: int = 200,
    active: str = "",
) -> HTMLResponse:
    """Render ``templates/web/<template>`` with the layout's context."""
    nonce = secrets.token_urlsafe(16)
    values: dict[str, Any] = {
        "request": request,
        "user": user,
        "active": active,
        "csrf_field": csrf.FIELD_NAME,
        "csrf_token": csrf.ensure_token(request),
        "csp_nonce": nonce,
        "sender_name": get_settings().sender_name,
        "flash": request.session.pop(FLASH_KEY, None),
        # Set by ``current_user`` for the staff who answer data requests (else None).
        "overdue_requests": getattr(request.state, "overdue_requests", None),
    }
    values.update(context or {})
    html = environment().get_template(f"web/{template}").render(values)
    return HTMLResponse(html, status_code=status_code, headers=security_headers(nonce))
