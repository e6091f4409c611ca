"""The data-request queue API: compliance staff list, answer and refuse access and erasure
requests (and record those that arrive by letter or phone)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from app.db import get_engine
from app.models import Contact, DataRequest, utcnow
from app.recipients.tokens import TokenKind, make_url_token
from app.suppression import gate
from tests.compliance.helpers import CONTACTS, OPT_IN_EMAIL, REQUESTS, make_contact, recipient_request
from tests.imports.helpers import run_import, write
from tests.web.conftest import csrf_from


@pytest.fixture
def sales(token_for) -> dict[str, str]:
    return token_for("sales")


@pytest.fixture
def compliance(token_for) -> dict[str, str]:
    return token_for("compliance")


def queue(client, headers, **params: Any) -> dict[str, Any]:
    r = client.get(REQUESTS, params=params, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def audit_actions(client, headers, action: str) -> list[dict[str, Any]]:
    r = client.get("/api/v1/audit", params={"action": action}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def decide(db, contact_id: int, *, purpose: str = "marketing") -> gate.Decision:
    with Session(get_engine(db)) as s:
        return gate.check(s, [contact_id], channel="email", topic=None, purpose=purpose)[contact_id]


def test_queue_lists_open_requests_by_due_date_with_days_left(client, db, sales, compliance):
    a = make_contact(client, sales, "a@example.com")
    b = make_contact(client, sales, "b@example.com")
    c = make_contact(client, sales, "c@example.com")
    recent = recipient_request(db, a, "access", days_ago=1)
    late = recipient_request(db, b, "erasure", days_ago=40)
    soon = recipient_request(db, c, "access", days_ago=25)
    closed = recipient_request(db, c, "rectification", days_ago=50)
    with Session(get_engine(db)) as s:
        row = s.get(DataRequest, closed)
        assert row is not None
        row.status, row.closed_at = "done", utcnow()
        s.add(row)
        s.commit()

    body = queue(client, compliance)
    items = body["items"]
    assert [i["id"] for i in items] == [late, soon, recent]  # earliest due first; open only
    first = items[0]
    assert first["overdue"] is True and first["days_left"] == -10
    assert first["contact_id"] == b and first["contact_erased"] is False
    assert first["kind"] == "erasure" and first["status"] == "open" and first["channel"] == "web"
    assert first["note"] == "Asked for in the preference centre"
    assert {"received_at", "due_at", "closed_at"} <= set(first)
    assert [i["overdue"] for i in items] == [True, False, False]
    assert items[1]["days_left"] == 5 and items[2]["days_left"] == 29
    assert body["counts"] == {"open": 3, "due_this_week": 2, "overdue": 1}

    assert [i["id"] for i in queue(client, compliance, overdue="true")["items"]] == [late]
    assert [i["id"] for i in queue(client, compliance, kind="access")["items"]] == [soon, recent]
    assert [i["id"] for i in queue(client, compliance, status="done")["items"]] == [closed]
    assert queue(client, compliance, status="done")["items"][0]["days_left"] is None
    assert len(queue(client, compliance, status="all")["items"]) == 4
    for bad in ({"status": "pending"}, {"kind": "delete"}, {"limit": "0"}):
        assert client.get(REQUESTS, params=bad, headers=compliance).status_code == 422


@pytest.mark.parametrize("role", ["marketer", "sales"])
def test_other_roles_are_refused(client, db, token_for, role):
    headers = token_for(role)
    cid = make_contact(client, token_for("sales"), "r@example.com")
    rid = recipient_request(db, cid, "erasure")
    calls = [
        ("GET", REQUESTS, None),
        ("GET", f"{REQUESTS}/{rid}", None),
        ("POST", REQUESTS, {"kind": "access", "contact_id": cid}),
        ("POST", f"{REQUESTS}/{rid}/complete", {}),
        ("POST", f"{REQUESTS}/{rid}/refuse", {"reason": "no"}),
    ]
    for method, url, body in calls:
        assert client.request(method, url, json=body, headers=headers).status_code == 403, url
        assert client.request(method, url, json=body).status_code == 401, url
    assert client.get(f"{CONTACTS}/{cid}", headers=token_for("sales")).status_code == 200
    with Session(get_engine(db)) as s:
        assert s.get(DataRequest, rid).status == "open"  # type: ignore[union-attr]


@pytest.mark.parametrize("role", ["compliance", "admin"])
def test_compliance_and_admin_may_answer(client, db, token_for, role):
    headers = token_for(role)
    cid = make_contact(client, token_for("sales"), "ok@example.com")
    rid = recipient_request(db, cid, "access")
    assert client.get(REQUESTS, headers=headers).status_code == 200
    assert client.get(f"{REQUESTS}/{rid}", headers=headers).json()["id"] == rid
    assert client.post(f"{REQUESTS}/{rid}/complete", headers=headers).status_code == 200


def test_unknown_request_is_404(client, compliance):
    assert client.get(f"{REQUESTS}/999", headers=compliance).status_code == 404
    assert client.post(f"{REQUESTS}/999/complete", headers=compliance).status_code == 404
    assert (
        client.post(f"{REQUESTS}/999/refuse", json={"reason": "who?"}, headers=compliance).status_code == 404
    )
    assert client.get(f"{REQUESTS}/0", headers=compliance).status_code == 422


def test_completing_an_access_request_hands_over_the_export(client, db, sales, compliance):
    cid = make_contact(client, sales, "Olga@Example.com", company="Acme")
    rid = recipient_request(db, cid, "access")
    r = client.post(f"{REQUESTS}/{rid}/complete", json={"note": "sent by post"}, headers=compliance)
    assert r.status_code == 200, r.text
    body = r.json()
    export = body["export"]
    assert export["profile"]["email"] == "Olga@example.com" and export["profile"]["company"] == "Acme"
    assert {"preferences", "consent_history", "suppressions", "deliveries", "data_requests"} <= set(export)
    # the same export as the contact's own export route
    direct = client.get(f"{CONTACTS}/{cid}/export", headers=compliance).json()
    assert export["profile"] == direct["profile"] and export["consent_history"] == direct["consent_history"]
    assert body["erased"] is False
    done = body["request"]
    assert done["status"] == "done" and done["closed_at"] and done["days_left"] is None
    assert "sent by post" in done["note"] and done["note"].startswith("Asked for in the preference centre")
    # the person is untouched
    assert client.get(f"{CONTACTS}/{cid}", headers=sales).status_code == 200
    assert queue(client, compliance)["items"] == []
    assert client.get(f"{REQUESTS}/{rid}", headers=compliance).json()["status"] == "done"


def test_completing_an_erasure_request_erases_and_the_address_never_comes_back(
    client, db, sales, compliance, tmp_path: Path
):
    cid = make_contact(client, sales, "Hana@Example.com", phone="+49 30 1234567")
    rid = recipient_request(db, cid, "erasure")
    r = client.post(f"{REQUESTS}/{rid}/complete", headers=compliance)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["erased"] is True and body["export"] is None
    assert body["request"]["status"] == "done" and body["request"]["contact_erased"] is True
    assert client.get(f"{CONTACTS}/{cid}", headers=sales).status_code == 404
    with Session(get_engine(db)) as s:
        contact = s.get(Contact, cid)
        assert contact is not None and contact.erased_at is not None and contact.email is None
    found = client.get("/api/v1/suppressions", params={"address": "hana@example.com"}, headers=sales).json()
    assert "erasure" in {i["reason"] for i in found["items"]}
    assert decide(db, cid).reason == "erased"

    # An API upsert of the same address does not subscribe them again…
    again = client.post(
        CONTACTS, json={"email": "HANA@example.com", "preferences": OPT_IN_EMAIL}, headers=sales
    ).json()
    assert again["id"] != cid and again["ignored_preferences"]
    for purpose in ("marketing", "service"):
        assert not decide(db, again["id"], purpose=purpose).allowed
    # …nor does a re-import with a consent column.
    job = run_import(write(tmp_path, [["email", "email_consent"], ["hana@example.com", "yes"]]))
    assert job.status == "done", job
    assert not decide(db, again["id"]).allowed
    # The queue shows the request closed, with the contact erased.
    [item] = queue(client, compliance, status="done")["items"]
    assert item["id"] == rid and item["contact_erased"] is True


def test_erasure_of_an_already_erased_contact_just_closes_the_request(client, db, sales, compliance):
    cid = make_contact(client, sales, "gone@example.com")
    rid = recipient_request(db, cid, "erasure")
    other = recipient_request(db, cid, "access")
    assert client.delete(f"{CONTACTS}/{cid}", headers=compliance).status_code == 200
    # The erasure closed the person's open erasure request; the access request is still open.
    assert client.get(f"{REQUESTS}/{rid}", headers=compliance).json()["status"] == "done"
    item = client.get(f"{REQUESTS}/{other}", headers=compliance).json()
    assert item["status"] == "open" and item["contact_erased"] is True
    r = client.post(f"{REQUESTS}/{other}/complete", headers=compliance)
    assert r.status_code == 200 and r.json()["export"] is None
    assert "No personal data is held" in r.json()["message"]


def test_refusing_needs_a_reason(client, db, sales, compliance):
    cid = make_contact(client, sales, "who@example.com")
    rid = recipient_request(db, cid, "erasure")
    for body in ({}, {"reason": ""}, {"reason": "  "}, {"reason": "x" * 2001}, {"reason": "a\x00b"}):
        r = client.post(f"{REQUESTS}/{rid}/refuse", json=body, headers=compliance)
        assert r.status_code == 422, (body, r.text)
    assert client.get(f"{REQUESTS}/{rid}", headers=compliance).json()["status"] == "open"
    r = client.post(f"{REQUESTS}/{rid}/refuse", json={"reason": "identity not verified"}, headers=compliance)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "refused" and "identity not verified" in r.json()["note"]
    assert r.json()["closed_at"]
    # refusing an erasure does not erase
    assert client.get(f"{CONTACTS}/{cid}", headers=sales).status_code == 200


def test_closing_twice_is_a_conflict(client, db, sales, compliance):
    cid = make_contact(client, sales, "twice@example.com")
    done = recipient_request(db, cid, "access")
    refused = recipient_request(db, cid, "erasure")
    assert client.post(f"{REQUESTS}/{done}/complete", headers=compliance).status_code == 200
    r = client.post(f"{REQUESTS}/{refused}/refuse", json={"reason": "not them"}, headers=compliance)
    assert r.status_code == 200
    for rid, state in ((done, "done"), (refused, "refused")):
        for action, body in (("complete", None), ("refuse", {"reason": "again"})):
            r = client.post(f"{REQUESTS}/{rid}/{action}", json=body, headers=compliance)
            assert r.status_code == 409, r.text
            assert f"already {state}" in r.json()["detail"]
    assert client.get(f"{CONTACTS}/{cid}", headers=sales).status_code == 200  # the refused erasure


def test_every_action_is_audited(client, db, sales, compliance):
    cid = make_contact(client, sales, "audit@example.com")
    access = recipient_request(db, cid, "access")
    erasure = recipient_request(db, cid, "erasure")
    made = client.post(
        REQUESTS, json={"kind": "rectification", "contact_id": cid, "channel": "letter"}, headers=compliance
    ).json()
    client.post(
        f"{REQUESTS}/{made['id']}/refuse", json={"reason": "identity not verified"}, headers=compliance
    )
    client.post(f"{REQUESTS}/{access}/complete", headers=compliance)
    client.post(f"{REQUESTS}/{erasure}/complete", headers=compliance)

    [created] = audit_actions(client, compliance, "data_request.create")
    assert created["target_id"] == str(made["id"]) and created["actor_role"] == "compliance"
    assert created["detail"]["channel"] == "letter"
    [refused] = audit_actions(client, compliance, "data_request.refuse")
    assert refused["detail"]["reason"] == "identity not verified"
    completed = audit_actions(client, compliance, "data_request.complete")
    assert {(e["target_id"], e["detail"]["erased"], e["detail"]["exported"]) for e in completed} == {
        (str(access), False, True),
        (str(erasure), True, False),
    }
    assert [e["target_id"] for e in audit_actions(client, compliance, "contact.export")] == [str(cid)]
    assert [e["target_id"] for e in audit_actions(client, compliance, "contact.erase")] == [str(cid)]


def test_staff_record_a_request_that_arrived_by_letter_or_phone(client, db, sales, compliance):
    cid = make_contact(client, sales, "Letter@Example.com")
    r = client.post(
        REQUESTS,
        json={
            "kind": "erasure",
            "email": "LETTER@example.com",
            "channel": "letter",
            "note": "letter of 3 May",
        },
        headers=compliance,
    )
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["created"] is True and made["contact_id"] == cid and made["channel"] == "letter"
    assert made["status"] == "open" and made["note"] == "letter of 3 May" and made["days_left"] == 30
    # The same request again is not repeated.
    r = client.post(
        REQUESTS, json={"kind": "erasure", "contact_id": cid, "channel": "phone"}, headers=compliance
    )
    assert r.status_code == 200 and r.json()["id"] == made["id"] and r.json()["created"] is False
    # A request received earlier (the letter's date) is due a month after that.
    old = (utcnow() - timedelta(days=35)).isoformat()
    r = client.post(
        REQUESTS, json={"kind": "access", "contact_id": cid, "received_at": old}, headers=compliance
    )
    assert r.status_code == 201 and r.json()["overdue"] is True
    # Bad bodies name what is wrong.
    for body in (
        {"kind": "access"},
        {"kind": "access", "contact_id": cid, "email": "letter@example.com"},
        {"kind": "forget", "contact_id": cid},
        {"kind": "access", "contact_id": cid, "channel": "pigeon"},
        {"kind": "access", "email": "not an address"},
        {"kind": "access", "contact_id": cid, "received_at": (utcnow() + timedelta(days=2)).isoformat()},
    ):
        assert client.post(REQUESTS, json=body, headers=compliance).status_code == 422, body
    assert (
        client.post(REQUESTS, json={"kind": "access", "contact_id": 4242}, headers=compliance).status_code
        == 404
    )


def test_erasure_request_for_an_address_we_hold_nothing_about_still_suppresses_it(
    client, db, sales, compliance
):
    r = client.post(REQUESTS, json={"kind": "erasure", "email": "stranger@example.com"}, headers=compliance)
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["contact_id"] is None and made["contact_erased"] is True
    done = client.post(f"{REQUESTS}/{made['id']}/complete", headers=compliance).json()
    assert done["erased"] is False and done["request"]["status"] == "done"
    found = client.get(
        "/api/v1/suppressions", params={"address": "stranger@example.com"}, headers=sales
    ).json()
    assert "erasure" in {i["reason"] for i in found["items"]}
    later = client.post(
        CONTACTS, json={"email": "stranger@example.com", "preferences": OPT_IN_EMAIL}, headers=sales
    ).json()
    assert not decide(db, later["id"]).allowed


def test_a_request_from_the_preference_centre_reaches_the_queue(app, client, db, sales, compliance):
    cid = make_contact(client, sales, "pc@example.com")
    page = f"/preferences/{make_url_token(TokenKind.PREFERENCES, cid)}"
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as browser:
        token = csrf_from(browser.get(page).text)
        r = browser.post(page, data={"csrf_token": token, "action": "erasure"})
        assert r.status_code == 200 and "We have recorded your request" in r.text
    [item] = queue(client, compliance)["items"]
    assert item["contact_id"] == cid and item["kind"] == "erasure" and item["days_left"] == 30
    assert client.post(f"{REQUESTS}/{item['id']}/complete", headers=compliance).json()["erased"] is True
    with Session(get_engine(db)) as s:
        assert s.exec(select(DataRequest).where(DataRequest.status == "open")).all() == []


def test_a_request_for_an_unknown_address_covers_the_person_who_arrives_later(client, db, sales, compliance):
    made = client.post(REQUESTS, json={"kind": "erasure", "email": "later@example.com"}, headers=compliance)
    assert made.status_code == 201 and made.json()["contact_id"] is None
    cid = make_contact(client, sales, "Later@Example.com")
    r = client.post(f"{REQUESTS}/{made.json()['id']}/complete", headers=compliance)
    assert r.status_code == 200 and r.json()["erased"] is True
    assert r.json()["request"]["contact_id"] == cid
    assert client.get(f"{CONTACTS}/{cid}", headers=sales).status_code == 404
    assert decide(db, cid).reason == "erased"
