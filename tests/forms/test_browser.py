"""The newsletter form in headless Chromium with JavaScript off (Debian's ``chromium`` driven
by Playwright; the browser and the uvicorn server are the recipient pages' fixtures): a
mistake is shown with the values kept, the corrected form is sent, and the link in the
confirmation mail is followed and confirmed. Skipped locally without Chromium; a failure
in CI."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, select

from app.models import Contact
from tests.forms.conftest import allowed
from tests.recipients.test_browser import (  # noqa: F401  (fixtures)
    Live,
    browser,
    live,
    page,
    wait_for_mail,
)


def test_sign_up_and_confirm_in_a_browser(live: Live, page: Any, session: Session) -> None:  # noqa: F811
    page.goto(f"{live.url}/forms/newsletter")
    assert page.get_by_role("heading", level=1).inner_text() == "Sign up for our newsletter"
    assert live.settings.postal_address in page.inner_text("footer")
    topics = page.get_by_role("group", name="What would you like to hear about?")
    assert topics.get_by_role("checkbox").count() == 2
    honeypot = page.locator("#f-hp").bounding_box()
    assert honeypot is not None and honeypot["x"] < 0  # off screen: people leave it empty

    # A mistake first: the address is wrong and the age is not confirmed.
    page.get_by_label("Email address").fill("bri@")
    page.get_by_label("Your name").fill("Bri <Browser>")
    page.get_by_label("Special offers").check()
    page.get_by_role("radio", name="An event").check()
    with page.expect_navigation():
        page.get_by_role("button", name="Sign up").click()
    alert = page.get_by_role("alert").first.inner_text()
    assert "Enter an email address like name@example.com." in alert
    assert "Please confirm that you are 18 or over." in alert
    assert page.get_by_label("Your name").input_value() == "Bri <Browser>"  # kept, and escaped
    assert page.get_by_label("Special offers").is_checked()
    assert page.get_by_role("radio", name="An event").is_checked()
    assert page.get_by_label("Email address").get_attribute("aria-invalid") == "true"
    session.expire_all()
    assert session.exec(select(Contact)).all() == []

    # Corrected with the keyboard, sent with Enter.
    email = page.get_by_label("Email address")
    email.fill("bri@example.com")
    page.get_by_label("I am 18 or over").check()
    email.focus()
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.get_by_role("heading", level=1).inner_text() == "Thank you"
    assert "we have sent you an email to confirm" in page.get_by_role("status").inner_text()
    session.expire_all()
    [contact] = session.exec(select(Contact)).all()
    assert contact.name == "Bri <Browser>" and contact.attributes == {"heard_from": "An event"}
    assert contact.id is not None and not allowed(session, contact.id, "special-offers")

    [mail] = wait_for_mail(live.settings, "bri@example.com", 1)
    [link] = [u for u in mail.links() if "/preferences/confirm/" in u]
    assert link.startswith(live.url)
    page.goto(link)
    assert page.get_by_role("heading", level=1).inner_text() == "Confirm your subscription"
    assert "Special offers" in page.inner_text("main")
    assert not allowed(session, contact.id, "special-offers")  # opening the link changed nothing
    with page.expect_navigation():
        page.get_by_role("button", name="Yes, subscribe me").click()
    assert page.get_by_role("heading", level=1).inner_text() == "Thank you, it is confirmed"
    assert allowed(session, contact.id, "special-offers")
    assert not allowed(session, contact.id, "member-updates")
