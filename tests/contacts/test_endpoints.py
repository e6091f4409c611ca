"""The contact API: create/upsert, find, rectify, erase, export, preferences, bad input."""

from __future__ import annotations

import json
from datetime import date, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import Session, select

from app.db import get_engine
from app.models import Campaign, Delivery, Preference, utcnow
from app.suppression import gate

URL = "/api/v1/contacts"
OPT_IN_EMAIL = [{"channel": "email", "topic": None, "status": "opted_in"}]


@pytest.fixture
def sales(token_for) -> dict[str, str]:
    return token_for("sales")


@pytest.fixture
def compliance(token_for) -> dict[str, str]:
    return token_for("compliance")


def create(client, headers, expect: int = 201, **body: Any) -> dict[str, Any]:
    r = client.post(URL, json=body, headers=headers)
    assert r.status_code == expect, r.text
    return r.json()


def decide(db, contact_id: int, *, channel="email", topic=None, purpose="marketing") -> gate.Decision:
    with Session(get_engine(db)) as s:
        return gate.check(s, [contact_id], channel=channel, topic=topic, purpose=purpose)[contact_id]


def suppressions(client, headers, address: str, **params: Any) -> list[dict[str, Any]]:
    r = client.get("/api/v1/suppressions", params={"address": address, **params}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def prefs_of(client, headers, cid: int) -> dict[tuple[str, str | None], str]:
    r = client.get(f"{URL}/{cid}/preferences", headers=headers)
    assert r.status_code == 200, r.text
    return {(p["channel"], p["topic"]): p["status"] for p in r.json()["preferences"]}


def locs(response) -> list[list[Any]]:
    detail = response.json().get("detail")
    assert isinstance(detail, list), response.text
    return [list(d["loc"]) for d in detail]


def names_field(response, field: str) -> bool:
    return any(field in loc for loc in locs(response))


def adult_dob(years: int = 30) -> str:
    today = date.today()
    return today.replace(year=today.year - years, day=min(today.day, 28)).isoformat()


def minor_dob() -> str:
    return (date.today() - timedelta(days=365 * 15)).isoformat()


# ----------------------------------------------------------------------------- create, find


def test_create_then_upsert_in_any_letter_case(client, sales):
    first = create(client, sales, email="Carla.Gomez@Example.com", name="Carla", company="ACME")
    assert first["created"] is True
    assert first["email"] == "Carla.Gomez@example.com"
    assert first["source"] == "api"
    again = create(client, sales, expect=200, email="CARLA.GOMEZ@EXAMPLE.COM", position="Buyer")
    assert again["id"] == first["id"]
    assert again["created"] is False
    assert again["position"] == "Buyer"
    assert again["company"] == "ACME"  # fields not sent are kept
    assert again["name"] == "Carla"


def test_find_by_email_is_exact_and_case_insensitive(client, sales):
    c = create(client, sales, email="dora@example.com", name="Dora")
    create(client, sales, email="dora.other@example.com")
    for probe in ("dora@example.com", "DORA@Example.COM", "  Dora@example.com  "):
        r = client.get(URL, params={"email": probe}, headers=sales)
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        assert [i["id"] for i in items] == [c["id"]], probe
    for probe in ("dora@example", "ora@example.com", "nobody@example.com", "not an email"):
        r = client.get(URL, params={"email": probe}, headers=sales)
        assert r.status_code == 200, r.text
        assert r.json() == {"items": []}, probe


def test_read_returns_the_contract_shape(client, sales):
    c = create(client, sales, email="eve@example.com", name="Eve", preferences=OPT_IN_EMAIL)
    r = client.get(f"{URL}/{c['id']}", headers=sales)
    assert r.status_code == 200, r.text
    body = r.json()
    for key in ("id", "email", "name", "phone", "source", "date_of_birth", "preferences"):
        assert key in body
    assert body["preferences"][0]["channel"] == "email"
    assert body["preferences"][0]["topic"] is None
    assert body["preferences"][0]["status"] == "opted_in"


def test_patch_rectifies(client, sales):
    c = create(client, sales, email="fay@example.com", name="Fay", city="Bonn")
    r = client.patch(
        f"{URL}/{c['id']}", json={"name": "Fay Lee", "attributes": {"tier": "gold"}}, headers=sales
    )
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "Fay Lee"
    assert r.json()["city"] == "Bonn"
    assert r.json()["attributes"] == {"tier": "gold"}
    r = client.get(f"{URL}/{c['id']}", headers=sales)
    assert r.json()["name"] == "Fay Lee"


def test_patch_to_an_email_of_another_contact_conflicts(client, sales):
    create(client, sales, email="gil@example.com")
    other = create(client, sales, email="gil2@example.com")
    r = client.patch(f"{URL}/{other['id']}", json={"email": "GIL@example.com"}, headers=sales)
    assert r.status_code == 409, r.text


# ----------------------------------------------------------------------------- erasure


def test_erase_removes_person_and_keeps_suppression(client, sales, compliance, db):
    c = create(client, sales, email="Hana@Example.com", name="Hana", preferences=OPT_IN_EMAIL)
    cid = c["id"]
    r = client.delete(f"{URL}/{cid}", headers=compliance)
    assert r.status_code == 200, r.text
    assert r.json() == {"id": cid, "erased": True, "reason": "erasure"}

    assert client.get(f"{URL}/{cid}", headers=sales).status_code == 404
    assert client.get(f"{URL}/{cid}/preferences", headers=sales).status_code == 404
    assert client.delete(f"{URL}/{cid}", headers=compliance).status_code == 404
    r = client.get(URL, params={"email": "hana@example.com"}, headers=sales)
    assert r.json() == {"items": []}
    r = client.get(URL, params={"q": "Hana"}, headers=sales)
    assert r.json() == {"items": []}
    items = suppressions(client, sales, "HANA@example.COM")
    assert "erasure" in {i["reason"] for i in items}
    assert all(i["address_hint"] is None for i in items)

    # The same person comes back: a new contact, and the gate never lets them be mailed.
    again = create(client, sales, email="hana@example.com", name="Hana", preferences=OPT_IN_EMAIL)
    assert again["id"] != cid
    assert again["ignored_preferences"], again
    assert again["ignored_preferences"][0]["reason"].startswith("suppressed:")
    for purpose in ("marketing", "service"):
        decision = decide(db, again["id"], purpose=purpose)
        assert not decision.allowed, purpose
        assert decision.reason is not None and decision.reason.startswith("suppressed:"), decision
    assert decide(db, cid).reason == "erased"


def test_export_holds_everything(client, sales, compliance, db):
    c = create(
        client,
        sales,
        email="ida@example.com",
        name="Ida",
        phone="+49 30 12345678",
        attributes={"shoe": 42},
        preferences=[*OPT_IN_EMAIL, {"channel": "phone", "status": "opted_in"}],
        consent_text="Yes, send me news",
        consent_version="v3",
    )
    cid = c["id"]
    r = client.put(
        f"{URL}/{cid}/preferences",
        json={"preferences": [{"channel": "phone", "status": "opted_out"}], "method": "phone"},
        headers=sales,
    )
    assert r.status_code == 200, r.text
    with Session(get_engine(db)) as s:
        campaign = Campaign(name="Spring sale", subject="Hi", status="sent")
        s.add(campaign)
        s.flush()
        s.add(Delivery(campaign_id=campaign.id, contact_id=cid, status="sent", message_id="<m1@x>"))
        s.commit()

    r = client.get(f"{URL}/{cid}/export", headers=compliance)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["profile"]["email"] == "ida@example.com"
    assert data["profile"]["name"] == "Ida"
    assert data["profile"]["phone"] == "+493012345678"
    assert data["profile"]["attributes"] == {"shoe": 42}
    assert "email_hash" not in data["profile"]
    prefs = {(p["channel"], p["topic"]): p["status"] for p in data["preferences"]}
    assert prefs == {("email", None): "opted_in", ("phone", None): "opted_out"}
    history = data["consent_history"]
    assert {(e["channel"], e["status"]) for e in history} >= {
        ("email", "opted_in"),
        ("phone", "opted_in"),
        ("phone", "opted_out"),
    }
    assert any(e["text_shown"] == "Yes, send me news" and e["text_version"] == "v3" for e in history)
    assert any(s["channel"] == "phone" and s["reason"] == "manual_request" for s in data["suppressions"])
    assert data["deliveries"] == [
        {
            "campaign": "Spring sale",
            "campaign_id": data["deliveries"][0]["campaign_id"],
            "status": "sent",
            "sent_at": None,
            "message_id": "<m1@x>",
        }
    ]
    # export is compliance-only
    assert client.get(f"{URL}/{cid}/export", headers=sales).status_code == 403


# ----------------------------------------------------------------------------- identifiers


@pytest.mark.parametrize("address", ["用户@例子.广告", "josé@exämple.com"])
def test_international_address_accepted(client, sales, address):
    c = create(client, sales, email=address, name="Intl")
    assert c["email"]
    r = client.get(URL, params={"email": address}, headers=sales)
    assert [i["id"] for i in r.json()["items"]] == [c["id"]]
    again = create(client, sales, expect=200, email=address.upper())
    assert again["id"] == c["id"]


def test_spellings_of_the_same_international_address_are_one_person(client, sales):
    c = create(client, sales, email="josé@exämple.com")
    for spelling in ("JOSÉ@xn--exmple-cua.com", "jose\u0301@EXÄMPLE.com", "José@Exämple.Com"):
        again = create(client, sales, expect=200, email=spelling)
        assert again["id"] == c["id"], spelling
        r = client.get(URL, params={"email": spelling}, headers=sales)
        assert [i["id"] for i in r.json()["items"]] == [c["id"]], spelling


@pytest.mark.parametrize(
    ("given", "country", "expected"),
    [
        ("+49 30 12345678", None, "+493012345678"),
        ("+49 (0)30 1234-5678", None, "+493012345678"),
        ("030 12345678", "DE", "+493012345678"),
        ("030 12345678", "de", "+493012345678"),
        ("+1 202-555-0143", None, "+12025550143"),
    ],
)
def test_phone_normalised_to_e164(client, sales, given, country, expected):
    body: dict[str, Any] = {"phone": given, "name": "Phone"}
    if country:
        body["country"] = country
    c = create(client, sales, **body)
    assert c["phone"] == expected
    if country:
        assert c["country"] == country.upper()


def test_phone_only_lead_is_upserted_by_phone(client, sales):
    first = create(client, sales, phone="+49 30 12345678", name="Phone Only")
    again = create(client, sales, expect=200, phone="+493012345678", company="ACME")
    assert again["id"] == first["id"]
    assert again["email"] is None


def test_national_number_without_country_refused(client, sales):
    r = client.post(URL, json={"phone": "030 12345678"}, headers=sales)
    assert r.status_code == 422, r.text
    assert names_field(r, "phone")


# ----------------------------------------------------------------------------- age


def test_under_18_refused(client, sales):
    r = client.post(URL, json={"email": "kid@example.com", "date_of_birth": minor_dob()}, headers=sales)
    assert r.status_code == 422, r.text
    assert names_field(r, "date_of_birth")
    assert client.get(URL, params={"email": "kid@example.com"}, headers=sales).json() == {"items": []}


def test_exactly_18_today_accepted(client, sales):
    today = date.today()
    try:
        born = today.replace(year=today.year - 18)
    except ValueError:  # 29 February
        born = today.replace(year=today.year - 18, day=28)
    c = create(client, sales, email="just18@example.com", date_of_birth=born.isoformat())
    assert c["date_of_birth"] == born.isoformat()


def test_date_of_birth_in_future_refused(client, sales):
    future = (date.today() + timedelta(days=3)).isoformat()
    r = client.post(URL, json={"email": "f@example.com", "date_of_birth": future}, headers=sales)
    assert r.status_code == 422, r.text
    assert names_field(r, "date_of_birth")


def test_age_not_confirmed_refused(client, sales):
    r = client.post(URL, json={"email": "unsure@example.com", "age_confirmed": False}, headers=sales)
    assert r.status_code == 422, r.text
    assert names_field(r, "age_confirmed")


def test_adult_with_confirmed_age_accepted(client, sales):
    c = create(client, sales, email="adult@example.com", date_of_birth=adult_dob(), age_confirmed=True)
    assert c["age_confirmed"] is True


def test_patch_revealing_a_minor_erases_and_suppresses(client, sales, db):
    c = create(client, sales, email="Young@Example.com", preferences=OPT_IN_EMAIL)
    r = client.patch(f"{URL}/{c['id']}", json={"date_of_birth": minor_dob()}, headers=sales)
    assert r.status_code == 200, r.text
    assert r.json() == {"id": c["id"], "erased": True, "reason": "underage"}
    assert client.get(f"{URL}/{c['id']}", headers=sales).status_code == 404
    assert "underage" in {i["reason"] for i in suppressions(client, sales, "young@EXAMPLE.com")}
    again = create(client, sales, email="young@example.com", age_confirmed=True, preferences=OPT_IN_EMAIL)
    assert again["ignored_preferences"]
    for purpose in ("marketing", "service"):
        assert decide(db, again["id"], purpose=purpose).reason == "suppressed:underage"


def test_upsert_revealing_a_minor_erases(client, sales):
    c = create(client, sales, email="teen@example.com")
    r = client.post(URL, json={"email": "teen@example.com", "date_of_birth": minor_dob()}, headers=sales)
    assert r.status_code == 200, r.text
    assert r.json()["erased"] is True and r.json()["reason"] == "underage"
    assert client.get(f"{URL}/{c['id']}", headers=sales).status_code == 404


# ----------------------------------------------------------------------------- opt-outs


def test_upsert_never_lifts_an_opt_out(client, sales, db):
    c = create(client, sales, email="jo@example.com", preferences=OPT_IN_EMAIL)
    cid = c["id"]
    assert decide(db, cid).allowed
    r = client.put(
        f"{URL}/{cid}/preferences",
        json={"preferences": [{"channel": "email", "topic": None, "status": "opted_out"}], "method": "phone"},
        headers=sales,
    )
    assert r.status_code == 200, r.text
    assert decide(db, cid).reason == "suppressed:manual_request"

    for email in ("jo@example.com", "JO@EXAMPLE.COM"):
        for source in ("api", "import", "registration"):
            r = client.post(
                URL,
                json={"email": email, "source": source, "preferences": OPT_IN_EMAIL},
                headers=sales,
            )
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["id"] == cid
            assert body["ignored_preferences"], body
            assert body["ignored_preferences"][0]["channel"] == "email"
            assert prefs_of(client, sales, cid) == {("email", None): "opted_out"}
            assert not decide(db, cid).allowed
    # a topic opt-in does not undo the channel-wide opt-out either
    r = client.post(
        URL,
        json={
            "email": "jo@example.com",
            "preferences": [{"channel": "email", "topic": "surveys", "status": "opted_in"}],
        },
        headers=sales,
    )
    assert r.json()["ignored_preferences"]
    assert not decide(db, cid, topic="surveys").allowed


def test_staff_cannot_opt_back_in(client, sales, admin_headers, db):
    c = create(client, sales, email="kim@example.com", preferences=OPT_IN_EMAIL)
    cid = c["id"]
    r = client.put(
        f"{URL}/{cid}/preferences",
        json={"preferences": [{"channel": "email", "status": "opted_out"}]},
        headers=sales,
    )
    assert r.status_code == 200, r.text
    for headers in (sales, admin_headers):
        r = client.put(
            f"{URL}/{cid}/preferences",
            json={"preferences": [{"channel": "email", "status": "opted_in"}], "method": "phone"},
            headers=headers,
        )
        assert r.status_code == 409, r.text
    assert prefs_of(client, sales, cid) == {("email", None): "opted_out"}
    assert not decide(db, cid).allowed


def test_opt_out_applies_to_the_whole_put_atomically(client, sales):
    """A 409 for a refused opt-in rolls back the whole request: nothing half-applied."""
    c = create(client, sales, email="lou@example.com", preferences=OPT_IN_EMAIL)
    cid = c["id"]
    client.put(
        f"{URL}/{cid}/preferences",
        json={"preferences": [{"channel": "email", "status": "opted_out"}]},
        headers=sales,
    )
    r = client.put(
        f"{URL}/{cid}/preferences",
        json={
            "preferences": [
                {"channel": "postal", "status": "opted_in"},
                {"channel": "email", "status": "opted_in"},
            ]
        },
        headers=sales,
    )
    assert r.status_code == 409, r.text
    assert prefs_of(client, sales, cid) == {("email", None): "opted_out"}


def test_topic_opt_out_keeps_other_topics(client, sales, db):
    c = create(client, sales, email="max@example.com", preferences=OPT_IN_EMAIL)
    cid = c["id"]
    r = client.put(
        f"{URL}/{cid}/preferences",
        json={"preferences": [{"channel": "email", "topic": "special-offers", "status": "opted_out"}]},
        headers=sales,
    )
    assert r.status_code == 200, r.text
    assert prefs_of(client, sales, cid) == {
        ("email", None): "opted_in",
        ("email", "special-offers"): "opted_out",
    }
    assert not decide(db, cid, topic="special-offers").allowed
    for topic in ("member-updates", "surveys", "partner-offers"):
        assert decide(db, cid, topic=topic).allowed, topic
    assert decide(db, cid, topic="special-offers", purpose="service").allowed


@pytest.mark.parametrize("where", ["post", "put"])
def test_unknown_topic_refused(client, sales, where, db):
    bad = [{"channel": "email", "topic": "no-such-topic", "status": "opted_in"}]
    if where == "post":
        r = client.post(URL, json={"email": "ned@example.com", "preferences": bad}, headers=sales)
    else:
        c = create(client, sales, email="ned@example.com")
        r = client.put(f"{URL}/{c['id']}/preferences", json={"preferences": bad}, headers=sales)
    assert r.status_code == 422, r.text
    assert names_field(r, "topic") and names_field(r, "preferences")
    with Session(get_engine(db)) as s:
        assert s.exec(select(Preference)).all() == []


# ----------------------------------------------------------------------------- bad input


BAD_BODIES: list[tuple[str, Any, str]] = [
    ("invalid email", {"email": "not-an-email"}, "email"),
    ("email without domain dot", {"email": "someone@localhost"}, "email"),
    ("malformed phone", {"phone": "12ab-not-a-phone"}, "phone"),
    ("too short phone", {"email": "p@example.com", "phone": "+49 1"}, "phone"),
    (
        "unknown channel",
        {"email": "a@example.com", "preferences": [{"channel": "pigeon", "status": "opted_in"}]},
        "channel",
    ),
    (
        "unknown status",
        {"email": "a@example.com", "preferences": [{"channel": "email", "status": "maybe"}]},
        "status",
    ),
    ("oversized name", {"email": "a@example.com", "name": "x" * 10_000}, "name"),
    ("oversized email", {"email": "a" * 400 + "@example.com"}, "email"),
    ("email over 254 characters", {"email": "a" * 60 + "@" + ".".join(["b" * 60] * 4) + ".com"}, "email"),
    ("name is a number", {"email": "a@example.com", "name": 123}, "name"),
    ("preferences is a string", {"email": "a@example.com", "preferences": "yes"}, "preferences"),
    ("date is not a date", {"email": "a@example.com", "date_of_birth": "not-a-date"}, "date_of_birth"),
    ("attributes is a list", {"email": "a@example.com", "attributes": [1, 2]}, "attributes"),
    (
        "too many attributes",
        {"email": "a@example.com", "attributes": {f"k{i}": i for i in range(51)}},
        "attributes",
    ),
    ("nested attribute", {"email": "a@example.com", "attributes": {"k": {"deep": 1}}}, "attributes"),
    ("oversized attribute", {"email": "a@example.com", "attributes": {"k": "v" * 5000}}, "attributes"),
    (
        "too many source_detail entries",
        {"email": "a@example.com", "source_detail": {f"k{i}": i for i in range(51)}},
        "source_detail",
    ),
    (
        "oversized source_detail",
        {"email": "a@example.com", "source_detail": {"k": "v" * 5000}},
        "source_detail",
    ),
    ("oversized consent_text", {"email": "a@example.com", "consent_text": "c" * 6000}, "consent_text"),
    ("unknown source", {"email": "a@example.com", "source": "scraped"}, "source"),
    ("bad country", {"email": "a@example.com", "country": "Germany"}, "country"),
    ("unknown merge", {"email": "a@example.com", "merge": "sometimes"}, "merge"),
    ("no identifier", {"name": "Nobody"}, "email"),
    ("age_confirmed not bool", {"email": "a@example.com", "age_confirmed": "perhaps"}, "age_confirmed"),
    ("too many preferences", {"email": "a@example.com", "preferences": OPT_IN_EMAIL * 101}, "preferences"),
]


@pytest.mark.parametrize(
    ("body", "field"), [(b, f) for _, b, f in BAD_BODIES], ids=[i for i, _, _ in BAD_BODIES]
)
def test_bad_contact_body_is_refused_naming_the_field(client, sales, body, field):
    r = client.post(URL, json=body, headers=sales)
    assert 400 <= r.status_code < 500, r.text
    assert r.status_code == 422, r.text
    assert names_field(r, field), r.text
    assert client.get(URL, headers=sales).json() == {"items": []}


PATCH_FIELDS = {
    "email",
    "name",
    "phone",
    "attributes",
    "date_of_birth",
    "age_confirmed",
    "country",
}
BAD_PATCHES = [(i, b, f) for i, b, f in BAD_BODIES if f in PATCH_FIELDS and i != "no identifier"]


@pytest.mark.parametrize(
    ("body", "field"), [(b, f) for _, b, f in BAD_PATCHES], ids=[i for i, _, _ in BAD_PATCHES]
)
def test_bad_patch_body_is_refused(client, sales, body, field):
    c = create(client, sales, email="patchme@example.com", name="Patch")
    r = client.patch(f"{URL}/{c['id']}", json=body, headers=sales)
    assert r.status_code == 422, r.text
    assert names_field(r, field), r.text
    after = client.get(f"{URL}/{c['id']}", headers=sales).json()
    assert after["name"] == "Patch" and after["email"] == "patchme@example.com"


@pytest.mark.parametrize(
    "content",
    [b"this is not json", b'{"email": "a@example.com",', b"\xff\xfe\x00garbage", b"", b"[]", b"null", b'"x"'],
)
def test_non_json_body_refused(client, sales, content):
    r = client.post(URL, content=content, headers={**sales, "Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert any(loc and loc[0] == "body" for loc in locs(r)), r.text


def test_form_body_refused(client, sales):
    r = client.post(URL, data={"email": "a@example.com"}, headers=sales)
    assert 400 <= r.status_code < 500, r.text


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("GET", ""),
        ("PATCH", ""),
        ("DELETE", ""),
        ("GET", "/export"),
        ("GET", "/preferences"),
        ("PUT", "/preferences"),
    ],
)
@pytest.mark.parametrize("contact_id", ["99999999999999999999", "-1", "0", "abc", "1.5", "2147483648"])
def test_bad_contact_id_in_path(client, admin_headers, method, suffix, contact_id):
    body = {"preferences": []} if method == "PUT" else ({"name": "x"} if method == "PATCH" else None)
    r = client.request(method, f"{URL}/{contact_id}{suffix}", json=body, headers=admin_headers)
    assert r.status_code == 422, r.text
    assert ["path", "contact_id"] in locs(r), r.text


def test_unknown_contact_is_404(client, admin_headers):
    for method, suffix in (("GET", ""), ("DELETE", ""), ("GET", "/export"), ("GET", "/preferences")):
        r = client.request(method, f"{URL}/2147483647{suffix}", headers=admin_headers)
        assert r.status_code == 404, (method, suffix, r.text)
    r = client.patch(f"{URL}/2147483647", json={"name": "x"}, headers=admin_headers)
    assert r.status_code == 404, r.text


@pytest.mark.parametrize(
    "params",
    [{"email": "a" * 400}, {"limit": "0"}, {"limit": "100000"}, {"offset": "-1"}, {"q": "q" * 500}],
)
def test_bad_query_refused(client, sales, params):
    r = client.get(URL, params=params, headers=sales)
    assert r.status_code == 422, r.text
    assert any(loc[0] == "query" and loc[1] in params for loc in locs(r)), r.text


NUL_TEMPLATES = [
    ('{"email": "ctl@example.com", "name": "%s"}', "name"),
    ('{"email": "ctl@example.com", "company": "%s"}', "company"),
    ('{"email": "ctl@example.com", "attributes": {"k": "%s"}}', "attributes"),
    ('{"email": "ctl@example.com", "attributes": {"%s": "v"}}', "attributes"),
    ('{"email": "c%s@example.com"}', "email"),
    ('{"email": "ctl@example.com", "source_detail": {"form": "%s"}}', "source_detail"),
    (
        '{"email": "ctl@example.com", "consent_text": "%s", "preferences": [{"channel": "email",'
        ' "status": "opted_in"}]}',
        "consent_text",
    ),
]


@pytest.mark.parametrize(("template", "field"), NUL_TEMPLATES)
@pytest.mark.parametrize("value", [r"\u0000", r"nul\u0000inside"])
def test_nul_character_refused_naming_the_field(client, sales, template, field, value):
    """PostgreSQL text cannot hold U+0000: it must be a 422 naming the field, never a 500."""
    raw = (template % value).encode()
    r = client.post(URL, content=raw, headers={**sales, "Content-Type": "application/json"})
    assert r.status_code == 422, (raw, r.text)
    assert names_field(r, field), r.text


def test_nul_character_refused_in_patch_and_preferences(client, sales):
    c = create(client, sales, email="nul@example.com", preferences=OPT_IN_EMAIL)
    r = client.patch(f"{URL}/{c['id']}", json={"name": "a\x00b"}, headers=sales)
    assert r.status_code == 422, r.text
    assert names_field(r, "name")
    for key in ("note", "consent_text"):
        r = client.put(
            f"{URL}/{c['id']}/preferences",
            json={"preferences": [{"channel": "email", "status": "opted_out"}], key: "a\x00"},
            headers=sales,
        )
        assert r.status_code == 422, r.text
        assert names_field(r, key)
    assert prefs_of(client, sales, c["id"]) == {("email", None): "opted_in"}
    r = client.get(URL, params={"q": "a\x00"}, headers=sales)
    assert r.status_code == 422, r.text
    assert ["query", "q"] in locs(r)


@pytest.mark.parametrize("value", [r"\ud800", r"x\udfffy", r"\u0007bell", r"\u202eevil", r"\ufeff"])
def test_odd_characters_never_500(client, sales, value):
    for template, _field in NUL_TEMPLATES:
        raw = (template % value).encode()
        r = client.post(URL, content=raw, headers={**sales, "Content-Type": "application/json"})
        assert r.status_code < 500, (raw, r.text)
        assert r.status_code in (200, 201, 422), (raw, r.text)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"email": "nan@example.com", "attributes": {"x": NaN}}', "attributes"),
        (b'{"email": "nan@example.com", "attributes": {"x": Infinity}}', "attributes"),
        (b'{"email": "nan@example.com", "source_detail": {"x": -Infinity}}', "source_detail"),
    ],
)
def test_non_finite_numbers_refused(client, sales, raw, field):
    """NaN and Infinity are not JSON (and jsonb refuses them): 422, never a 500."""
    r = client.post(URL, content=raw, headers={**sales, "Content-Type": "application/json"})
    assert r.status_code == 422, (raw, r.text)
    assert names_field(r, field), r.text


def test_huge_numbers_never_500(client, sales):
    body = {"email": "big@example.com", "attributes": {"x": 10**40, "y": -(10**40), "z": 1e308}}
    r = client.post(URL, json=body, headers=sales)
    assert r.status_code < 500, r.text
    raw = b'{"email": "big2@example.com", "attributes": {"x": ' + b"9" * 5000 + b"}}"
    r = client.post(URL, content=raw, headers={**sales, "Content-Type": "application/json"})
    assert r.status_code < 500, r.text


# ----------------------------------------------------------------------------- fuzz

FIELDS = [
    "email",
    "name",
    "phone",
    "address_line1",
    "address_line2",
    "city",
    "region",
    "zip",
    "country",
    "company",
    "position",
    "primary_business",
    "attributes",
    "date_of_birth",
    "age_confirmed",
    "source",
    "source_detail",
    "preferences",
    "consent_text",
    "consent_version",
    "merge",
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(
        [
            "",
            "a@example.com",
            "A@EXAMPLE.COM",
            "用户@例子.广告",
            "+49 30 12345678",
            "030 12345678",
            "DE",
            "zz",
            "2000-01-01",
            "2020-02-29",
            "9999-12-31",
            "0001-01-01",
            "opted_in",
            "opted_out",
            "email",
            "phone",
            "postal",
            "special-offers",
            "api",
            "import",
            "fill_empty",
            "x" * 400,
        ]
    )
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
preference_items = st.fixed_dictionaries(
    {},
    optional={
        "channel": st.sampled_from(["email", "phone", "postal", "fax"]) | json_values,
        "topic": st.sampled_from([None, "special-offers", "surveys", "nope"]) | json_values,
        "status": st.sampled_from(["opted_in", "opted_out", "maybe"]) | json_values,
    },
)
field_values = {
    "preferences": st.lists(preference_items, max_size=3) | json_values,
    "attributes": st.dictionaries(st.text(max_size=70), scalars, max_size=5) | json_values,
    "source_detail": st.dictionaries(st.text(max_size=70), scalars, max_size=5) | json_values,
}
bodies = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=12), json_values, max_size=8).flatmap(
    lambda base: st.fixed_dictionaries(
        {key: field_values[key] if key in field_values else st.just(value) for key, value in base.items()}
    )
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=bodies | json_values)
def test_fuzz_post_contacts_never_500(client, admin_headers, body):
    r = client.post(
        URL, content=json.dumps(body), headers={**admin_headers, "Content-Type": "application/json"}
    )
    assert r.status_code < 500, (body, r.text)
    assert r.status_code in (200, 201, 409, 422), (body, r.text)
    if r.status_code == 422:
        assert isinstance(r.json()["detail"], list), r.text


def test_created_at_is_recent(client, sales):
    c = create(client, sales, email="time@example.com")
    from datetime import datetime

    created = datetime.fromisoformat(c["created_at"])
    assert created.tzinfo is not None
    assert abs((utcnow() - created).total_seconds()) < 120
