"""Fixtures for the public forms: an HTTPS client without redirects, fresh rate limits,
forms that may be sent at once (the bot timer off), helpers to read a form's render token
and to look at what a submission left in the database and the outbox."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from app.config import Settings
from app.models import Contact
from app.recipients.ratelimit import LIMITER
from app.suppression import gate
from tests.recipients.conftest import snapshot

TOKEN_RE = re.compile(r'name="form_token" value="([^"]+)"')
NEWSLETTER_TEXT = (
    "Yes, please send me email about the topics I ticked. "
    "I can unsubscribe at any time with the link in every email."
)


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> Iterator[None]:
    LIMITER.reset()
    yield
    LIMITER.reset()


@pytest.fixture(autouse=True)
def _no_bot_timer(request: pytest.FixtureRequest) -> None:
    """Tests fill forms faster than people: the minimum time is tested on its own."""
    if "db" in request.fixturenames:
        settings: Settings = request.getfixturevalue("db")
        settings.forms_min_seconds = 0


@pytest.fixture
def web(app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as c:
        yield c


def token_from(html: str) -> str:
    match = TOKEN_RE.search(html)
    assert match, "no render token in the page"
    return match.group(1)


def form_token(web: TestClient, name: str) -> str:
    r = web.get(f"/forms/{name}")
    assert r.status_code == 200, r.text
    return token_from(r.text)


def post_form(web: TestClient, name: str, data: dict[str, Any], *, token: bool = True, **kwargs: Any):  # type: ignore[no-untyped-def]
    """Submit like a browser: form-urlencoded, with the token of a freshly shown form."""
    body = dict(data)
    if token:
        body.setdefault("form_token", form_token(web, name))
    return web.post(f"/forms/{name}", data=body, **kwargs)


def newsletter(email: str, **extra: Any) -> dict[str, Any]:
    return {
        "email": email,
        "name": "Nia Newsletter",
        "topic": ["special-offers"],
        "age_confirmed": "yes",
        **extra,
    }


def contacts(session: Session) -> list[Contact]:
    session.expire_all()
    return list(session.exec(select(Contact).order_by(Contact.id)))  # type: ignore[arg-type]


def everything(session: Session) -> dict[str, Any]:
    """Every row a submission could write: contacts too."""
    return {
        **snapshot(session),
        "contacts": [
            (c.id, c.email, c.name, c.source, sorted((c.attributes or {}).items()), str(c.updated_at))
            for c in contacts(session)
        ],
    }


def allowed(session: Session, cid: int, topic: str | None, channel: str = "email") -> bool:
    session.expire_all()
    return gate.check_one(session, cid, channel=channel, topic=topic, purpose="marketing").allowed


def page_text(html: str) -> str:
    """A page without what differs between two answers (the CSP nonce)."""
    return re.sub(r'nonce="[^"]*"', "", html)


def write_forms(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "forms.toml"
    path.write_text(text, encoding="utf-8")
    return path
