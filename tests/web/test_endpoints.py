"""The staff web UI: login, CSRF, dashboard, contacts, suppressions (SQLite and PostgreSQL)."""

from __future__ import annotations

import html
import re

import pytest
from sqlmodel import select

from app.auth.actor import Actor
from app.contacts import service as contacts
from app.contacts.schemas import ContactIn
from app.db import session_scope
from app.models import Campaign, ConsentEvent, Delivery, Suppression, User
from app.models.base import Source
from tests.web.conftest import PASSWORD, csrf_from, login

STAFF_PAGES = ["/", "/contacts", "/contacts/1", "/suppressions"]
SALES = Actor(kind="staff", role="sales")


def stat(page: str, name: str) -> int:
    match = re.search(rf'data-stat="{name}">(\d+)<', page)
    assert match, f"no {name} statistic in the page"
    return int(match.group(1))


def add_contact(db, **fields) -> int:
    with session_scope(db) as s:
        result = contacts.upsert(s, ContactIn(**fields), SALES)
        assert result.contact.id is not None
        return result.contact.id


# ------------------------------------------------------------------------------ login
@pytest.mark.parametrize("path", STAFF_PAGES)
def test_staff_pages_redirect_to_login_when_logged_out(web, path):
    r = web.get(path)
    assert r.status_code == 303
    assert r.headers["location"] == "/login"


def test_login_page_is_a_form_with_csrf_and_security_headers(web):
    r = web.get("/login")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert '<form method="post" action="/login"' in r.text
    assert '<label for="email">' in r.text and '<label for="password">' in r.text
    assert len(csrf_from(r.text)) >= 32
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["cache-control"] == "no-store"
    # Logged out: no navigation, no logout button.
    assert 'action="/logout"' not in r.text


def test_login_with_wrong_password_is_400_and_generic(web, staff):
    token = csrf_from(web.get("/login").text)
    wrong = web.post(
        "/login", data={"email": staff.email, "password": "not-the-password", "csrf_token": token}
    )
    unknown = web.post(
        "/login", data={"email": "nobody@staff.example.com", "password": PASSWORD, "csrf_token": token}
    )
    assert wrong.status_code == 400 and unknown.status_code == 400
    assert "The email address or password is incorrect." in wrong.text
    assert "The email address or password is incorrect." in unknown.text
    assert f'value="{staff.email}"' in wrong.text  # the email is kept in the form
    assert web.get("/").status_code == 303  # still logged out


def test_login_without_or_with_wrong_csrf_token_is_403(web, staff):
    no_session = web.post("/login", data={"email": staff.email, "password": staff.password})
    assert no_session.status_code == 403
    assert "security token" in no_session.text
    web.get("/login")  # now the session holds a token, but the form does not send it
    missing = web.post("/login", data={"email": staff.email, "password": staff.password})
    forged = web.post(
        "/login", data={"email": staff.email, "password": staff.password, "csrf_token": "forged-token"}
    )
    assert missing.status_code == 403 and forged.status_code == 403
    assert web.get("/").status_code == 303


def test_login_then_logout(web, staff, db):
    login(web, staff)
    page = web.get("/")
    assert page.status_code == 200
    assert "Staff Sales" in page.text and 'action="/logout"' in page.text
    with session_scope(db) as s:
        user = s.get(User, staff.id)
        assert user is not None and user.last_login_at is not None

    token = csrf_from(page.text)
    assert web.post("/logout").status_code == 403  # logout is a CSRF-protected form too
    assert web.get("/").status_code == 200
    r = web.post("/logout", data={"csrf_token": token})
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert "You have been logged out." in web.get("/login").text
    assert web.get("/").status_code == 303


def test_deactivated_user_loses_access(web, staff, db):
    login(web, staff)
    assert web.get("/contacts").status_code == 200
    with session_scope(db) as s:
        user = s.get(User, staff.id)
        assert user is not None
        user.active = False
        s.add(user)
    r = web.get("/contacts")
    assert r.status_code == 303 and r.headers["location"] == "/login"


# ------------------------------------------------------------------------------ dashboard
def test_dashboard_counts_charts_and_latest_events(logged_in, db, admin_headers):
    api = logged_in
    for email, source in [("ann@example.com", "registration"), ("bob@example.com", "import")]:
        r = api.post(
            "/api/v1/contacts",
            json={
                "email": email,
                "source": source,
                "preferences": [{"channel": "email", "topic": "surveys", "status": "opted_in"}],
            },
            headers=admin_headers,
        )
        assert r.status_code == 201, r.text
    add_contact(db, email="cy@example.com", source=Source.IMPORT)
    r = api.post(
        "/api/v1/suppressions",
        json={"channel": "email", "address": "gone@example.org", "reason": "hard_bounce"},
        headers=admin_headers,
    )
    assert r.status_code == 201, r.text
    with session_scope(db) as s:
        s.add(Campaign(name="Spring news"))

    page = logged_in.get("/")
    assert page.status_code == 200
    text = page.text
    assert stat(text, "contacts") == 3
    assert stat(text, "suppressions") == 1
    assert stat(text, "consent-events") == 3  # two opt-ins and one suppression
    assert stat(text, "campaigns") == 1
    assert 'aria-current="page">Dashboard' in text

    # Two accessible SVG charts, with the values written out.
    assert text.count('<svg class="chart"') == 2
    assert text.count('role="img"') == 2
    assert '<title id="chart-reasons-title">Active suppressions by reason (total 1)</title>' in text
    assert '<desc id="chart-sources-desc">import: 2; registration: 1</desc>' in text
    assert "<title>hard_bounce: 1</title>" in text

    # The latest consent events, newest first: the suppression, then the two opt-ins.
    table = text.split("The 10 most recent changes of consent")[1]
    rows = re.findall(r"<tr>(.*?)</tr>", table, flags=re.S)[1:]
    assert len(rows) == 3
    assert "suppressed" in rows[0] and "<td>staff</td>" in rows[0]
    assert all("opted_in" in row and "<td>surveys</td>" in row for row in rows[1:])
    assert "<td>import</td>" in rows[1] and "<td>form</td>" in rows[2]  # bob (import), then ann (form)


def test_dashboard_without_data_says_so(logged_in):
    text = logged_in.get("/").text
    assert stat(text, "contacts") == 0
    assert text.count("No data yet.") == 2
    assert "No consent events yet." in text


# ------------------------------------------------------------------------------ contacts
def test_contact_list_search_and_detail(logged_in, db, admin_headers):
    ann = add_contact(
        db,
        email="ann@example.com",
        name="Ann Archer",
        company="Acme",
        phone="+49 30 1234567",
        source=Source.REGISTRATION,
        preferences=[{"channel": "email", "topic": None, "status": "opted_in"}],
    )
    bob = add_contact(db, email="bob@other.example.net", name="Bob Baker", company="Globex")
    with session_scope(db) as s:
        campaign = Campaign(name="Welcome")
        s.add(campaign)
        s.flush()
        assert campaign.id is not None
        s.add(Delivery(campaign_id=campaign.id, contact_id=ann, status="sent"))
    for address, reason in [("ANN@example.com", "manual_request"), ("@example.com", "domain_block")]:
        r = logged_in.post(
            "/api/v1/suppressions",
            json={"channel": "email", "address": address, "reason": reason},
            headers=admin_headers,
        )
        assert r.status_code == 201, r.text

    listing = logged_in.get("/contacts")
    assert listing.status_code == 200
    assert "Ann Archer" in listing.text and "Bob Baker" in listing.text
    assert f'href="/contacts/{ann}"' in listing.text
    assert "2 contacts" in listing.text

    found = logged_in.get("/contacts", params={"q": "acme"})
    assert "Ann Archer" in found.text and "Bob Baker" not in found.text
    assert "1 contact matching “acme”" in found.text

    detail = logged_in.get(f"/contacts/{ann}")
    assert detail.status_code == 200
    text = detail.text
    assert "<h1>Ann Archer</h1>" in text
    assert "ann@example.com" in text and "+49301234567" in text and "Acme" in text
    assert stat(text, "deliveries") == 1
    prefs = text.split("<h2>Preferences</h2>")[1].split("<h2>")[0]
    assert "opted_in" in prefs and "email" in prefs
    supps = text.split("<h2>Suppressions</h2>")[1].split("<h2>")[0]
    assert "manual_request" in supps and "domain_block" in supps  # by email hash and by domain hash
    history = text.split("<h2>Consent history</h2>")[1]
    assert "opted_in" in history and "suppressed" in history and "form" in history

    other = logged_in.get(f"/contacts/{bob}").text
    assert "No suppression matches this contact." in other
    assert stat(other, "deliveries") == 0


def test_contact_pagination(logged_in, db):
    with session_scope(db) as s:
        for i in range(30):
            contacts.upsert(s, ContactIn(email=f"lead{i:02d}@example.com", name=f"Lead {i:02d}"), SALES)
    first = logged_in.get("/contacts").text
    assert first.count('<td class="num"><a href="/contacts/') == 25
    assert "Lead 29" in first and "Lead 04" not in first  # newest first
    assert 'href="/contacts?q=&amp;page=2" rel="next"' in first
    second = logged_in.get("/contacts", params={"page": "2"}).text
    assert second.count('<td class="num"><a href="/contacts/') == 5
    assert "Lead 00" in second and 'rel="next"' not in second and 'rel="prev"' in second
    assert logged_in.get("/contacts", params={"page": "nonsense"}).status_code == 200


def test_unknown_erased_and_malformed_contacts_are_404_pages(logged_in, db, token_for):
    gone = add_contact(db, email="gone@example.com", name="Gone")
    r = logged_in.delete(f"/api/v1/contacts/{gone}", headers=token_for("compliance"))
    assert r.status_code == 200, r.text
    for path in (f"/contacts/{gone}", "/contacts/999999", "/contacts/abc", "/contacts/99999999999"):
        page = logged_in.get(path)
        assert page.status_code == 404, path
        assert page.headers["content-type"].startswith("text/html")
        assert "<h1>Not found</h1>" in page.text
    assert "erased" in logged_in.get(f"/contacts/{gone}").text
    assert "Gone" not in logged_in.get("/contacts").text


def test_contact_fields_are_escaped(logged_in, db):
    payload = "<script>alert(1)</script>"
    cid = add_contact(db, email="x@example.com", name=payload, company='"><img src=x onerror=alert(2)>')
    escaped = html.escape(payload, quote=False)
    for page in (logged_in.get("/contacts").text, logged_in.get(f"/contacts/{cid}").text):
        assert payload not in page
        assert escaped in page
        assert "<img src=x" not in page
    search = logged_in.get("/contacts", params={"q": payload}).text
    assert payload not in search and escaped in search


# ------------------------------------------------------------------------------ suppressions
@pytest.mark.parametrize("role", ["sales", "marketer"])
def test_suppression_form_records_an_opt_out(web, make_staff, db, admin_headers, role):
    who = make_staff(role)
    login(web, who)
    cid = add_contact(db, email="caller@example.com", name="Caller")
    token = csrf_from(web.get("/suppressions").text)
    r = web.post(
        "/suppressions",
        data={
            "address": "Caller@Example.com",
            "channel": "email",
            "scope": "all",
            "reason": "manual_request",
            "method": "phone",
            "note": "called on Monday",
            "csrf_token": token,
        },
    )
    assert r.status_code == 303 and r.headers["location"] == "/suppressions"
    page = web.get("/suppressions").text
    assert "Suppression recorded for" in page
    listed = page.split('id="list"')[1]
    assert "ca…@example.com" in listed and "caller@example.com" not in listed
    assert "manual_request" in listed and "staff" in listed and "phone" in listed

    api = web.get("/api/v1/suppressions", params={"address": "caller@example.com"}, headers=admin_headers)
    items = api.json()["items"]
    assert len(items) == 1
    assert items[0]["reason"] == "manual_request"
    assert items[0]["origin"] == "staff" and items[0]["method"] == "phone"
    assert items[0]["channel"] == "email" and items[0]["scope"] == "all"
    assert items[0]["note"] == "called on Monday"
    with session_scope(db) as s:
        row = s.exec(select(Suppression)).one()
        assert row.created_by_user_id == who.id
        event = s.exec(select(ConsentEvent).where(ConsentEvent.status == "suppressed")).one()
        assert event.actor == "staff" and event.actor_user_id == who.id and event.contact_id == cid

    # The same request again changes nothing and says so.
    again = web.post(
        "/suppressions",
        data={
            "address": "caller@example.com",
            "reason": "manual_request",
            "method": "phone",
            "csrf_token": token,
        },
    )
    assert again.status_code == 303
    assert "already suppressed" in web.get("/suppressions").text


def test_suppression_form_all_channels_and_topic_scope(logged_in, admin_headers):
    token = csrf_from(logged_in.get("/suppressions").text)
    r = logged_in.post(
        "/suppressions",
        data={
            "address": "+49 30 7654321",
            "channel": "all",
            "scope": "surveys",
            "reason": "manual_request",
            "method": "letter",
            "csrf_token": token,
        },
    )
    assert r.status_code == 303, r.text
    items = logged_in.get(
        "/api/v1/suppressions", params={"address": "+49307654321"}, headers=admin_headers
    ).json()["items"]
    assert [(i["channel"], i["scope"], i["kind"], i["method"]) for i in items] == [
        ("all", "surveys", "phone", "letter")
    ]


def test_suppression_form_without_csrf_is_403_and_records_nothing(logged_in, admin_headers):
    logged_in.get("/suppressions")
    for data in ({"address": "victim@example.com"}, {"address": "victim@example.com", "csrf_token": "x"}):
        r = logged_in.post("/suppressions", data=data)
        assert r.status_code == 403
        assert "security token" in r.text
    api = logged_in.get(
        "/api/v1/suppressions", params={"address": "victim@example.com"}, headers=admin_headers
    )
    assert api.json() == {"items": []}


def test_suppression_form_when_logged_out_redirects_and_records_nothing(web, admin_headers):
    token = csrf_from(web.get("/login").text)
    r = web.post("/suppressions", data={"address": "victim@example.com", "csrf_token": token})
    assert r.status_code == 303 and r.headers["location"] == "/login"
    api = web.get("/api/v1/suppressions", params={"address": "victim@example.com"}, headers=admin_headers)
    assert api.json() == {"items": []}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"address": "not-an-email@"}, "invalid email address"),
        ({"address": "12"}, "invalid phone number"),
        ({"address": "   "}, "Enter the email address, @domain or phone number"),
        ({"address": "a@example.com", "reason": "one_click"}, "Choose one of the listed reasons."),
        ({"address": "a@example.com", "scope": "no-such-topic"}, "Choose “all topics” or one of the listed"),
        ({"address": "a@example.com", "channel": "fax"}, "Choose a channel."),
        ({"address": "a@example.com", "method": "pigeon"}, "Choose how the request arrived."),
    ],
)
def test_suppression_form_errors_are_422_with_message(logged_in, db, data, message):
    token = csrf_from(logged_in.get("/suppressions").text)
    r = logged_in.post("/suppressions", data={**data, "note": "<b>kept</b>", "csrf_token": token})
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("text/html")
    assert 'role="alert"' in r.text
    assert html.escape(message, quote=False) in r.text
    assert "&lt;b&gt;kept&lt;/b&gt;</textarea>" in r.text  # the form is re-filled, escaped
    with session_scope(db) as s:
        assert s.exec(select(Suppression)).all() == []
        assert s.exec(select(ConsentEvent)).all() == []


def test_suppression_list_filters_by_reason(logged_in, admin_headers):
    for address, reason in [("bounce@example.com", "hard_bounce"), ("asked@example.com", "manual_request")]:
        r = logged_in.post(
            "/api/v1/suppressions", json={"address": address, "reason": reason}, headers=admin_headers
        )
        assert r.status_code == 201, r.text
    everything = logged_in.get("/suppressions").text.split('id="list"')[1]
    assert "bo…@example.com" in everything and "as…@example.com" in everything
    bounces = logged_in.get("/suppressions", params={"reason": "hard_bounce"}).text.split('id="list"')[1]
    assert "bo…@example.com" in bounces and "as…@example.com" not in bounces
    assert '<option value="hard_bounce" selected>' in bounces
    nothing = logged_in.get("/suppressions", params={"reason": "complaint"}).text
    assert "No suppressions with reason complaint." in nothing


def test_suppression_page_prefills_address_from_contact_link(logged_in):
    page = logged_in.get("/suppressions", params={"address": "<x>@example.com"}).text
    assert 'value="&lt;x&gt;@example.com"' in page
