"""The staff web UI's Requests page: the data-request queue for compliance staff."""

from __future__ import annotations

import json
import re

import pytest
from sqlmodel import Session, select

from app.auth.actor import Actor
from app.contacts import service as contacts
from app.contacts.schemas import ContactIn
from app.db import get_engine, session_scope
from app.models import AuditLog, Contact, DataRequest, Suppression
from tests.compliance.helpers import recipient_request
from tests.web.conftest import csrf_from, login

SALES = Actor(kind="staff", role="sales")


def add_contact(db, email: str) -> int:
    with session_scope(db) as s:
        result = contacts.upsert(s, ContactIn(email=email, name="Ada Example"), SALES)
        assert result.contact.id is not None
        return result.contact.id


def stat(page: str, name: str) -> int:
    match = re.search(rf'data-stat="{name}">(\d+)<', page)
    assert match, f"no {name} statistic in the page"
    return int(match.group(1))


def row(page: str, request_id: int) -> str:
    match = re.search(rf'<tr id="request-{request_id}".*?</tr>', page, re.S)
    assert match, f"request {request_id} is not listed"
    return match.group(0)


def request_row(db, request_id: int) -> DataRequest:
    with Session(get_engine(db)) as s:
        found = s.get(DataRequest, request_id)
        assert found is not None
        return found


@pytest.fixture
def officer(web, make_staff):
    login(web, make_staff("compliance"))
    return web


def test_page_lists_open_requests_with_counts_and_overdue_highlighted(officer, db):
    a = add_contact(db, "a@example.com")
    b = add_contact(db, "b@example.com")
    late = recipient_request(db, a, "erasure", days_ago=33)
    soon = recipient_request(db, b, "access", days_ago=26, note="<b>bold</b> note")
    fresh = recipient_request(db, b, "rectification", days_ago=0)
    r = officer.get("/requests")
    assert r.status_code == 200
    page = r.text
    assert (stat(page, "open"), stat(page, "due-this-week"), stat(page, "overdue")) == (3, 2, 1)
    order = [int(m) for m in re.findall(r'<tr id="request-(\d+)"', page)]
    assert order == [late, soon, fresh]
    assert 'class="overdue"' in row(page, late) and "overdue by 3 days" in row(page, late)
    assert 'class="overdue"' not in row(page, soon) and "4 days left" in row(page, soon)
    assert "&lt;b&gt;bold&lt;/b&gt; note" in row(page, soon)  # autoescaped
    assert f'href="/contacts/{a}"' in row(page, late)
    # per request: complete and refuse forms, each with a CSRF token and labelled fields
    assert f'action="/requests/{late}/complete"' in page and f'action="/requests/{late}/refuse"' in page
    assert f'<label for="reason-{late}">' in page and f'id="confirm-{late}"' in page
    assert page.count('name="csrf_token"') >= 2 * 3 + 2  # 2 per request, record form, logout
    assert f'href="/requests/{soon}/export.json"' in page
    # the nav carries the overdue count; the dashboard too
    assert 'aria-current="page">Requests' in page and 'data-overdue="1"' in page
    home = officer.get("/").text
    assert 'data-overdue="1"' in home and stat(home, "overdue-requests") == 1
    assert "past the one-month deadline" in home
    # filters
    only_late = officer.get("/requests", params={"overdue": "1"}).text
    assert re.findall(r'<tr id="request-(\d+)"', only_late) == [str(late)]
    access = officer.get("/requests", params={"kind": "access"}).text
    assert re.findall(r'<tr id="request-(\d+)"', access) == [str(soon)]


def test_other_roles_cannot_see_the_page_or_its_count(web, make_staff, db):
    cid = add_contact(db, "x@example.com")
    rid = recipient_request(db, cid, "erasure", days_ago=40)
    login(web, make_staff("marketer"))
    assert web.get("/requests").status_code == 403
    home = web.get("/").text
    assert 'href="/requests"' not in home and "overdue-requests" not in home
    token = csrf_from(home)
    r = web.post(f"/requests/{rid}/complete", data={"csrf_token": token, "confirm": "yes"})
    assert r.status_code == 403
    r = web.post(f"/requests/{rid}/refuse", data={"csrf_token": token, "reason": "no"})
    assert r.status_code == 403
    assert web.get(f"/requests/{rid}/export.json").status_code == 403
    assert request_row(db, rid).status == "open"


def test_logged_out_goes_to_login(web, db):
    for r in (web.get("/requests"), web.post("/requests/1/complete"), web.post("/requests/1/refuse")):
        assert r.status_code == 303 and r.headers["location"] == "/login"


def test_admin_sees_the_page(web, make_staff):
    login(web, make_staff("admin"))
    r = web.get("/requests")
    assert r.status_code == 200 and "No open requests" in r.text
    assert "data-overdue" not in r.text  # nothing overdue: no badge


def test_forms_without_csrf_token_are_refused(officer, db):
    cid = add_contact(db, "c@example.com")
    rid = recipient_request(db, cid, "erasure")
    for url, data in (
        (f"/requests/{rid}/complete", {"confirm": "yes"}),
        (f"/requests/{rid}/refuse", {"reason": "identity not verified"}),
        ("/requests", {"person": "c@example.com", "kind": "access", "channel": "phone"}),
    ):
        assert officer.post(url, data=data).status_code == 403
        assert officer.post(url, data={**data, "csrf_token": "forged"}).status_code == 403
    assert request_row(db, rid).status == "open"
    with Session(get_engine(db)) as s:
        assert len(s.exec(select(DataRequest)).all()) == 1
        contact = s.get(Contact, cid)
        assert contact is not None and contact.erased_at is None


def test_erasure_needs_confirmation_then_erases(officer, db):
    cid = add_contact(db, "erase.me@example.com")
    rid = recipient_request(db, cid, "erasure")
    token = csrf_from(officer.get("/requests").text)
    r = officer.post(f"/requests/{rid}/complete", data={"csrf_token": token})
    assert r.status_code == 422 and "confirm the erasure" in r.text
    assert f'id="request-{rid}"' in r.text  # the page is shown again with the request
    assert request_row(db, rid).status == "open"

    r = officer.post(
        f"/requests/{rid}/complete", data={"csrf_token": token, "confirm": "yes", "note": "by letter"}
    )
    assert r.status_code == 303 and r.headers["location"] == "/requests"
    page = officer.get("/requests").text
    assert f"Request {rid} is done" in page and "stays suppressed" in page
    done = request_row(db, rid)
    assert done.status == "done" and done.closed_at is not None and "by letter" in (done.note or "")
    with Session(get_engine(db)) as s:
        contact = s.get(Contact, cid)
        assert contact is not None and contact.erased_at is not None and contact.email is None
        reasons = {x.reason for x in s.exec(select(Suppression))}
        assert "erasure" in reasons
        actions = [a.action for a in s.exec(select(AuditLog))]
        assert "contact.erase" in actions and "data_request.complete" in actions
    # closing it again is refused clearly
    r = officer.post(f"/requests/{rid}/complete", data={"csrf_token": token, "confirm": "yes"})
    assert r.status_code == 409 and "already done" in r.text


def test_access_request_export_and_completion(officer, db):
    cid = add_contact(db, "ask@example.com")
    rid = recipient_request(db, cid, "access")
    r = officer.get(f"/requests/{rid}/export.json")
    assert r.status_code == 200
    assert r.headers["content-disposition"] == f'attachment; filename="data-request-{rid}-export.json"'
    assert json.loads(r.text)["profile"]["email"] == "ask@example.com"
    token = csrf_from(officer.get("/requests").text)
    r = officer.post(f"/requests/{rid}/complete", data={"csrf_token": token})
    assert r.status_code == 303
    assert request_row(db, rid).status == "done"
    done_page = officer.get("/requests", params={"status": "done"}).text
    assert f'href="/requests/{rid}/export.json"' in row(done_page, rid)
    assert "Complete</summary>" not in row(done_page, rid)
    with Session(get_engine(db)) as s:
        exports = s.exec(select(AuditLog).where(AuditLog.action == "contact.export")).all()
        assert len(exports) == 2  # the download and the completion
    # the contact is kept
    assert officer.get(f"/contacts/{cid}").status_code == 200


def test_refuse_needs_a_reason(officer, db):
    cid = add_contact(db, "no@example.com")
    rid = recipient_request(db, cid, "erasure")
    token = csrf_from(officer.get("/requests").text)
    r = officer.post(f"/requests/{rid}/refuse", data={"csrf_token": token, "reason": "  "})
    assert r.status_code == 422 and "Say why" in r.text
    assert request_row(db, rid).status == "open"
    r = officer.post(f"/requests/{rid}/refuse", data={"csrf_token": token, "reason": "identity not verified"})
    assert r.status_code == 303
    refused = request_row(db, rid)
    assert refused.status == "refused" and "identity not verified" in (refused.note or "")
    with Session(get_engine(db)) as s:
        contact = s.get(Contact, cid)
        assert contact is not None and contact.erased_at is None
    assert f"Request {rid} refused." in officer.get("/requests").text


def test_record_a_request_that_arrived_by_phone(officer, db):
    cid = add_contact(db, "phone@example.com")
    token = csrf_from(officer.get("/requests").text)
    r = officer.post(
        "/requests",
        data={"csrf_token": token, "person": "Phone@Example.com", "kind": "access", "channel": "phone"},
    )
    assert r.status_code == 303
    with Session(get_engine(db)) as s:
        [made] = s.exec(select(DataRequest)).all()
        assert (made.contact_id, made.kind, made.channel, made.status) == (cid, "access", "phone", "open")
    assert "recorded; it is due on" in officer.get("/requests").text
    # by contact number too; the same open request is not repeated
    r = officer.post(
        "/requests", data={"csrf_token": token, "person": str(cid), "kind": "access", "channel": "letter"}
    )
    assert r.status_code == 303 and "already exists" in officer.get("/requests").text
    for data, message in (
        ({"person": "", "kind": "access", "channel": "phone"}, "Enter the person"),
        ({"person": "x@example.com", "kind": "forget", "channel": "phone"}, "Choose what"),
        ({"person": "not an address", "kind": "access", "channel": "phone"}, "email"),
        ({"person": "999999", "kind": "access", "channel": "phone"}, "not found"),
    ):
        r = officer.post("/requests", data={"csrf_token": token, **data})
        assert r.status_code in (404, 422) and message in r.text, (data, r.status_code)
