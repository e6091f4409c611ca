"""The unsubscribe page: GET shows the choices and changes nothing; the form (with its CSRF
token) opts out as chosen and says so plainly. Link scanners change nothing anywhere."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from app.config import Settings, use_settings
from app.models import ConsentEvent, Suppression
from app.suppression import gate
from tests.recipients.conftest import csrf_from, mails_to, path_of, snapshot


@pytest.fixture
def message(db: Settings, make_contact: Callable[..., int], send_campaign: Callable[..., int]):  # type: ignore[no-untyped-def]
    cid = make_contact("pat@example.com", name="Pat Doe", topics=("special-offers", "surveys"))
    make_contact("other@example.com", name="Other Person")
    send_campaign()
    [mail] = mails_to(db, "pat@example.com")
    return cid, mail


def test_get_shows_the_choices_and_changes_nothing(
    web: TestClient, db: Settings, session: Session, message
) -> None:  # type: ignore[no-untyped-def]
    _cid, mail = message
    before = snapshot(session)
    r = web.get(path_of(mail.list_unsubscribe()[0]))
    assert r.status_code == 200
    page = r.text
    for expected in (
        "pa…@example.com",
        "Only emails about “Special offers”",
        "All marketing email from Listwarden",
        "All marketing by email, post and phone",
        'name="scope" value="topic"',
        'name="scope" value="marketing"',
        'name="scope" value="everything"',
        "/preferences/",
        db.postal_address,
        'lang="en"',
        '<label for="scope-topic">',
        "<fieldset>",
        "<legend>",
    ):
        assert expected in page, expected
    assert "<script" not in page  # works without JavaScript
    assert r.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert snapshot(session) == before


@pytest.mark.parametrize(
    ("scope", "said", "blocked", "allowed"),
    [
        (
            "topic",
            "You will no longer get emails about “Special offers” from Listwarden.",
            [("email", "special-offers")],
            [("email", "surveys")],
        ),
        (
            "marketing",
            "You will no longer get marketing email from Listwarden.",
            [("email", "special-offers"), ("email", "surveys"), ("email", None)],
            [],
        ),
        (
            "everything",
            "You will no longer get marketing from Listwarden by email, post or phone.",
            [("email", "surveys"), ("postal", None), ("phone", None)],
            [],
        ),
    ],
)
def test_the_form_opts_out_as_chosen(
    web: TestClient,
    session: Session,
    message,  # type: ignore[no-untyped-def]
    scope: str,
    said: str,
    blocked: list[tuple[str, str | None]],
    allowed: list[tuple[str, str | None]],
) -> None:
    cid, mail = message
    url = path_of(mail.list_unsubscribe()[0])
    token = csrf_from(web.get(url).text)
    r = web.post(url, data={"scope": scope, "csrf_token": token})
    assert r.status_code == 200 and not r.is_redirect
    assert said in r.text and "You are unsubscribed" in r.text
    session.expire_all()
    for channel, topic in blocked:
        assert not gate.check_one(session, cid, channel=channel, topic=topic, purpose="marketing").allowed
    for channel, topic in allowed:
        assert gate.check_one(session, cid, channel=channel, topic=topic, purpose="marketing").allowed
    events = session.exec(select(ConsentEvent).where(ConsentEvent.method == "link")).all()
    assert events and all(e.status == "opted_out" and e.evidence["scope"] == scope for e in events)
    assert {e.channel for e in events} == (
        {"email", "postal", "phone"} if scope == "everything" else {"email"}
    )
    assert all(e.text_shown and e.text_shown.startswith("Unsubscribe page: ") for e in events)
    reasons = {s.reason for s in session.exec(select(Suppression)).all()}
    assert reasons == {"unsubscribe"}


def test_the_form_needs_its_csrf_token_and_a_choice(web: TestClient, session: Session, message) -> None:  # type: ignore[no-untyped-def]
    _cid, mail = message
    url = path_of(mail.list_unsubscribe()[0])
    before = snapshot(session)
    r = web.post(url, data={"scope": "marketing"})
    assert r.status_code == 403 and "form had expired" in r.text and 'name="scope"' in r.text
    r = web.post(url, data={"scope": "marketing", "csrf_token": "forged"})
    assert r.status_code == 403
    token = csrf_from(web.get(url).text)
    for bad in ("", "nonsense", "topic\u0000"):
        r = web.post(url, data={"scope": bad, "csrf_token": token})
        assert r.status_code == 422 and "Choose what you want to stop" in r.text
    assert snapshot(session) == before


def test_pages_autoescape_the_sender_and_topic(
    web: TestClient,
    db: Settings,
    session: Session,
    make_contact: Callable[..., int],
    send_campaign: Callable[..., int],
) -> None:
    use_settings(
        db.model_copy(
            update={"sender_name": '<script>alert("x")</script> & Co', "postal_address": "<b>1 Road</b>"}
        )
    )
    make_contact("esc@example.com")
    send_campaign()
    [mail] = mails_to(db, "esc@example.com")
    page = web.get(path_of(mail.list_unsubscribe()[0])).text
    assert "<script>" not in page and "&lt;script&gt;" in page and "&amp; Co" in page
    assert "<b>1 Road</b>" not in page and "&lt;b&gt;1 Road&lt;/b&gt;" in page


def test_link_scanners_change_nothing(
    app, db: Settings, session: Session, message, make_contact: Callable[..., int]
) -> None:  # type: ignore[no-untyped-def]
    _cid, mail = message
    links = mail.links()
    assert any("/u/" in u for u in links) and any("/preferences/" in u for u in links)
    before = snapshot(session)
    with TestClient(app, base_url="https://lists.example.test", follow_redirects=True) as scanner:
        for url in links:
            for method in ("GET", "HEAD", "OPTIONS"):
                r = scanner.request(method, path_of(url))
                assert r.status_code in (200, 204), (method, url, r.status_code)
                if method == "OPTIONS":
                    assert "POST" in r.headers["allow"]
                if method == "HEAD":
                    assert r.content == b""
    assert snapshot(session) == before
    # Unknown methods are refused, and still change nothing.
    with TestClient(app, base_url="https://lists.example.test") as scanner:
        for url in links:
            assert scanner.request("PUT", path_of(url)).status_code == 405
    assert snapshot(session) == before
    assert [s for s in snapshot(session)["preferences"] if s[3] == "opted_out"] == []
