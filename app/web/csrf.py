"""CSRF protection for the staff UI's forms (synchronizer token kept in the session).

Every POST form of the staff UI carries ``csrf_token`` as a hidden field; the value must
equal the one kept in the signed session cookie. The bearer-token API (``/api/v1``) does not
use cookies and is not concerned."""

from __future__ import annotations

import hmac
import secrets

from starlette.requests import Request

SESSION_KEY = "csrf_token"
FIELD_NAME = "csrf_token"


def ensure_token(request: Request) -> str:
    """The session's token, created on first use."""
    token = request.session.get(SESSION_KEY)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        request.session[SESSION_KEY] = token
    return token


def rotate_token(request: Request) -> str:
    """A fresh token (after logging in or out)."""
    token = secrets.token_urlsafe(32)
    request.session[SESSION_KEY] = token
    return token


def is_valid(request: Request, presented: str | None) -> bool:
    expected = request.session.get(SESSION_KEY)
    if not isinstance(expected, str) or not expected or not presented:
        return False
    # Bytes, so that a non-ASCII value is a mismatch rather than a TypeError.
    return hmac.compare_digest(expected.encode(), presented.encode())
