"""The Requests page in headless Chromium with JavaScript off, driven by the keyboard:
a compliance officer logs in, sees the overdue request, confirms and completes an erasure,
and refuses another request with a reason. Skipped locally when Chromium or Playwright is
missing; a failure in CI (``CI=true``)."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from app.auth.service import create_user
from app.db import session_scope
from app.models import Contact, DataRequest
from tests.compliance.helpers import recipient_request
from tests.recipients.test_browser import Live, browser, live, page  # noqa: F401  (fixtures)
from tests.web.conftest import PASSWORD
from tests.web.test_data_requests_page import add_contact


def _get(session: Session, model: type[Any], key: int) -> Any:
    session.expire_all()
    return session.get(model, key)


def test_answer_requests_with_the_keyboard(live: Live, page: Any, session: Session) -> None:  # noqa: F811
    with session_scope(live.settings) as s:
        create_user(
            s, email="officer@staff.example.com", name="Olu Officer", role="compliance", password=PASSWORD
        )
    erase_me = add_contact(live.settings, "erase.me@example.com")
    keep_me = add_contact(live.settings, "keep.me@example.com")
    late = recipient_request(live.settings, erase_me, "erasure", days_ago=35)
    other = recipient_request(live.settings, keep_me, "access", days_ago=2)

    page.goto(live.url + "/login")
    page.get_by_label("Email").fill("officer@staff.example.com")
    page.get_by_label("Password").fill(PASSWORD)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    nav = page.get_by_role("navigation", name="Main")
    assert "1 overdue" in nav.get_by_role("link", name="Requests").inner_text()
    with page.expect_navigation():
        nav.get_by_role("link", name="Requests").click()
    assert page.get_by_role("heading", level=1).inner_text() == "Data requests"
    row = page.locator(f"#request-{late}")
    assert "overdue by 5 days" in row.inner_text()

    # Open "Complete" with the keyboard, tick the confirmation with Space, submit with Enter.
    summary = row.locator("summary", has_text="Complete")
    summary.focus()
    page.keyboard.press("Enter")
    confirm = row.get_by_label(f"Erase contact {erase_me} now", exact=False)
    assert confirm.is_visible() and not confirm.is_checked()
    confirm.focus()
    page.keyboard.press("Space")
    assert confirm.is_checked()
    row.get_by_role("button", name="Erase and complete").focus()
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert f"Request {late} is done" in page.get_by_role("status").first.inner_text()
    assert _get(session, DataRequest, late).status == "done"
    assert _get(session, Contact, erase_me).erased_at is not None
    assert page.get_by_role("link", name="Requests").inner_text().strip() == "Requests"  # none overdue

    # Refuse the other one, typing the reason.
    row = page.locator(f"#request-{other}")
    row.locator("summary", has_text="Refuse").focus()
    page.keyboard.press("Enter")
    reason = row.get_by_label("Reason")
    reason.focus()
    page.keyboard.type("identity not verified")
    row.get_by_role("button", name="Refuse the request").focus()
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert f"Request {other} refused." in page.get_by_role("status").first.inner_text()
    refused = _get(session, DataRequest, other)
    assert refused.status == "refused" and "identity not verified" in refused.note
    assert _get(session, Contact, keep_me).erased_at is None
