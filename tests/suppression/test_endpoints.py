"""The suppression API: add (idempotent), look up by keyed hash, scopes, lift (admin, audited)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlmodel import Session, select

from app.db import get_engine
from app.models import AuditLog, ConsentEvent, Suppression
from app.suppression import gate

URL = "/api/v1/suppressions"
CONTACTS = "/api/v1/contacts"
OPT_IN_EMAIL = [{"channel": "email", "topic": None, "status": "opted_in"}]


@pytest.fixture
def sales(token_for) -> dict[str, str]:
    return token_for("sales")


def add(client, headers, expect: int = 201, **body: Any) -> dict[str, Any]:
    r = client.post(URL, json=body, headers=headers)
    assert r.status_code == expect, r.text
    return r.json()


def listed(client, headers, address: str | None = None, **params: Any) -> list[dict[str, Any]]:
    if address is not None:
        params["address"] = address
    r = client.get(URL, params=params, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def contact(client, headers, **body: Any) -> int:
    r = client.post(CONTACTS, json=body, headers=headers)
    assert r.status_code in (200, 201), r.text
    return r.json()["id"]


def decide(db, contact_id: int, *, channel="email", topic=None, purpose="marketing") -> gate.Decision:
    with Session(get_engine(db)) as s:
        return gate.check(s, [contact_id], channel=channel, topic=topic, purpose=purpose)[contact_id]


def test_phone_request_recorded_and_found_in_any_case(client, sales, db):
    cid = contact(client, sales, email="Rita@Example.com", preferences=OPT_IN_EMAIL)
    assert decide(db, cid).allowed
    row = add(client, sales, address="RITA@example.com", method="phone", note="called on Monday")
    assert row["reason"] == "manual_request"
    assert row["channel"] == "email"
    assert row["scope"] == "all"
    assert row["method"] == "phone"
    assert row["origin"] == "staff"
    assert row["note"] == "called on Monday"
    assert row["lifted_at"] is None
    assert "rita@example.com" not in (row["address_hint"] or "")  # only a masked hint
    for probe in ("rita@example.com", "RITA@EXAMPLE.COM", " Rita@Example.Com "):
        assert [i["id"] for i in listed(client, sales, probe)] == [row["id"]], probe
    assert listed(client, sales, "rita2@example.com") == []

    again = add(
        client, sales, expect=200, address="rita@EXAMPLE.com", method="phone", note="called on Monday"
    )
    assert again["id"] == row["id"]
    assert len(listed(client, sales, "rita@example.com")) == 1

    decision = decide(db, cid)
    assert not decision.allowed and decision.reason == "suppressed:manual_request"
    assert decide(db, cid, purpose="service").allowed  # an opt-out does not stop receipts
    # the contact's own preference is not rewritten, but the person stays unreachable
    r = client.post(CONTACTS, json={"email": "rita@example.com", "preferences": OPT_IN_EMAIL}, headers=sales)
    assert r.json()["ignored_preferences"], r.json()
    assert not decide(db, cid).allowed


def test_suppression_before_the_contact_exists_applies_when_created(client, sales, db):
    add(client, sales, address="later@example.com", method="letter")
    cid = contact(client, sales, email="Later@Example.com", preferences=OPT_IN_EMAIL)
    assert decide(db, cid).reason == "suppressed:manual_request"


def test_domain_suppression(client, sales, db):
    inside = contact(client, sales, email="someone@example.org", preferences=OPT_IN_EMAIL)
    outside = contact(client, sales, email="someone@example.net", preferences=OPT_IN_EMAIL)
    row = add(client, sales, address="@Example.ORG", note="competitor")
    assert row["kind"] == "domain"
    assert row["reason"] == "domain_block"
    for purpose in ("marketing", "service"):
        assert decide(db, inside, purpose=purpose).reason == "suppressed:domain_block", purpose
    assert decide(db, outside).allowed
    later = contact(client, sales, email="NEW@example.org", preferences=OPT_IN_EMAIL)
    assert not decide(db, later).allowed
    assert [i["id"] for i in listed(client, sales, "someone@EXAMPLE.org")] == [row["id"]]
    assert [i["id"] for i in listed(client, sales, "@example.org")] == [row["id"]]
    assert listed(client, sales, "someone@example.net") == []
    assert listed(client, sales, "someone@sub.example.org") == []
    assert add(client, sales, expect=200, address="@example.org")["id"] == row["id"]


def test_international_domain_suppression(client, sales, db):
    cid = contact(client, sales, email="josé@exämple.com", preferences=OPT_IN_EMAIL)
    row = add(client, sales, address="@EXÄMPLE.com")
    assert row["kind"] == "domain"
    assert decide(db, cid).reason == "suppressed:domain_block"
    for probe in ("someone@xn--exmple-cua.com", "someone@exämple.com"):
        assert [i["id"] for i in listed(client, sales, probe)] == [row["id"]], probe
    assert add(client, sales, expect=200, address="@xn--exmple-cua.com")["id"] == row["id"]


def test_topic_scope_blocks_only_that_topic(client, sales, db):
    cid = contact(client, sales, email="tom@example.com", preferences=OPT_IN_EMAIL)
    row = add(client, sales, address="tom@example.com", scope="special-offers", method="email")
    assert row["scope"] == "special-offers"
    assert decide(db, cid, topic="special-offers").reason == "suppressed:manual_request"
    for topic in ("member-updates", "partner-offers", "surveys", None):
        assert decide(db, cid, topic=topic).allowed, topic
    # the same address, whole channel, is a distinct entry
    whole = add(client, sales, address="tom@example.com", method="email")
    assert whole["id"] != row["id"]
    assert not decide(db, cid, topic="surveys").allowed


def test_channel_scope(client, sales, db):
    cid = contact(
        client,
        sales,
        email="una@example.com",
        phone="+49 30 12345678",
        preferences=[*OPT_IN_EMAIL, {"channel": "phone", "status": "opted_in"}],
    )
    add(client, sales, channel="phone", address="una@example.com", method="phone")
    assert decide(db, cid, channel="phone").reason == "suppressed:manual_request"
    assert decide(db, cid, channel="email").allowed


def test_phone_suppression(client, sales, db):
    cid = contact(
        client,
        sales,
        email="vic@example.com",
        phone="+49 30 12345678",
        preferences=[*OPT_IN_EMAIL, {"channel": "phone", "status": "opted_in"}],
    )
    assert decide(db, cid, channel="phone").allowed
    row = add(client, sales, channel="phone", address="+49 (0)30 1234 5678", method="phone")
    assert row["kind"] == "phone"
    assert row["channel"] == "phone"
    assert decide(db, cid, channel="phone").reason == "suppressed:manual_request"
    assert decide(db, cid, channel="email").allowed
    for probe in ("+493012345678", "+49 30 12345678", "+49-30-1234-5678"):
        assert [i["id"] for i in listed(client, sales, probe)] == [row["id"]], probe
    # a phone-only lead created afterwards is blocked too
    lead = contact(
        client, sales, phone="+49 30 12345678", preferences=[{"channel": "phone", "status": "opted_in"}]
    )
    assert not decide(db, lead, channel="phone").allowed


def test_hard_block_reason_blocks_service_mail(client, sales, db):
    cid = contact(client, sales, email="wes@example.com", preferences=OPT_IN_EMAIL)
    add(client, sales, address="wes@example.com", reason="invalid", channel="all")
    for purpose in ("marketing", "service"):
        assert decide(db, cid, purpose=purpose).reason == "suppressed:invalid"
    assert decide(db, cid, channel="postal", purpose="service").reason in ("no_address", "suppressed:invalid")


@pytest.mark.parametrize("reason", ["one_click", "unsubscribe", "reply", "bogus"])
def test_recipient_only_or_unknown_reason_refused(client, sales, reason):
    r = client.post(URL, json={"address": "x@example.com", "reason": reason}, headers=sales)
    assert r.status_code == 422, r.text
    assert any("reason" in d["loc"] for d in r.json()["detail"]), r.text
    assert listed(client, sales, "x@example.com") == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"address": "x@example.com", "scope": "no-such-topic"}, "scope"),
        ({"address": "x@example.com", "channel": "fax"}, "channel"),
        ({"address": "not an address"}, "address"),
        ({"address": ""}, "address"),
        ({"address": "   "}, "address"),
        ({"address": "@"}, "address"),
        ({"address": "@localhost"}, "address"),
        ({"address": "x" * 400 + "@example.com"}, "address"),
        ({"address": "x@example.com", "method": "carrier-pigeon"}, "method"),
        ({"address": "x@example.com", "kind": "fax"}, "kind"),
        ({"address": "x@example.com", "kind": "phone"}, "address"),
        ({"address": "x@example.com", "note": "n" * 3000}, "note"),
        ({"address": "x@example.com", "note": "a\x00b"}, "note"),
        ({"address": 42}, "address"),
        ({}, "address"),
    ],
)
def test_bad_suppression_refused_naming_the_field(client, sales, body, field):
    r = client.post(URL, json=body, headers=sales)
    assert r.status_code == 422, r.text
    assert any(field in d["loc"] for d in r.json()["detail"]), r.text
    assert listed(client, sales) == []


@pytest.mark.parametrize(
    "params",
    [
        {"channel": "fax"},
        {"limit": "0"},
        {"limit": "5000"},
        {"offset": "-1"},
        {"reason": "x\x00"},
        {"include_lifted": "perhaps"},
    ],
)
def test_bad_list_query_refused(client, sales, params):
    r = client.get(URL, params=params, headers=sales)
    assert r.status_code == 422, r.text
    assert any(d["loc"][-1] in params for d in r.json()["detail"]), r.text


def test_invalid_lookup_address_is_422(client, sales):
    r = client.get(URL, params={"address": "not an address"}, headers=sales)
    assert r.status_code == 422, r.text
    assert any("address" in d["loc"] for d in r.json()["detail"]), r.text


def test_lift_by_admin(client, sales, admin_headers, db):
    cid = contact(client, sales, email="xena@example.com", preferences=OPT_IN_EMAIL)
    row = add(client, sales, address="xena@example.com", method="phone")
    assert not decide(db, cid).allowed

    r = client.delete(f"{URL}/{row['id']}", params={"note": "wrong person"}, headers=admin_headers)
    assert r.status_code == 200, r.text
    lifted = r.json()
    assert lifted["id"] == row["id"]
    assert lifted["lifted_at"] is not None
    assert lifted["lift_note"] == "wrong person"
    assert decide(db, cid).allowed  # the contact had opted in and nothing else blocks them

    # lifting again changes nothing and is not audited twice
    r = client.delete(f"{URL}/{row['id']}", headers=admin_headers)
    assert r.status_code == 200, r.text
    assert r.json()["lifted_at"] == lifted["lifted_at"]
    with Session(get_engine(db)) as s:
        audits = s.exec(select(AuditLog).where(AuditLog.action == "suppression.lift")).all()
        assert [(a.target_id, a.actor_role) for a in audits] == [(str(row["id"]), "admin")]
        assert audits[0].detail.get("note") == "wrong person"
        events = s.exec(select(ConsentEvent).where(ConsentEvent.status == "lifted")).all()
        assert len(events) == 1 and events[0].evidence["suppression_id"] == row["id"]
        kept = s.get(Suppression, row["id"])
        assert kept is not None and kept.lifted_at is not None  # kept as history


def test_lift_note_with_nul_refused(client, sales, admin_headers):
    row = add(client, sales, address="nul@example.com")
    r = client.delete(f"{URL}/{row['id']}", params={"note": "a\x00b"}, headers=admin_headers)
    assert r.status_code == 422, r.text
    assert ["query", "note"] in [d["loc"] for d in r.json()["detail"]]
    assert listed(client, sales, "nul@example.com")[0]["lifted_at"] is None


def test_lift_unknown_is_404(client, admin_headers):
    r = client.delete(f"{URL}/2147483647", headers=admin_headers)
    assert r.status_code == 404, r.text
    for bad in ("0", "-5", "99999999999999999999", "abc"):
        r = client.delete(f"{URL}/{bad}", headers=admin_headers)
        assert r.status_code == 422, (bad, r.text)


@pytest.mark.parametrize("role", ["marketer", "sales", "compliance"])
def test_lift_by_non_admin_forbidden(client, sales, token_for, role, db):
    cid = contact(client, sales, email="yan@example.com", preferences=OPT_IN_EMAIL)
    row = add(client, sales, address="yan@example.com")
    r = client.delete(f"{URL}/{row['id']}", headers=token_for(role))
    assert r.status_code == 403, r.text
    assert listed(client, sales, "yan@example.com")[0]["lifted_at"] is None
    assert not decide(db, cid).allowed


def test_erasure_suppression_is_not_lifted_by_an_opt_in_request(client, sales, token_for, db):
    cid = contact(client, sales, email="zed@example.com", preferences=OPT_IN_EMAIL)
    assert client.delete(f"{CONTACTS}/{cid}", headers=token_for("compliance")).status_code == 200
    again = contact(client, sales, email="zed@example.com", preferences=OPT_IN_EMAIL)
    assert decide(db, again).reason == "suppressed:erasure"


def test_lifted_entries_hidden_unless_asked(client, sales, admin_headers):
    keep = add(client, sales, address="amy@example.com", method="letter")
    gone = add(client, sales, address="amy@example.com", scope="surveys")
    other = add(client, sales, address="bea@example.com")
    assert client.delete(f"{URL}/{gone['id']}", headers=admin_headers).status_code == 200

    assert [i["id"] for i in listed(client, sales, "amy@example.com")] == [keep["id"]]
    with_lifted = listed(client, sales, "amy@example.com", include_lifted="true")
    assert sorted(i["id"] for i in with_lifted) == sorted([keep["id"], gone["id"]])
    assert {i["id"] for i in listed(client, sales)} == {keep["id"], other["id"]}
    assert {i["id"] for i in listed(client, sales, include_lifted="true")} == {
        keep["id"],
        gone["id"],
        other["id"],
    }
    assert {i["id"] for i in listed(client, sales, reason="manual_request")} == {keep["id"], other["id"]}

    # the lifted scope can be suppressed again: a fresh entry, not the lifted one
    again = add(client, sales, address="amy@example.com", scope="surveys")
    assert again["id"] not in (keep["id"], gone["id"])


def test_entries_found_after_erasure(client, sales, token_for):
    cid = contact(client, sales, email="Cleo@Example.com", phone="+49 30 12345678")
    manual = add(client, sales, address="cleo@example.com", scope="surveys", method="phone")
    assert client.delete(f"{CONTACTS}/{cid}", headers=token_for("compliance")).status_code == 200
    items = listed(client, sales, "CLEO@example.com")
    assert manual["id"] in {i["id"] for i in items}
    assert "erasure" in {i["reason"] for i in items}
    assert all(i["address_hint"] is None for i in items)  # hints are personal data
    phone_items = listed(client, sales, "+493012345678")
    assert {i["reason"] for i in phone_items} == {"erasure"}
    # the erased person cannot be suppressed "again" into a weaker state: still blocked
    add(client, sales, address="cleo@example.com", method="phone")
    assert "erasure" in {i["reason"] for i in listed(client, sales, "cleo@example.com")}


def test_add_is_audited_once(client, sales, db):
    row = add(client, sales, address="dan@example.com", method="phone")
    add(client, sales, expect=200, address="dan@example.com", method="phone")
    with Session(get_engine(db)) as s:
        audits = s.exec(select(AuditLog).where(AuditLog.action == "suppression.add")).all()
    assert [(a.target_id, a.actor_role) for a in audits] == [(str(row["id"]), "sales")]
