"""Rules decided after review: what counts as under age, channel defaults, search escaping."""

from __future__ import annotations


def test_age_not_confirmed_refuses_a_new_lead_but_never_erases_a_known_adult(client, admin_headers):
    refused = client.post(
        "/api/v1/contacts", json={"email": "new@example.com", "age_confirmed": False}, headers=admin_headers
    )
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["body", "age_confirmed"]

    made = client.post(
        "/api/v1/contacts",
        json={"email": "adult@example.com", "date_of_birth": "1980-05-05"},
        headers=admin_headers,
    )
    cid = made.json()["id"]
    patched = client.patch(f"/api/v1/contacts/{cid}", json={"age_confirmed": False}, headers=admin_headers)
    assert patched.status_code == 200 and patched.json()["age_confirmed"] is False
    again = client.post(
        "/api/v1/contacts", json={"email": "adult@example.com", "age_confirmed": False}, headers=admin_headers
    )
    assert again.status_code == 200 and again.json()["id"] == cid
    assert client.get(f"/api/v1/contacts/{cid}", headers=admin_headers).status_code == 200
    # …while a birth date under 18 does erase and suppress.
    minor = client.patch(
        f"/api/v1/contacts/{cid}", json={"date_of_birth": "2015-01-01"}, headers=admin_headers
    )
    assert minor.json() == {"id": cid, "erased": True, "reason": "underage"}


def test_phone_opt_out_defaults_to_the_phone_channel(client, admin_headers):
    r = client.post(
        "/api/v1/suppressions", json={"address": "+49 30 1234567", "method": "phone"}, headers=admin_headers
    )
    assert r.status_code == 201 and r.json()["channel"] == "phone"
    r = client.post("/api/v1/suppressions", json={"address": "x@example.com"}, headers=admin_headers)
    assert r.json()["channel"] == "email"
    r = client.post(
        "/api/v1/suppressions", json={"address": "x@example.com", "channel": "all"}, headers=admin_headers
    )
    assert r.json()["channel"] == "all"


def test_search_treats_wildcards_literally(client, admin_headers):
    for email in ("a_b@example.com", "axb@example.com", "100%@example.com"):
        client.post("/api/v1/contacts", json={"email": email}, headers=admin_headers)
    found = client.get("/api/v1/contacts", params={"q": "a_b"}, headers=admin_headers).json()["items"]
    assert [c["email"] for c in found] == ["a_b@example.com"]
    found = client.get("/api/v1/contacts", params={"q": "%"}, headers=admin_headers).json()["items"]
    assert [c["email"] for c in found] == ["100%@example.com"]


def test_query_errors_name_the_query_parameter(client, admin_headers):
    r = client.get("/api/v1/suppressions", params={"address": "not an address"}, headers=admin_headers)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["query", "address"]
