def test_create_read_optout_erase_recreate(client, admin_headers):
    r = client.post(
        "/api/v1/contacts",
        json={
            "email": "Ann@Example.COM",
            "name": "Ann",
            "preferences": [{"channel": "email", "topic": None, "status": "opted_in"}],
        },
        headers=admin_headers,
    )
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    assert r.json()["email"] == "Ann@example.com"
    r = client.put(
        f"/api/v1/contacts/{cid}/preferences",
        json={"preferences": [{"channel": "email", "status": "opted_out"}], "method": "phone"},
        headers=admin_headers,
    )
    assert r.status_code == 200, r.text
    r = client.post(
        "/api/v1/contacts",
        json={"email": "ann@example.com", "preferences": [{"channel": "email", "status": "opted_in"}]},
        headers=admin_headers,
    )
    assert r.status_code == 200, r.text
    assert r.json()["ignored_preferences"], r.json()
    r = client.delete(f"/api/v1/contacts/{cid}", headers=admin_headers)
    assert r.status_code == 200, r.text
    assert client.get(f"/api/v1/contacts/{cid}", headers=admin_headers).status_code == 404
    r = client.get("/api/v1/suppressions", params={"address": "ANN@example.com"}, headers=admin_headers)
    assert {i["reason"] for i in r.json()["items"]} >= {"erasure"}, r.json()
