"""Dramatiq wiring: the intake enqueues ``classify_inbound`` after commit and a worker
runs it (stub broker)."""

from __future__ import annotations

from tests.inbound.helpers import dsn, make_sent, reply


def test_post_then_worker_classifies_and_applies(client, admin_headers, session, inbound_worker) -> None:
    sent = make_sent(session)
    r = client.post(
        "/api/v1/inbound",
        content=dsn("anna@example.org"),
        headers={**admin_headers, "Content-Type": "message/rfc822"},
        params={"envelope_to": sent.bounce_address},
    )
    assert r.status_code == 202
    r2 = client.post(
        "/api/v1/inbound",
        content=reply("Please remove me", sender="zed@example.com", quote=False),
        headers={**admin_headers, "Content-Type": "message/rfc822"},
    )
    inbound_worker()
    got = client.get(f"/api/v1/inbound/{r.json()['id']}", headers=admin_headers).json()
    assert got["kind"] == "bounce" and got["processed_at"] and got["attempts"] == 1
    assert client.get(f"/api/v1/inbound/{r2.json()['id']}", headers=admin_headers).json()["kind"] == "optout"
    items = client.get(
        "/api/v1/suppressions", params={"address": "zed@example.com"}, headers=admin_headers
    ).json()
    assert [i["reason"] for i in items["items"]] == ["reply"]


def test_actor_is_declared_on_the_inbound_queue() -> None:
    from workers.broker import ACTOR_MODULES
    from workers.inbound import classify_inbound

    assert "workers.inbound" in ACTOR_MODULES
    assert classify_inbound.queue_name == "inbound"
