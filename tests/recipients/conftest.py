"""Fixtures for the recipient pages: a real campaign sent through the Dramatiq stub broker
into the outbox, parsed messages, an HTTPS client (the session cookie is ``Secure`` with
the test settings' https public URL) and a cookie-less one for one-click."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from app.config import Settings
from app.models import ConsentEvent, DataRequest, Preference, Suppression
from app.recipients.ratelimit import LIMITER

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
HREF_RE = re.compile(r'href="([^"]+)"')
URL_RE = re.compile(r"https?://[^\s<>\"]+")

CAMPAIGN = {
    "name": "Autumn offers",
    "topic": "special-offers",
    "purpose": "marketing",
    "subject": "Autumn offers for {{ first_name }}",
    "html": "<h1>Hi {{ name }}</h1><p>Our offers.</p>",
}


def csrf_from(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "no CSRF field in the page"
    return match.group(1)


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


@dataclass
class Mail:
    path: Path
    message: EmailMessage

    @property
    def to(self) -> str:
        return str(self.message["X-Listwarden-Envelope-To"])

    @property
    def text(self) -> str:
        return str(self.message.get_body(("plain",)).get_content())  # type: ignore[union-attr]

    @property
    def html(self) -> str:
        return str(self.message.get_body(("html",)).get_content())  # type: ignore[union-attr]

    def list_unsubscribe(self) -> tuple[str, str]:
        https, mailto = [p.strip().strip("<>") for p in str(self.message["List-Unsubscribe"]).split(",")]
        return https, mailto

    def links(self) -> list[str]:
        """Every http(s) link of the message: headers, HTML and text bodies."""
        found = {self.list_unsubscribe()[0]} if "List-Unsubscribe" in self.message else set()
        found.update(HREF_RE.findall(self.html))
        found.update(URL_RE.findall(self.text))
        return sorted(u.replace("&amp;", "&") for u in found if u.startswith("http"))


def outbox(settings: Settings) -> list[Mail]:
    root = settings.var_dir / "outbox"
    mails = []
    for path in sorted(root.glob("*/*.eml")) if root.exists() else []:
        with path.open("rb") as handle:
            message = email.message_from_binary_file(handle, policy=email.policy.default)
        mails.append(Mail(path, message))  # type: ignore[arg-type]
    return mails


def mails_to(settings: Settings, address: str) -> list[Mail]:
    return [m for m in outbox(settings) if m.to.lower() == address.lower()]


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> Iterator[None]:
    LIMITER.reset()
    yield
    LIMITER.reset()


@pytest.fixture
def web(app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as c:
        yield c


@pytest.fixture
def run_workers(db: Settings) -> Iterator[Callable[[], None]]:
    """Run what the stub broker holds (audience build, then slices) to the end."""
    import dramatiq

    from workers.broker import broker, import_actors

    # Declare every actor before any worker exists: a worker created earlier would react to
    # queues declared later (even after it stopped) and swallow their messages.
    import_actors()
    broker.flush_all()
    worker = dramatiq.Worker(broker, worker_threads=2)
    worker.start()

    def drain() -> None:
        for _ in range(3):  # build_campaign enqueues send_slice
            broker.join("campaigns", fail_fast=True)
            broker.join("sending", fail_fast=True)

    yield drain
    worker.stop()
    broker.flush_all()


@pytest.fixture
def make_contact(client: TestClient, admin_headers: dict[str, str]) -> Callable[..., int]:
    """A lead created through the API, opted in to email and to ``special-offers``."""

    def make(
        address: str, *, name: str = "Robin Example", topics: tuple[str, ...] = ("special-offers",)
    ) -> int:
        prefs: list[dict[str, Any]] = [{"channel": "email", "topic": None, "status": "opted_in"}]
        prefs += [{"channel": "email", "topic": t, "status": "opted_in"} for t in topics]
        r = client.post(
            "/api/v1/contacts",
            json={
                "email": address,
                "name": name,
                "source": "registration",
                "preferences": prefs,
                "consent_text": "Yes, send me news and offers by email.",
                "consent_version": "v1",
            },
            headers=admin_headers,
        )
        assert r.status_code in (200, 201), r.text
        return int(r.json()["id"])

    return make


@pytest.fixture
def send_campaign(
    client: TestClient, admin_headers: dict[str, str], run_workers: Callable[[], None]
) -> Callable[..., int]:
    """Create a campaign through the API, send it and run the workers to the end."""

    def send(**overrides: Any) -> int:
        r = client.post("/api/v1/campaigns", json={**CAMPAIGN, **overrides}, headers=admin_headers)
        assert r.status_code == 201, r.text
        campaign_id = int(r.json()["id"])
        r = client.post(f"/api/v1/campaigns/{campaign_id}/send", headers=admin_headers)
        assert r.status_code == 200, r.text
        run_workers()
        return campaign_id

    return send


def snapshot(session: Session) -> dict[str, list[tuple[Any, ...]]]:
    """Everything a click could change: preferences, suppressions, consent events, requests."""
    session.expire_all()
    return {
        "preferences": sorted(
            (p.contact_id, p.channel, p.topic or "", p.status) for p in session.exec(select(Preference))
        ),
        "suppressions": sorted(
            (s.id, s.address_hash, s.channel or "", s.topic or "", s.reason, str(s.lifted_at))
            for s in session.exec(select(Suppression))
        ),
        "consent_events": sorted((e.id, e.status, e.method) for e in session.exec(select(ConsentEvent))),
        "data_requests": sorted((r.id, r.kind, r.status) for r in session.exec(select(DataRequest))),
    }
