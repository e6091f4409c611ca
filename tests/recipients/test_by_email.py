""" "Unsubscribe by email address": a public form that mails a link that works once and for
a limited time, answers the same whether or not the address is known, and is rate-limited."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlmodel import Session

from app.auth.actor import Actor
from app.config import Settings, use_settings
from app.recipients.tokens import make_emailed_link_token
from app.suppression import gate
from app.suppression.service import add_for_address
from tests.recipients.conftest import csrf_from, mails_to, outbox, path_of, snapshot


def _ask(web: TestClient, address: str):  # type: ignore[no-untyped-def]
    token = csrf_from(web.get("/unsubscribe").text)
    return web.post("/unsubscribe", data={"email": address, "csrf_token": token})


def _answer(html: str, address: str) -> str:
    """The page without what differs by request: the address typed and the CSP nonce."""
    return re.sub(r'nonce="[^"]*"', "", html.replace(address, "ADDRESS"))


def test_a_known_address_gets_a_link_that_works_once(
    web: TestClient, db: Settings, session: Session, make_contact: Callable[..., int]
) -> None:
    cid = make_contact("known@example.com", name="Kim Known")
    r = _ask(web, "Known@Example.com")
    assert r.status_code == 200 and "Check your inbox" in r.text
    [mail] = mails_to(db, "known@example.com")
    assert "Auto-Submitted" in mail.message and "List-Unsubscribe" not in mail.message
    assert db.postal_address in mail.text and db.postal_address in mail.html
    [link] = [u for u in mail.links() if "/u/" in u]
    assert link.startswith("https://lists.example.test/u/") and link in mail.text

    before = snapshot(session)
    page = web.get(path_of(link))
    assert page.status_code == 200 and 'name="scope" value="marketing"' in page.text
    assert 'value="topic"' not in page.text  # no message, so no topic to offer
    assert snapshot(session) == before
    r = web.post(path_of(link), data={"scope": "marketing", "csrf_token": csrf_from(page.text)})
    assert r.status_code == 200 and "You will no longer get marketing email" in r.text
    session.expire_all()
    assert not gate.check_one(
        session, cid, channel="email", topic="special-offers", purpose="marketing"
    ).allowed
    # Spent: it works once.
    again = web.get(path_of(link))
    assert again.status_code == 410 and "has been used" in again.text and 'name="email"' in again.text


def test_the_answer_is_the_same_for_unknown_and_unreachable_addresses(
    web: TestClient, db: Settings, session: Session, make_contact: Callable[..., int]
) -> None:
    make_contact("known@example.com")
    make_contact("bounced@example.com")
    add_for_address(
        session,
        address="bounced@example.com",
        channel="email",
        topic=None,
        reason="hard_bounce",
        method=None,
        note=None,
        actor=Actor.system(),
    )
    session.commit()
    answers = {}
    for address in ("known@example.com", "nobody@example.com", "bounced@example.com"):
        r = _ask(web, address)
        assert r.status_code == 200
        answers[address] = _answer(r.text, address)
    assert len(set(answers.values())) == 1
    assert [m.to for m in outbox(db)] == ["known@example.com"]


def test_bad_input_and_a_missing_csrf_token_get_the_form_again(web: TestClient, db: Settings) -> None:
    r = _ask(web, "not an address")
    assert r.status_code == 422 and "Enter your email address" in r.text and 'name="email"' in r.text
    assert 'value="not an address"' in r.text
    r = web.post("/unsubscribe", data={"email": "someone@example.com"})
    assert r.status_code == 403 and "form had expired" in r.text
    r = _ask(web, '"><script>alert(1)</script>@example.com')
    assert "<script>alert(1)</script>" not in r.text
    assert outbox(db) == []


def test_it_is_rate_limited_by_address_and_by_ip(
    web: TestClient, db: Settings, make_contact: Callable[..., int]
) -> None:
    use_settings(
        db.model_copy(
            update={"unsubscribe_by_email_per_address_per_hour": 2, "unsubscribe_by_email_per_ip_per_hour": 5}
        )
    )
    make_contact("often@example.com")
    for _ in range(4):  # over the address limit: the same answer, no more mail
        r = _ask(web, "often@example.com")
        assert r.status_code == 200 and "Check your inbox" in r.text
    assert len(mails_to(db, "often@example.com")) == 2
    r = _ask(web, "fifth@example.com")
    assert r.status_code == 200
    r = _ask(web, "sixth@example.com")  # over the IP limit
    assert r.status_code == 429 and "Too many requests" in r.text
    assert len(outbox(db)) == 2


def test_an_old_mailed_link_has_expired(
    web: TestClient, session: Session, make_contact: Callable[..., int]
) -> None:
    cid = make_contact("late@example.com")
    before = snapshot(session)
    old = make_emailed_link_token(cid, int(time.time()) - 49 * 3600)
    r = web.get(f"/u/{old}")
    assert r.status_code == 410 and "has expired" in r.text and 'name="email"' in r.text
    r = web.post(f"/u/{old}", data={"List-Unsubscribe": "One-Click"})
    assert r.status_code == 410
    future = make_emailed_link_token(cid, int(time.time()) + 3600)
    assert web.get(f"/u/{future}").status_code == 400
    assert snapshot(session) == before
