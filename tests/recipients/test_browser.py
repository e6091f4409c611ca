"""The recipient pages in headless Chromium (Debian's ``chromium``, driven by Playwright for
Python), against the app served by uvicorn on 127.0.0.1: the unsubscribe page flow, and the
preference centre including the opt-back-in confirmation mail. JavaScript is off: the
pages must work without it. Skipped locally when Chromium or Playwright is missing; a
failure in CI (``CI=true``)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlmodel import Session

from app.config import Settings, use_settings
from app.suppression import gate
from tests.conftest import service_missing
from tests.recipients.conftest import Mail, mails_to

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        service_missing("Playwright for Python", exc)
    if not Path(CHROMIUM).exists():
        service_missing("Chromium", FileNotFoundError(f"{CHROMIUM} (apt-get install chromium)"))
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@dataclass
class Live:
    url: str
    settings: Settings


@pytest.fixture
def live(db: Settings) -> Iterator[Live]:
    """The app served by uvicorn in a thread, with the public URL pointing at it (http)."""
    from app.main import create_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = db.model_copy(update={"public_url": url})
    use_settings(settings)
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, start_workers=False), log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield Live(url, settings)
    server.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(java_script_enabled=False)
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    yield tab
    context.close()


def wait_for_mail(settings: Settings, address: str, count: int, timeout: float = 10) -> list[Mail]:
    deadline = time.monotonic() + timeout
    while True:
        found = mails_to(settings, address)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def allowed(session: Session, cid: int, topic: str | None) -> bool:
    session.expire_all()
    return gate.check_one(session, cid, channel="email", topic=topic, purpose="marketing").allowed


def test_unsubscribe_page_flow(
    live: Live,
    page: Any,
    session: Session,
    make_contact: Callable[..., int],
    send_campaign: Callable[..., int],
) -> None:
    cid = make_contact("browser@example.com", name="Bo Browser", topics=("special-offers", "surveys"))
    send_campaign()
    [mail] = mails_to(live.settings, "browser@example.com")
    https, _mailto = mail.list_unsubscribe()
    assert https.startswith(live.url + "/u/")

    # The footer link of the message, as a person would follow it.
    [link] = [u for u in mail.links() if "/u/" in u]
    page.goto(link)
    assert page.title().startswith("Unsubscribe")
    assert page.get_by_role("heading", level=1).inner_text() == "Unsubscribe"
    assert live.settings.postal_address in page.inner_text("footer")
    # Every choice is a labelled radio button in a fieldset; the default is all marketing email.
    group = page.get_by_role("group", name="What would you like to stop?")
    assert group.get_by_role("radio").count() == 3
    assert page.get_by_label("All marketing email from Listwarden").is_checked()
    assert (
        page.get_by_role("link", name="choose exactly what you receive in the preference centre").count() == 1
    )
    assert allowed(session, cid, "special-offers")  # opening the page changed nothing

    # Keyboard only: choose "only this topic", then submit with Enter.
    topic = page.get_by_label("Only emails about “Special offers”")
    topic.focus()
    page.keyboard.press("Space")
    assert topic.is_checked()
    page.get_by_role("button", name="Unsubscribe").focus()
    with page.expect_navigation():  # wait for the navigation this action starts
        page.keyboard.press("Enter")
    assert page.get_by_role("heading", level=1).inner_text() == "You are unsubscribed"
    assert "You will no longer get emails about “Special offers” from Listwarden." in page.inner_text("main")
    assert not allowed(session, cid, "special-offers")
    assert allowed(session, cid, "surveys")


def test_preference_centre_with_the_opt_back_in_confirmation(
    live: Live,
    page: Any,
    session: Session,
    make_contact: Callable[..., int],
    send_campaign: Callable[..., int],
) -> None:
    cid = make_contact("prefs@example.com", name="Pia Prefs", topics=())
    send_campaign()
    [mail] = mails_to(live.settings, "prefs@example.com")

    # One click in the mail program first (no browser, no cookie).
    import httpx

    r = httpx.post(mail.list_unsubscribe()[0], data={"List-Unsubscribe": "One-Click"}, follow_redirects=False)
    assert r.status_code == 200
    assert not allowed(session, cid, "special-offers")

    [prefs] = [u for u in mail.links() if "/preferences/" in u]
    page.goto(prefs)
    assert page.get_by_role("heading", level=1).inner_text() == "Your preferences"
    email = page.get_by_role("group", name="Email, by topic")
    for name in ("Member updates", "Special offers", "Partner offers", "Surveys"):
        box = email.get_by_label(name)
        assert box.count() == 1 and not box.is_checked() and box.is_enabled()
    assert page.get_by_label("Phone calls").is_disabled()  # no number on file

    page.get_by_label("Special offers").check()
    with page.expect_navigation():  # wait for the navigation this action starts
        page.get_by_role("button", name="Save my choices").click()
    status = page.get_by_role("status").first.inner_text()
    assert "We have sent you an email to confirm" in status and "Special offers" in status
    assert not allowed(session, cid, "special-offers")  # nothing before the confirmation

    mails = wait_for_mail(live.settings, "prefs@example.com", 2)
    [confirmation] = [m for m in mails if "confirm" in str(m.message["Subject"]).lower()]
    [link] = [u for u in confirmation.links() if "/preferences/confirm/" in u]
    page.goto(link)
    assert page.get_by_role("heading", level=1).inner_text() == "Confirm that you want this again"
    assert not allowed(session, cid, "special-offers")  # opening the link changed nothing
    with page.expect_navigation():  # wait for the navigation this action starts
        page.get_by_role("button", name="Yes, send me this again").click()
    assert page.get_by_role("heading", level=1).inner_text() == "Thank you, it is confirmed"
    assert allowed(session, cid, "special-offers")
    assert not allowed(session, cid, "surveys")

    with page.expect_navigation():  # wait for the navigation this action starts
        page.get_by_role("link", name="See your preferences").click()
    assert page.get_by_label("Special offers").is_checked()
    assert not page.get_by_label("Surveys").is_checked()

    # Asking for a copy of the data.
    with page.expect_navigation():  # wait for the navigation this action starts
        page.get_by_role("button", name="Ask for a copy of my data").click()
    assert (
        "We have recorded your request for a copy of your data"
        in page.get_by_role("status").first.inner_text()
    )
