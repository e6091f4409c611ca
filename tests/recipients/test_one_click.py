"""RFC 8058 conformance on a real campaign message: parse ``List-Unsubscribe`` and
``List-Unsubscribe-Post`` from the outbox, POST one-click without cookies (urlencoded and
multipart) -> 200, no redirect, the person is suppressed and the next campaign skips them."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from app.config import Settings, use_settings
from app.models import ConsentEvent, Delivery, Suppression
from app.models.base import Channel, Purpose
from app.suppression import gate
from tests.recipients.conftest import mails_to, path_of


def _post_one_click(app, url: str, kind: str):  # type: ignore[no-untyped-def]
    """A mail provider's POST: a fresh client (no cookie jar), no redirects followed."""
    with TestClient(app, base_url="https://lists.example.test", follow_redirects=False) as bare:
        if kind == "urlencoded":
            return bare.post(
                path_of(url),
                content=b"List-Unsubscribe=One-Click",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        return bare.post(path_of(url), files={"List-Unsubscribe": (None, "One-Click")})


@pytest.mark.parametrize("kind", ["urlencoded", "multipart"])
def test_one_click_from_a_real_message(
    kind: str,
    app,
    db: Settings,
    session: Session,
    make_contact: Callable[..., int],
    send_campaign: Callable[..., int],
) -> None:
    leaving = make_contact("leaving@example.com")
    staying = make_contact("staying@example.com", name="Sam Stay")
    first = send_campaign()

    [mail] = mails_to(db, "leaving@example.com")
    assert mail.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https, mailto = mail.list_unsubscribe()
    assert https.startswith("https://lists.example.test/u/") and mailto.startswith("mailto:")
    before = session.exec(select(ConsentEvent)).all()

    r = _post_one_click(app, https, kind)
    assert r.status_code == 200, r.text
    assert not r.is_redirect and "location" not in r.headers
    assert "set-cookie" not in r.headers
    assert len(r.content) < 200 and "unsubscribed" in r.text.lower()

    # Committed before the answer: a fresh session sees it, and the gate says no.
    session.expire_all()
    decision = gate.check_one(
        session, leaving, channel=Channel.EMAIL, topic="special-offers", purpose="marketing"
    )
    assert not decision.allowed and decision.reason == "suppressed:one_click"
    for topic in ("member-updates", "surveys", None):  # all marketing email (the default scope)
        assert not gate.check_one(
            session, leaving, channel="email", topic=topic, purpose=Purpose.MARKETING
        ).allowed
    assert gate.check_one(
        session, staying, channel="email", topic="special-offers", purpose="marketing"
    ).allowed
    # Service mail still passes: an unsubscribe is not a bounce.
    assert gate.check_one(session, leaving, channel="email", topic=None, purpose="service").allowed

    [supp] = session.exec(select(Suppression).where(Suppression.reason == "one_click")).all()
    assert (supp.channel, supp.topic, supp.origin) == ("email", None, "recipient")
    [event] = [e for e in session.exec(select(ConsentEvent)).all() if e not in before]
    delivery = session.exec(
        select(Delivery).where(Delivery.contact_id == leaving, Delivery.campaign_id == first)
    ).one()
    assert (event.contact_id, event.status, event.method, event.channel, event.topic) == (
        leaving,
        "opted_out",
        "one_click",
        "email",
        None,
    )
    assert event.evidence["delivery_id"] == delivery.id and event.evidence["campaign_id"] == first
    assert event.user_agent and supp.consent_event_id == event.id

    # Posting again (mail providers retry) is harmless.
    assert _post_one_click(app, https, kind).status_code == 200
    session.expire_all()
    assert len(session.exec(select(Suppression).where(Suppression.reason == "one_click")).all()) == 1

    # The next campaign skips them.
    second = send_campaign(name="Winter offers")
    assert [m.to for m in mails_to(db, "leaving@example.com")] == ["leaving@example.com"]  # the first only
    assert len(mails_to(db, "staying@example.com")) == 2
    sent = session.exec(
        select(Delivery).where(
            Delivery.campaign_id == second, Delivery.contact_id == leaving, Delivery.status == "sent"
        )
    ).all()
    assert sent == []


def test_one_click_scope_can_be_the_topic(
    app, db: Settings, session: Session, make_contact: Callable[..., int], send_campaign: Callable[..., int]
) -> None:
    use_settings(db.model_copy(update={"one_click_scope": "topic"}))
    cid = make_contact("topical@example.com", topics=("special-offers", "surveys"))
    send_campaign()
    [mail] = mails_to(db, "topical@example.com")
    assert _post_one_click(app, mail.list_unsubscribe()[0], "urlencoded").status_code == 200
    session.expire_all()
    assert not gate.check_one(
        session, cid, channel="email", topic="special-offers", purpose="marketing"
    ).allowed
    assert gate.check_one(session, cid, channel="email", topic="surveys", purpose="marketing").allowed
    [supp] = session.exec(select(Suppression)).all()
    assert (supp.channel, supp.topic, supp.reason) == ("email", "special-offers", "one_click")


def test_a_post_without_the_one_click_body_or_csrf_changes_nothing(
    app, db: Settings, session: Session, make_contact: Callable[..., int], send_campaign: Callable[..., int]
) -> None:
    make_contact("careful@example.com")
    send_campaign()
    [mail] = mails_to(db, "careful@example.com")
    url = path_of(mail.list_unsubscribe()[0])
    with TestClient(app, base_url="https://lists.example.test", follow_redirects=False) as bare:
        for body in (b"", b"List-Unsubscribe=Maybe", b"scope=marketing"):
            r = bare.post(url, content=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
            assert r.status_code == 403 and "<form" in r.text
        huge = bare.post(
            url, content=b"x" * 100_000, headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert huge.status_code == 400 and "Traceback" not in huge.text
    session.expire_all()
    assert session.exec(select(Suppression)).all() == []
