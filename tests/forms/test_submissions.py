"""Public forms: a submission stores the lead and the wording shown, and opts nobody in until
the confirmation mail's link is followed and its button pressed (double opt-in through the
outbox); surveys can be saved unfinished; bots, floods, oversized bodies, minors and
suppressed or opted-out addresses change nothing."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

from fastapi.testclient import TestClient
from sqlmodel import Session, select

from app.auth.actor import Actor
from app.config import Settings
from app.models import ConsentEvent, Preference, Suppression
from app.models.base import Channel, PreferenceStatus
from app.preferences.service import PreferenceChange, apply_changes
from app.suppression.service import add_for_address
from tests.forms.conftest import (
    NEWSLETTER_TEXT,
    allowed,
    contacts,
    everything,
    form_token,
    newsletter,
    page_text,
    post_form,
    token_from,
    write_forms,
)
from tests.recipients.conftest import csrf_from, mails_to, outbox, path_of, snapshot


def confirmation_link(db: Settings, address: str) -> str:
    [mail] = mails_to(db, address)
    assert "confirm your subscription" in str(mail.message["Subject"]).lower()
    assert "Auto-Submitted" in mail.message and "List-Unsubscribe" not in mail.message
    [link] = [u for u in mail.links() if "/preferences/confirm/" in u]
    assert link in mail.text
    return path_of(link)


def test_double_opt_in_round_trip_through_the_outbox(web: TestClient, db: Settings, session: Session) -> None:
    page = web.get("/forms/newsletter")
    assert page.status_code == 200
    assert "set-cookie" not in page.headers  # no session, no CSRF cookie
    assert "Content-Security-Policy" in page.headers
    assert 'name="website"' in page.text and NEWSLETTER_TEXT in page.text
    for name in ("email", "name", "company", "heard_from", "age_confirmed"):
        assert f'name="{name}"' in page.text

    r = web.post(
        "/forms/newsletter",
        data={**newsletter("Nia@Example.com"), "company": "Acme", "form_token": token_from(page.text)},
        headers={"User-Agent": "FormTest/1.0"},
    )
    assert r.status_code == 200, r.text
    assert "we have sent you an email to confirm" in r.text

    [contact] = contacts(session)
    assert (
        contact.email == "Nia@example.com" and contact.name == "Nia Newsletter" and contact.company == "Acme"
    )
    assert contact.source == "registration" and contact.age_confirmed
    assert contact.source_detail == {"form": "newsletter", "form_version": "2026-05"}
    assert contact.id is not None
    cid = contact.id
    [request] = session.exec(select(ConsentEvent)).all()
    assert (request.status, request.method, request.actor) == ("requested", "form", "recipient")
    assert request.text_shown == NEWSLETTER_TEXT and request.text_version == "2026-05"
    assert request.ip == "testclient" and request.user_agent == "FormTest/1.0"
    assert request.evidence["requested"] == [{"channel": "email", "topic": "special-offers"}]
    assert request.evidence["form"] == "newsletter"
    assert session.exec(select(Preference)).all() == []
    assert not allowed(session, cid, "special-offers")  # not before the confirmation

    link = confirmation_link(db, "nia@example.com")
    before = snapshot(session)
    for method in ("GET", "HEAD", "OPTIONS"):  # link scanners
        assert web.request(method, link).status_code in (200, 204)
    assert snapshot(session) == before
    assert not allowed(session, cid, "special-offers")
    confirm = web.get(link)
    assert "Confirm your subscription" in confirm.text and "Special offers" in confirm.text
    assert web.post(link, data={}).status_code == 403  # the button's page carries a CSRF token
    assert not allowed(session, cid, "special-offers")

    done = web.post(link, data={"csrf_token": csrf_from(confirm.text)})
    assert done.status_code == 200 and "Thank you, it is confirmed" in done.text
    assert allowed(session, cid, "special-offers")
    assert not allowed(session, cid, "member-updates")  # only what was ticked
    assert not allowed(session, cid, None)
    [fresh] = session.exec(select(ConsentEvent).where(ConsentEvent.status == "opted_in")).all()
    assert (fresh.method, fresh.channel, fresh.topic) == ("form", "email", "special-offers")
    assert fresh.text_shown == NEWSLETTER_TEXT and fresh.text_version == "2026-05"
    assert fresh.evidence["confirms"] == request.id and fresh.evidence["form"] == "newsletter"

    # The link works once.
    assert "Already confirmed" in web.get(link).text
    web.post(link, data={"csrf_token": csrf_from(confirm.text)})
    session.expire_all()
    assert len(session.exec(select(ConsentEvent).where(ConsentEvent.status == "opted_in")).all()) == 1


def test_json_in_json_out(web: TestClient, db: Settings, session: Session) -> None:
    definition = web.get("/forms/newsletter", headers={"Accept": "application/json"})
    assert definition.status_code == 200
    body = definition.json()
    assert body["form"] == "newsletter" and body["consent_version"] == "2026-05"
    assert {o["value"] for o in body["options"]} == {"member-updates", "special-offers"}
    assert {f["name"] for f in body["fields"]} >= {"email", "name", "heard_from", "age_confirmed"}

    bad = web.post(
        "/forms/newsletter",
        json={"email": "not an address", "topic": [], "form_token": body["form_token"]},
    )
    assert bad.status_code == 422
    assert bad.json()["status"] == "invalid"
    assert set(bad.json()["errors"]) == {"email", "topic", "age_confirmed"}
    assert contacts(session) == []

    ok = web.post(
        "/forms/newsletter",
        json={
            "email": "jo@example.com",
            "topic": ["member-updates", "special-offers"],
            "heard_from": "An event",
            "age_confirmed": True,
            "form_token": bad.json()["form_token"],
        },
    )
    assert ok.status_code == 200 and ok.json()["status"] == "received"
    [contact] = contacts(session)
    assert contact.attributes == {"heard_from": "An event"}
    [mail] = mails_to(db, "jo@example.com")
    assert "Member updates" in mail.text and "Special offers" in mail.text


def test_field_errors_show_the_form_again_with_the_values_kept(
    web: TestClient, db: Settings, session: Session
) -> None:
    r = post_form(
        web,
        "newsletter",
        {"email": "not-an-address", "name": '<script>alert("x")</script>', "topic": ["special-offers"]},
    )
    assert r.status_code == 422
    assert "Enter an email address like name@example.com." in r.text
    assert "Please confirm that you are 18 or over." in r.text
    assert 'value="not-an-address"' in r.text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in r.text and "<script>" not in r.text
    assert 'aria-invalid="true"' in r.text and 'href="#f-email"' in r.text
    assert 'value="special-offers" checked' in r.text
    assert token_from(r.text)  # a fresh token to send it again
    assert contacts(session) == [] and outbox(db) == []

    nothing = post_form(web, "newsletter", {"email": "a@example.com", "age_confirmed": "yes"})
    assert nothing.status_code == 422 and "Tick at least one thing" in nothing.text
    wrong = post_form(web, "newsletter", {**newsletter("a@example.com"), "heard_from": "Made up"})
    assert wrong.status_code == 422 and "Please choose one of the answers offered" in wrong.text
    assert contacts(session) == [] and outbox(db) == []


def test_a_survey_can_be_saved_unfinished_and_finished_later(
    web: TestClient, db: Settings, session: Session
) -> None:
    r = post_form(
        web,
        "survey",
        {
            "email": "sam@example.com",
            "improve": "Faster answers",
            "topic": ["surveys"],  # ignored: saving for later asks for nothing
            "age_confirmed": "yes",
            "action": "save_for_later",
        },
    )
    assert r.status_code == 200 and "your answers so far are saved" in r.text
    [contact] = contacts(session)
    assert contact.source == "survey_partial"
    assert contact.attributes == {"improve": "Faster answers"}
    assert contact.source_detail == {"form": "survey", "form_version": "2026-05"}
    assert session.exec(select(ConsentEvent)).all() == [] and outbox(db) == []

    # JSON with partial=1 works too.
    token = web.get("/forms/survey", headers={"Accept": "application/json"}).json()["form_token"]
    r = web.post(
        "/forms/survey",
        json={
            "email": "sam@example.com",
            "recommend": True,
            "partial": 1,
            "age_confirmed": True,
            "form_token": token,
        },
    )
    assert r.status_code == 200 and r.json()["status"] == "saved"

    # Unfinished without "save for later": the required question is asked for.
    r = post_form(web, "survey", {"email": "sam@example.com", "age_confirmed": "yes"})
    assert r.status_code == 422 and "Please choose an answer to" in r.text

    r = post_form(
        web,
        "survey",
        {
            "email": "sam@example.com",
            "satisfaction": "Satisfied",
            "improve": "Nothing",
            "topic": ["surveys"],
            "age_confirmed": "yes",
        },
    )
    assert r.status_code == 200 and "Thank you for your answers" in r.text
    [contact] = contacts(session)
    assert contact.source == "survey"
    assert contact.attributes == {"improve": "Nothing", "satisfaction": "Satisfied", "recommend": False}
    [request] = session.exec(select(ConsentEvent)).all()
    assert request.evidence["requested"] == [{"channel": "email", "topic": "surveys"}]
    assert len(mails_to(db, "sam@example.com")) == 1
    assert contact.id is not None and not allowed(session, contact.id, "surveys")


def test_a_filled_honeypot_gets_the_same_answer_and_stores_nothing(
    web: TestClient, db: Settings, session: Session
) -> None:
    bot = post_form(web, "newsletter", {**newsletter("bot@example.com"), "website": "https://spam.example"})
    assert bot.status_code == 200
    assert contacts(session) == [] and session.exec(select(ConsentEvent)).all() == [] and outbox(db) == []
    person = post_form(web, "newsletter", newsletter("person@example.com"))
    assert page_text(bot.text) == page_text(person.text)
    assert len(contacts(session)) == 1 and len(outbox(db)) == 1


def test_rate_limits_per_ip_and_confirmation_mails_per_address(
    web: TestClient, db: Settings, session: Session
) -> None:
    db.forms_per_ip_per_hour = 4
    db.forms_confirmations_per_address_per_hour = 1
    token = form_token(web, "newsletter")
    for _ in range(2):
        r = web.post("/forms/newsletter", data={**newsletter("flood@example.com"), "form_token": token})
        assert r.status_code == 200
    assert len(mails_to(db, "flood@example.com")) == 1  # one confirmation mail an hour per address
    r = web.post("/forms/newsletter", data={"email": "x"})
    assert r.status_code == 400  # no render token: shown again, and counted too
    r = web.post("/forms/newsletter", data={**newsletter("late@example.com"), "form_token": token})
    assert r.status_code == 200
    blocked = web.post("/forms/newsletter", data={**newsletter("over@example.com"), "form_token": token})
    assert blocked.status_code == 429 and "Too many submissions" in blocked.text
    as_json = web.post("/forms/newsletter", json={"email": "over@example.com"})
    assert as_json.status_code == 429 and as_json.json()["status"] == "rate_limited"
    assert {c.email for c in contacts(session)} == {"flood@example.com", "late@example.com"}


def test_size_limits(web: TestClient, db: Settings, session: Session) -> None:
    token = form_token(web, "newsletter")
    big = web.post(
        "/forms/newsletter",
        data={**newsletter("big@example.com"), "company": "x" * 40_000, "form_token": token},
    )
    assert big.status_code == 413 and "too large" in big.text
    many = web.post(
        "/forms/newsletter",
        data={**newsletter("many@example.com"), **{f"extra{i}": "1" for i in range(70)}, "form_token": token},
    )
    assert many.status_code == 413
    values = web.post(
        "/forms/newsletter",
        content="&".join(["topic=a"] * 300) + f"&form_token={token}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert values.status_code == 413
    long_value = web.post("/forms/newsletter", json={"email": "l@example.com", "name": "n" * 6000})
    assert long_value.status_code == 413 and long_value.json()["status"] == "rejected"
    long_name = web.post(
        "/forms/newsletter", data={**newsletter("long@example.com"), "name": "n" * 201, "form_token": token}
    )
    assert long_name.status_code == 422 and "can be at most 200 characters long" in long_name.text
    assert (
        web.post("/forms/newsletter", content=b"hello", headers={"Content-Type": "text/plain"}).status_code
        == 415
    )
    nested = web.post("/forms/newsletter", json={"email": {"a": 1}})
    assert nested.status_code == 400
    nul = web.post(
        "/forms/newsletter", data={**newsletter("nul@example.com"), "name": "a\x00b", "form_token": token}
    )
    assert nul.status_code == 422 and "characters that are not allowed" in nul.text
    assert contacts(session) == [] and outbox(db) == []


EVENT_FORM = """
[forms.event]
kind = "registration"
title = "Register for the event"
version = "e1"
consent_text = "Yes, keep me informed."
topics = ["member-updates"]
channels = ["postal", "phone"]
age_check = "date_of_birth"
fields = [
  { name = "email", required = true },
  { name = "name" },
  { name = "phone" },
  { name = "address_line1" },
  { name = "zip" },
  { name = "country" },
  { name = "date_of_birth", required = true },
]
"""


def _years_ago(years: int) -> str:
    today = date.today()
    return today.replace(year=today.year - years, day=min(today.day, 28)).isoformat()


def test_under_age_is_refused_and_nothing_is_kept(
    web: TestClient, db: Settings, session: Session, tmp_path: Path
) -> None:
    db.forms_file = write_forms(tmp_path, EVENT_FORM)
    # Someone else's address with a child's date of birth: refused, and the contact on
    # file is left alone (a public form can never erase anybody).
    r = post_form(
        web, "event", {"email": "kid@example.com", "topic": "member-updates", "date_of_birth": _years_ago(20)}
    )
    assert r.status_code == 200
    before = everything(session)
    mails = len(outbox(db))
    r = post_form(
        web, "event", {"email": "kid@example.com", "topic": "member-updates", "date_of_birth": _years_ago(15)}
    )
    assert r.status_code == 422
    assert "Sorry, we can only accept this from people aged 18 or over." in r.text
    assert everything(session) == before and len(outbox(db)) == mails
    r = post_form(
        web,
        "event",
        {"email": "new-kid@example.com", "topic": "member-updates", "date_of_birth": _years_ago(12)},
    )
    assert r.status_code == 422 and {c.email for c in contacts(session)} == {"kid@example.com"}
    token = web.get("/forms/event", headers={"Accept": "application/json"}).json()["form_token"]
    r = web.post(
        "/forms/event",
        json={
            "email": "k@example.com",
            "topic": "member-updates",
            "date_of_birth": _years_ago(16),
            "form_token": token,
        },
    )
    assert r.status_code == 422 and r.json() == {
        "status": "refused",
        "reason": "underage",
        "message": "Sorry, we can only accept this from people aged 18 or over. "
        "Nothing you entered has been kept.",
    }
    assert {c.email for c in contacts(session)} == {"kid@example.com"}


def test_postal_and_phone_channels_after_confirmation(
    web: TestClient, db: Settings, session: Session, tmp_path: Path
) -> None:
    db.forms_file = write_forms(tmp_path, EVENT_FORM)
    r = post_form(
        web,
        "event",
        {"email": "pat@example.com", "channel": ["postal", "phone"], "date_of_birth": _years_ago(30)},
    )
    assert r.status_code == 422
    assert "To get letters, fill in your street and postcode." in r.text or "To be called" in r.text
    r = post_form(
        web,
        "event",
        {
            "email": "pat@example.com",
            "phone": "+49 30 1234567",
            "address_line1": "1 Main Street",
            "zip": "10115",
            "country": "de",
            "channel": ["postal", "phone"],
            "date_of_birth": _years_ago(30),
        },
    )
    assert r.status_code == 200, r.text
    [contact] = contacts(session)
    assert contact.phone == "+49301234567" and contact.country == "DE" and contact.id is not None
    assert not allowed(session, contact.id, None, "postal") and not allowed(
        session, contact.id, None, "phone"
    )
    link = confirmation_link(db, "pat@example.com")
    web.post(link, data={"csrf_token": csrf_from(web.get(link).text)})
    assert allowed(session, contact.id, None, "postal") and allowed(session, contact.id, None, "phone")
    assert not allowed(session, contact.id, "member-updates")


def test_a_suppressed_address_changes_nothing_and_learns_nothing(
    web: TestClient, db: Settings, session: Session
) -> None:
    normal = post_form(web, "newsletter", newsletter("someone@example.com"))
    assert normal.status_code == 200
    for address, reason in (("bounced@example.com", "hard_bounce"), ("asked@example.com", "manual_request")):
        add_for_address(
            session,
            address=address,
            channel=None if reason == "manual_request" else "email",
            topic=None,
            reason=reason,
            method=None,
            note=None,
            actor=Actor.system(),
        )
    session.commit()
    before = everything(session)
    mails = len(outbox(db))
    for address in ("bounced@example.com", "Asked@Example.com"):
        r = post_form(web, "newsletter", newsletter(address))
        assert r.status_code == 200
        assert page_text(r.text) == page_text(normal.text)
        j = web.post(
            "/forms/newsletter", json={**newsletter(address), "form_token": form_token(web, "newsletter")}
        )
        assert j.status_code == 200 and j.json()["status"] == "received"
    assert everything(session) == before
    assert len(outbox(db)) == mails


def test_an_opted_out_person_who_says_yes_stays_opted_out(
    web: TestClient, db: Settings, session: Session
) -> None:
    # Opted out of all email: nothing changes, not even the name on file.
    post_form(web, "newsletter", newsletter("out@example.com"))
    web.post(
        confirmation_link(db, "out@example.com"),
        data={"csrf_token": csrf_from(web.get(confirmation_link(db, "out@example.com")).text)},
    )
    [contact] = contacts(session)
    assert contact.id is not None and allowed(session, contact.id, "special-offers")
    apply_changes(
        session,
        contact,
        [PreferenceChange(Channel.EMAIL, None, PreferenceStatus.OPTED_OUT)],
        method="link",
        actor=Actor.recipient("203.0.113.1"),
    )
    session.commit()
    before = everything(session)
    mails = len(outbox(db))
    r = post_form(
        web,
        "newsletter",
        {
            **newsletter("out@example.com", name="Somebody Else"),
            "topic": ["special-offers", "member-updates"],
        },
    )
    assert r.status_code == 200 and "we have sent you an email to confirm" in r.text
    assert everything(session) == before and len(outbox(db)) == mails
    assert not allowed(session, contact.id, "special-offers") and not allowed(
        session, contact.id, "member-updates"
    )


def test_a_topic_opt_out_is_not_asked_for_again(web: TestClient, db: Settings, session: Session) -> None:
    post_form(web, "newsletter", newsletter("topic@example.com"))
    first = confirmation_link(db, "topic@example.com")
    web.post(first, data={"csrf_token": csrf_from(web.get(first).text)})
    [contact] = contacts(session)
    assert contact.id is not None
    apply_changes(
        session,
        contact,
        [PreferenceChange(Channel.EMAIL, "special-offers", PreferenceStatus.OPTED_OUT)],
        method="preference_centre",
        actor=Actor.recipient("203.0.113.1"),
    )
    session.commit()
    assert not allowed(session, contact.id, "special-offers")

    r = post_form(
        web, "newsletter", {**newsletter("topic@example.com"), "topic": ["special-offers", "member-updates"]}
    )
    assert r.status_code == 200
    mails = mails_to(db, "topic@example.com")
    [second] = [m for m in mails if first not in {path_of(u) for u in m.links()}]  # outbox order is random
    assert len(mails) == 2 and "Member updates" in second.text and "Special offers" not in second.text
    [link] = [path_of(u) for u in second.links() if "/preferences/confirm/" in u]
    csrf = csrf_from(web.get(link).text)
    web.post(link, data={"csrf_token": csrf})
    assert allowed(session, contact.id, "member-updates")
    assert not allowed(session, contact.id, "special-offers")
    session.expire_all()
    [supp] = session.exec(select(Suppression).where(Suppression.topic == "special-offers")).all()
    assert supp.lifted_at is None

    # Even a confirmation asked for before the opt-out does not undo it.
    post_form(web, "newsletter", newsletter("early@example.com"))
    early_link = confirmation_link(db, "early@example.com")
    early = next(c for c in contacts(session) if c.email == "early@example.com")
    assert early.id is not None
    apply_changes(
        session,
        early,
        [PreferenceChange(Channel.EMAIL, "special-offers", PreferenceStatus.OPTED_OUT)],
        method="preference_centre",
        actor=Actor.recipient("203.0.113.1"),
    )
    session.commit()
    assert "This request was replaced" in web.get(early_link).text
    r = web.post(early_link, data={"csrf_token": csrf})
    assert "This request was replaced" in r.text
    assert not allowed(session, early.id, "special-offers")


def test_the_render_token_binds_the_form_its_wording_and_the_time(
    web: TestClient, db: Settings, session: Session, tmp_path: Path
) -> None:
    missing = post_form(web, "newsletter", newsletter("tok@example.com"), token=False)
    assert missing.status_code == 400 and "This form had expired or changed" in missing.text
    assert 'value="tok@example.com"' in missing.text
    other = post_form(
        web, "newsletter", {**newsletter("tok@example.com"), "form_token": form_token(web, "survey")}
    )
    assert other.status_code == 400
    forged = post_form(
        web, "newsletter", {**newsletter("tok@example.com"), "form_token": "WyJuZXdzbGV0dGVyIl0.xx"}
    )
    assert forged.status_code == 400

    db.forms_min_seconds = 60
    fast = post_form(web, "newsletter", newsletter("tok@example.com"))
    assert fast.status_code == 400 and "Please check your answers and send the form again." in fast.text
    db.forms_min_seconds = 0

    # The wording changed between showing the form and its submission: shown again.
    path = write_forms(tmp_path, EVENT_FORM)
    db.forms_file = path
    token = form_token(web, "event")
    path.write_text(EVENT_FORM.replace('version = "e1"', 'version = "e2"'), encoding="utf-8")

    os.utime(path, ns=(1, 1))  # a new modification time, whatever the clock's resolution
    changed = web.post(
        "/forms/event",
        data={
            "email": "tok@example.com",
            "topic": "member-updates",
            "date_of_birth": _years_ago(40),
            "form_token": token,
        },
    )
    assert changed.status_code == 400 and "This form had expired or changed" in changed.text
    assert contacts(session) == [] and outbox(db) == []


def test_unknown_forms_and_methods(web: TestClient, db: Settings, session: Session, tmp_path: Path) -> None:
    assert web.get("/forms/nope").status_code == 404
    assert web.post("/forms/nope", data={"email": "a@example.com"}).status_code == 404
    assert web.post("/forms/nope", json={"email": "a@example.com"}).json()["status"] == "not_found"
    assert web.options("/forms/newsletter").status_code == 204
    assert web.head("/forms/newsletter").status_code == 200
    assert contacts(session) == []
    # The file was broken after the start: a plain "not available" answer, and a log entry.
    db.forms_file = write_forms(tmp_path, "[forms.newsletter]\nkind = 1\n")
    broken = web.get("/forms/newsletter")
    assert broken.status_code == 503 and "not available" in broken.text
    assert web.post("/forms/newsletter", json={"email": "a@example.com"}).json()["status"] == "unavailable"
    assert contacts(session) == []


def test_the_confirmation_never_lifts_an_opt_out_recorded_after_the_request(
    web: TestClient, db: Settings, session: Session
) -> None:
    post_form(
        web, "newsletter", {**newsletter("phone@example.com"), "topic": ["special-offers", "member-updates"]}
    )
    link = confirmation_link(db, "phone@example.com")
    add_for_address(
        session,
        address="phone@example.com",
        channel="email",
        topic="special-offers",
        reason="manual_request",
        method="phone",
        note="Said on the phone: no offers.",
        actor=Actor(kind="staff", role="sales"),
    )
    session.commit()
    r = web.post(link, data={"csrf_token": csrf_from(web.get(link).text)})
    assert "Thank you, it is confirmed" in r.text and "Special offers stays off" in r.text
    [contact] = contacts(session)
    assert contact.id is not None
    assert allowed(session, contact.id, "member-updates")
    assert not allowed(session, contact.id, "special-offers")
    [supp] = session.exec(select(Suppression)).all()
    assert supp.lifted_at is None
