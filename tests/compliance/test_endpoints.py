"""Compliance API: the consent ledger (proof of consent) and the audit trail."""

from __future__ import annotations

import json
from typing import Any

import pytest

CONTACTS = "/api/v1/contacts"
EVENTS = "/api/v1/consent-events"
AUDIT = "/api/v1/audit"
CONSENT_TEXT = "Yes, send me the member newsletter. I can unsubscribe at any time."


@pytest.fixture
def sales(token_for) -> dict[str, str]:
    return token_for("sales")


@pytest.fixture
def compliance(token_for) -> dict[str, str]:
    return token_for("compliance")


def events(client, headers, **params: Any) -> list[dict[str, Any]]:
    r = client.get(EVENTS, params=params, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def audit(client, headers, **params: Any) -> list[dict[str, Any]]:
    r = client.get(AUDIT, params=params, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def signup(client, headers, email: str, **extra: Any) -> dict[str, Any]:
    body = {
        "email": email,
        "name": "Olga",
        "preferences": [
            {"channel": "email", "topic": None, "status": "opted_in"},
            {"channel": "email", "topic": "surveys", "status": "opted_out"},
        ],
        "consent_text": CONSENT_TEXT,
        "consent_version": "2024-05",
        **extra,
    }
    r = client.post(CONTACTS, json=body, headers={**headers, "User-Agent": "crm-sync/1.0"})
    assert r.status_code == 201, r.text
    return r.json()


def test_consent_history_of_an_opt_in(client, sales, compliance):
    c = signup(client, sales, "Olga@Example.com")
    for probe in ("olga@example.com", "OLGA@EXAMPLE.COM"):
        items = events(client, compliance, address=probe)
        by_channel_topic = {(e["channel"], e["topic"]): e for e in items}
        assert set(by_channel_topic) == {("email", None), ("email", "surveys")}, items
        opt_in = by_channel_topic[("email", None)]
        assert opt_in["status"] == "opted_in"
        assert opt_in["previous_status"] is None
        assert opt_in["method"] == "api"
        assert opt_in["actor"] == "staff"
        assert opt_in["text_shown"] == CONSENT_TEXT
        assert opt_in["text_version"] == "2024-05"
        assert opt_in["ip"] == "testclient"
        assert opt_in["user_agent"] == "crm-sync/1.0"
        assert opt_in["contact_id"] == c["id"]
        assert opt_in["evidence"].get("source") == "api"
        assert opt_in["occurred_at"]
        assert by_channel_topic[("email", "surveys")]["status"] == "opted_out"
    assert [e["id"] for e in events(client, compliance, contact_id=c["id"])] == [e["id"] for e in items]
    assert events(client, compliance, address="someone.else@example.com") == []


def test_method_follows_the_source(client, sales, compliance):
    signup(client, sales, "form@example.com", source="registration", source_detail={"form": "join", "v": 3})
    items = events(client, compliance, address="form@example.com")
    assert {e["method"] for e in items} == {"form"}
    assert all(e["evidence"].get("form") == "join" for e in items)


def test_every_change_is_appended_never_rewritten(client, sales, compliance):
    c = signup(client, sales, "pia@example.com")
    first = events(client, compliance, address="pia@example.com")
    r = client.put(
        f"{CONTACTS}/{c['id']}/preferences",
        json={
            "preferences": [{"channel": "email", "status": "opted_out"}],
            "method": "letter",
            "note": "letter of 3 May",
        },
        headers=sales,
    )
    assert r.status_code == 200, r.text
    after = events(client, compliance, address="pia@example.com")
    assert after[: len(first)] == first  # earlier entries untouched
    new = after[len(first) :]
    assert [(e["status"], e["previous_status"], e["method"]) for e in new] == [
        ("opted_out", "opted_in", "letter")
    ]
    assert new[0]["evidence"] == {"note": "letter of 3 May"}
    # a refused opt-in leaves no trace in the ledger
    r = client.post(
        CONTACTS,
        json={"email": "pia@example.com", "preferences": [{"channel": "email", "status": "opted_in"}]},
        headers=sales,
    )
    assert r.json()["ignored_preferences"]
    assert events(client, compliance, address="pia@example.com") == after


def test_staff_suppression_and_lift_are_in_the_ledger(client, sales, compliance, admin_headers):
    r = client.post(
        "/api/v1/suppressions", json={"address": "quinn@example.com", "method": "phone"}, headers=sales
    )
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert client.delete(f"/api/v1/suppressions/{sid}", headers=admin_headers).status_code == 200
    items = events(client, compliance, address="QUINN@example.com")
    assert [(e["status"], e["method"]) for e in items] == [("suppressed", "phone"), ("lifted", "staff")]
    assert items[1]["evidence"]["suppression_id"] == sid


def test_erasure_removes_the_history_but_keeps_the_proof_of_erasure(client, sales, compliance):
    c = signup(client, sales, "rosa@example.com")
    assert client.delete(f"{CONTACTS}/{c['id']}", headers=compliance).status_code == 200
    items = events(client, compliance, address="rosa@example.com")
    assert [e["status"] for e in items] == ["erased"]
    erased = items[0]
    assert erased["contact_id"] is None
    assert erased["text_shown"] is None and erased["ip"] is None and erased["user_agent"] is None
    assert erased["evidence"]["reason"] == "erasure"
    assert events(client, compliance, contact_id=c["id"]) == []


def test_consent_events_query_validation(client, compliance):
    for params in ({"contact_id": "0"}, {"contact_id": "99999999999999999999"}, {"limit": "0"}):
        r = client.get(EVENTS, params=params, headers=compliance)
        assert r.status_code == 422, (params, r.text)
    r = client.get(EVENTS, params={"address": "not an address"}, headers=compliance)
    assert r.status_code == 422, r.text
    assert any("address" in d["loc"] for d in r.json()["detail"])


def test_audit_lists_staff_actions(client, sales, compliance, admin_headers):
    c = signup(client, sales, "sam@example.com")
    cid = c["id"]
    assert (
        client.post(CONTACTS, json={"email": "SAM@example.com", "city": "Oslo"}, headers=sales).status_code
        == 200
    )
    assert client.patch(f"{CONTACTS}/{cid}", json={"name": "Sam"}, headers=sales).status_code == 200
    assert client.get(f"{CONTACTS}/{cid}/export", headers=compliance).status_code == 200
    r = client.post("/api/v1/suppressions", json={"address": "@spam.example"}, headers=sales)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert client.delete(f"/api/v1/suppressions/{sid}", headers=admin_headers).status_code == 200
    assert client.delete(f"{CONTACTS}/{cid}", headers=compliance).status_code == 200

    items = audit(client, compliance)
    staff = [(i["action"], i["target_id"], i["actor_role"]) for i in items if i["actor_role"]]
    assert staff == [
        ("contact.erase", str(cid), "compliance"),
        ("suppression.lift", str(sid), "admin"),
        ("suppression.add", str(sid), "sales"),
        ("contact.export", str(cid), "compliance"),
        ("contact.rectify", str(cid), "sales"),
        ("contact.update", str(cid), "sales"),
        ("contact.create", str(cid), "sales"),
    ]
    assert all(i["actor_token_id"] for i in items if i["actor_role"])
    ids = [i["id"] for i in items]
    assert ids == sorted(ids, reverse=True)  # newest first
    update = next(i for i in items if i["action"] == "contact.update")
    assert update["detail"]["fields"] == ["city", "email"]

    only = audit(client, compliance, action="suppression.lift")
    assert [i["target_id"] for i in only] == [str(sid)]
    assert audit(client, compliance, action="no.such.action") == []
    assert len(audit(client, compliance, limit=2)) == 2
    assert audit(client, compliance, limit=2, offset=2)[0]["id"] == ids[2]

    # the trail names what was done, not the person: no email address in it after erasure
    assert "sam@example.com" not in json.dumps(items).lower()


@pytest.mark.parametrize(
    "params", [{"limit": "0"}, {"limit": "5000"}, {"offset": "-1"}, {"action": "a\x00b"}]
)
def test_audit_query_validation(client, compliance, params):
    r = client.get(AUDIT, params=params, headers=compliance)
    assert r.status_code == 422, r.text
    assert any(d["loc"][-1] in params for d in r.json()["detail"]), r.text


@pytest.mark.parametrize("role", ["marketer", "sales"])
def test_only_compliance_and_admin_read_the_ledger(client, token_for, role):
    for url in (AUDIT, EVENTS):
        assert client.get(url, headers=token_for(role)).status_code == 403
    for allowed in ("compliance", "admin"):
        for url in (AUDIT, EVENTS):
            assert client.get(url, headers=token_for(allowed)).status_code == 200
