"""The preference centre: channels and topics with their current state; turning things off
is immediate; turning email back on after an unsubscribe needs a confirmation mail and is
recorded as fresh consent; hard bounces and complaints cannot be lifted here; access and
erasure requests are recorded with a due date one month out."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from app.auth.actor import Actor
from app.config import Settings
from app.models import ConsentEvent, DataRequest, Delivery, Suppression
from app.recipients.tokens import TokenKind, make_url_token
from app.suppression import gate
from app.suppression.service import add_for_address
from tests.recipients.conftest import csrf_from, mails_to, path_of, snapshot

TOPICS = ("member-updates", "special-offers", "partner-offers", "surveys")


def allowed(session: Session, cid: int, channel: str, topic: str | None) -> bool:
    session.expire_all()
    return gate.check_one(session, cid, channel=channel, topic=topic, purpose="marketing").allowed


def checked(html: str) -> set[str]:
    """Values of the ticked boxes."""
    return {
        m.group(2)
        for m in re.finditer(
            r'<input type="checkbox" id="[^"]+" name="(email_topic|channel)" value="([^"]+)"[^>]*>', html
        )
        if " checked" in m.group(0)
    }


def disabled(html: str) -> set[str]:
    return {
        m.group(2)
        for m in re.finditer(
            r'<input type="checkbox" id="[^"]+" name="(email_topic|channel)" value="([^"]+)"[^>]*>', html
        )
        if " disabled" in m.group(0)
    }


@pytest.fixture
def person(
    db: Settings, client: TestClient, admin_headers: dict[str, str], send_campaign: Callable[..., int]
):  # type: ignore[no-untyped-def]
    """Opted in to email (every topic) with a postal address, and one campaign message."""
    r = client.post(
        "/api/v1/contacts",
        json={
            "email": "chris@example.com",
            "name": "Chris Example",
            "address_line1": "2 Sample Road",
            "city": "Berlin",
            "zip": "10115",
            "country": "DE",
            "preferences": [{"channel": "email", "topic": None, "status": "opted_in"}],
            "consent_text": "Yes please",
        },
        headers=admin_headers,
    )
    assert r.status_code in (200, 201), r.text
    cid = int(r.json()["id"])
    send_campaign()
    [mail] = mails_to(db, "chris@example.com")
    [prefs] = [u for u in mail.links() if "/preferences/" in u]
    return cid, path_of(prefs), path_of(mail.list_unsubscribe()[0])


def save(web: TestClient, url: str, topics: list[str], channels: list[str] = ()):  # type: ignore[no-untyped-def,assignment]
    token = csrf_from(web.get(url).text)
    return web.post(
        url, data={"csrf_token": token, "action": "save", "email_topic": topics, "channel": list(channels)}
    )


def test_shows_channels_and_topics_with_their_state(
    web: TestClient, db: Settings, session: Session, person
) -> None:  # type: ignore[no-untyped-def]
    _cid, url, _u = person
    before = snapshot(session)
    r = web.get(url)
    assert r.status_code == 200
    html = r.text
    for expected in (
        "Member updates",
        "Special offers",
        "Partner offers",
        "Surveys",
        "Letters and catalogues by post",
        "Phone calls",
        "We have no phone number for you.",
        db.sender_name,
        db.postal_address,
        "<legend>Email, by topic</legend>",
        "<legend>Post and phone</legend>",
        "ch…@example.com",
    ):
        assert expected in html, expected
    assert checked(html) == set(TOPICS)  # email to every topic; post and phone not consented
    assert disabled(html) == {"phone"}  # no number
    for value in (*TOPICS, "postal"):
        assert f'<label for="email_topic-{value}">' in html or f'<label for="channel-{value}">' in html
    assert "<script" not in html
    assert snapshot(session) == before


def test_turning_a_topic_off_is_immediate(web: TestClient, session: Session, person) -> None:  # type: ignore[no-untyped-def]
    cid, url, _u = person
    r = save(web, url, ["member-updates", "partner-offers", "surveys"])
    assert r.status_code == 200 and "Turned off: Special offers." in r.text
    assert checked(r.text) == {"member-updates", "partner-offers", "surveys"}
    assert not allowed(session, cid, "email", "special-offers")
    assert allowed(session, cid, "email", "surveys")
    [event] = session.exec(select(ConsentEvent).where(ConsentEvent.method == "preference_centre")).all()
    assert (event.status, event.channel, event.topic, event.actor) == (
        "opted_out",
        "email",
        "special-offers",
        "recipient",
    )
    delivery = session.exec(select(Delivery).where(Delivery.contact_id == cid)).one()
    assert event.evidence["delivery_id"] == delivery.id


def test_postal_can_be_turned_on_and_off_without_confirmation(
    web: TestClient, db: Settings, session: Session, person
) -> None:  # type: ignore[no-untyped-def]
    cid, url, _u = person
    r = save(web, url, list(TOPICS), ["postal"])
    assert "Turned on: Letters and catalogues by post." in r.text
    assert allowed(session, cid, "postal", None)
    r = save(web, url, list(TOPICS), [])
    assert "Turned off: Letters and catalogues by post." in r.text
    assert not allowed(session, cid, "postal", None)
    assert mails_to(db, "chris@example.com")[1:] == []  # no confirmation mail was needed


def test_email_back_on_after_an_unsubscribe_needs_a_confirmation_mail(
    app, web: TestClient, db: Settings, session: Session, person
) -> None:  # type: ignore[no-untyped-def]
    cid, url, unsubscribe = person
    with TestClient(app, base_url="https://lists.example.test") as bare:
        assert bare.post(unsubscribe, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    page = web.get(url).text
    assert checked(page) == set()
    assert "Ticking it sends you an email to confirm first." in page

    r = save(web, url, ["special-offers"])
    assert "We have sent you an email to confirm" in r.text and "Special offers" in r.text
    assert not allowed(session, cid, "email", "special-offers")  # not before the confirmation
    [confirmation] = [
        m for m in mails_to(db, "chris@example.com") if "confirm" in m.message["Subject"].lower()
    ]
    [link] = [u for u in confirmation.links() if "/preferences/confirm/" in u]
    assert link in confirmation.text and "Special offers" in confirmation.text
    request = session.exec(select(ConsentEvent).where(ConsentEvent.status == "requested")).one()
    assert request.evidence["requested"] == [
        {"channel": "email", "topic": None},
        {"channel": "email", "topic": "special-offers"},
    ]

    # Opening the link (or a scanner doing so) changes nothing.
    before = snapshot(session)
    for method in ("GET", "HEAD", "OPTIONS"):
        assert web.request(method, path_of(link)).status_code in (200, 204)
    assert snapshot(session) == before
    page = web.get(path_of(link)).text
    assert "Yes, send me this again" in page and "Special offers" in page

    r = web.post(path_of(link), data={"csrf_token": csrf_from(page)})
    assert r.status_code == 200 and "it is confirmed" in r.text and "Special offers" in r.text
    assert allowed(session, cid, "email", "special-offers")
    for other in ("member-updates", "partner-offers", "surveys"):  # only what was ticked
        assert not allowed(session, cid, "email", other)
    fresh = session.exec(
        select(ConsentEvent).where(
            ConsentEvent.status == "opted_in", ConsentEvent.method == "preference_centre"
        )
    ).all()
    assert fresh and all(e.evidence["confirms"] == request.id for e in fresh)
    assert {(e.channel, e.topic) for e in fresh} == {("email", None), ("email", "special-offers")}
    lifted = session.exec(select(Suppression).where(Suppression.reason == "one_click")).one()
    assert lifted.lifted_at is not None

    # The link works once.
    again = web.get(path_of(link))
    assert "Already confirmed" in again.text
    assert web.post(path_of(link), data={"csrf_token": csrf_from(web.get(url).text)}).status_code == 200
    assert len(
        session.exec(
            select(ConsentEvent).where(
                ConsentEvent.status == "opted_in", ConsentEvent.method == "preference_centre"
            )
        ).all()
    ) == len(fresh)


def test_confirmation_needs_csrf_and_is_void_after_a_new_opt_out(
    app, web: TestClient, db: Settings, session: Session, person
) -> None:  # type: ignore[no-untyped-def]
    cid, url, unsubscribe = person
    save(web, url, ["surveys"])  # turns the others off at once
    r = save(web, url, ["surveys", "special-offers"])
    assert "We have sent you an email to confirm" in r.text
    [mail] = [m for m in mails_to(db, "chris@example.com") if "confirm" in m.message["Subject"].lower()]
    [link] = [path_of(u) for u in mail.links() if "/preferences/confirm/" in u]
    assert web.post(link, data={}).status_code == 403
    with TestClient(app, base_url="https://lists.example.test") as bare:
        assert bare.post(unsubscribe, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    page = web.get(link).text
    assert "This request was replaced" in page
    r = web.post(link, data={"csrf_token": csrf_from(web.get(url).text)})
    assert "This request was replaced" in r.text
    assert not allowed(session, cid, "email", "special-offers")
    assert not allowed(session, cid, "email", "surveys")


def test_an_expired_confirmation_turns_nothing_on(
    web: TestClient, db: Settings, session: Session, person
) -> None:  # type: ignore[no-untyped-def]
    cid, url, _u = person
    save(web, url, ["surveys"])
    save(web, url, ["surveys", "special-offers"])
    [mail] = [m for m in mails_to(db, "chris@example.com") if "confirm" in m.message["Subject"].lower()]
    [link] = [path_of(u) for u in mail.links() if "/preferences/confirm/" in u]
    from app.recipients import service

    real = service.utcnow
    service.utcnow = lambda: real() + timedelta(hours=db.opt_in_confirm_hours + 1)  # type: ignore[assignment]
    try:
        assert "This link has expired" in web.get(link).text
    finally:
        service.utcnow = real  # type: ignore[assignment]
    assert not allowed(session, cid, "email", "special-offers")


def test_hard_bounces_and_complaints_cannot_be_lifted_here(web: TestClient, session: Session, person) -> None:  # type: ignore[no-untyped-def]
    cid, url, _u = person
    for reason in ("hard_bounce", "complaint"):
        add_for_address(
            session,
            address="chris@example.com",
            channel="email",
            topic=None,
            reason=reason,
            method=None,
            note=None,
            actor=Actor.system(),
        )
    session.commit()
    page = web.get(url).text
    assert disabled(page) >= set(TOPICS) and checked(page) & set(TOPICS) == set()
    assert "reported as spam" in page
    before = snapshot(session)
    r = save(web, url, list(TOPICS))
    assert r.status_code == 200
    assert snapshot(session) == before
    assert not allowed(session, cid, "email", "surveys")


def test_an_opt_out_recorded_by_staff_can_be_undone_by_the_person_with_confirmation(
    web: TestClient, db: Settings, session: Session, person
) -> None:  # type: ignore[no-untyped-def]
    cid, url, _u = person
    add_for_address(
        session,
        address="chris@example.com",
        channel="email",
        topic=None,
        reason="manual_request",
        method="phone",
        note="called in",
        actor=Actor(kind="staff", role="sales"),
    )
    session.commit()
    assert not allowed(session, cid, "email", "surveys")
    r = save(web, url, list(TOPICS))
    assert "We have sent you an email to confirm" in r.text
    [mail] = [m for m in mails_to(db, "chris@example.com") if "confirm" in m.message["Subject"].lower()]
    [link] = [path_of(u) for u in mail.links() if "/preferences/confirm/" in u]
    r = web.post(link, data={"csrf_token": csrf_from(web.get(link).text)})
    assert "it is confirmed" in r.text
    assert all(allowed(session, cid, "email", t) for t in TOPICS)


def test_an_all_channel_opt_out_is_for_staff_to_lift(web: TestClient, session: Session, person) -> None:  # type: ignore[no-untyped-def]
    _cid, url, _u = person
    add_for_address(
        session,
        address="chris@example.com",
        channel=None,
        topic=None,
        reason="manual_request",
        method="letter",
        note=None,
        actor=Actor(kind="staff", role="sales"),
    )
    session.commit()
    page = web.get(url).text
    assert "every channel" in page and disabled(page) >= {*TOPICS, "postal"}
    before = snapshot(session)
    save(web, url, list(TOPICS), ["postal"])
    assert snapshot(session) == before


def test_stop_all_marketing(web: TestClient, session: Session, person) -> None:  # type: ignore[no-untyped-def]
    cid, url, _u = person
    r = web.post(url, data={"csrf_token": csrf_from(web.get(url).text), "action": "stop_all"})
    assert r.status_code == 200 and "by email, post or phone" in r.text
    assert checked(r.text) == set()
    for channel, topic in (("email", "surveys"), ("email", None), ("postal", None), ("phone", None)):
        assert not allowed(session, cid, channel, topic)


@pytest.mark.parametrize("kind", ["access", "erasure"])
def test_access_and_erasure_requests_are_recorded_with_a_due_date(
    kind: str, web: TestClient, session: Session, person
) -> None:  # type: ignore[no-untyped-def]
    cid, url, _u = person
    r = web.post(url, data={"csrf_token": csrf_from(web.get(url).text), "action": kind})
    assert r.status_code == 200 and "We have recorded your request" in r.text
    [request] = session.exec(select(DataRequest)).all()
    assert (request.contact_id, request.kind, request.status, request.channel) == (cid, kind, "open", "web")
    assert request.due_at - request.received_at == timedelta(days=30)
    r = web.post(url, data={"csrf_token": csrf_from(web.get(url).text), "action": kind})
    assert "is already with us" in r.text
    session.expire_all()
    assert len(session.exec(select(DataRequest)).all()) == 1
    assert allowed(session, cid, "email", "surveys")  # asking changes no preference


def test_forms_need_csrf_and_an_erased_person_gets_a_plain_page(
    client: TestClient, admin_headers: dict[str, str], web: TestClient, session: Session, person
) -> None:  # type: ignore[no-untyped-def]
    cid, url, unsubscribe = person
    before = snapshot(session)
    for action in ("save", "stop_all", "access", "erasure"):
        r = web.post(url, data={"action": action})
        assert r.status_code == 403 and "form had expired" in r.text
    assert snapshot(session) == before
    assert client.delete(f"/api/v1/contacts/{cid}", headers=admin_headers).status_code in (200, 204)
    for page in (url, unsubscribe, f"/preferences/{make_url_token(TokenKind.PREFERENCES, cid)}"):
        r = web.get(page)
        assert r.status_code == 200 and "We no longer hold your details" in r.text
        assert "ch…@example.com" not in r.text
    with TestClient(web.app, base_url="https://lists.example.test") as bare:
        assert bare.post(unsubscribe, data={"List-Unsubscribe": "One-Click"}).status_code == 200
