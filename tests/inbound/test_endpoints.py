"""The inbound API: intake answers only after storing; reading kinds and effects;
malformed and oversized input is stored and marked, never a 500."""

from __future__ import annotations

from email.message import EmailMessage

import pytest
from sqlmodel import Session

from app.db import get_engine
from app.inbound import service
from app.inbound.settings import InboundSettings, use_inbound_settings
from app.models import InboundMessage
from tests.inbound.helpers import DOMAIN, dsn, make_sent, reply

RFC822 = {"Content-Type": "message/rfc822"}


def _post(client, headers, raw: bytes, **params: str):
    return client.post("/api/v1/inbound", content=raw, headers={**headers, **RFC822}, params=params)


def test_post_stores_then_get_shows_kind_and_effects(client, admin_headers, session, db) -> None:
    sent = make_sent(session)
    r = _post(
        client, admin_headers, dsn("anna@example.org"), envelope_to=sent.bounce_address, envelope_from=""
    )
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["kind"] == "pending" and body["duplicate"] is False and body["truncated"] is False
    message_id = body["id"]
    with Session(get_engine(db)) as s:
        row = s.get(InboundMessage, message_id)
        assert row is not None and row.raw == dsn("anna@example.org")
        assert row.envelope_to == sent.bounce_address and row.envelope_from == ""
    assert client.get(f"/api/v1/inbound/{message_id}", headers=admin_headers).json()["kind"] == "pending"
    service.process(message_id)
    got = client.get(f"/api/v1/inbound/{message_id}", headers=admin_headers).json()
    assert got["id"] == message_id and got["kind"] == "bounce" and got["bounce_type"] == "hard"
    assert any(e["type"] == "suppression" and e["reason"] == "hard_bounce" for e in got["effects"])
    supp = client.get("/api/v1/suppressions", params={"address": "anna@example.org"}, headers=admin_headers)
    assert [s["reason"] for s in supp.json()["items"]] == ["hard_bounce"]
    again = _post(client, admin_headers, dsn("anna@example.org"), envelope_to=sent.bounce_address)
    assert again.status_code == 202 and again.json() == {**body, "kind": "bounce", "duplicate": True}


def test_replies_are_listed_for_sales(client, token_for, session) -> None:
    sales = token_for("sales")
    sent = make_sent(session)
    ids = []
    for raw in (reply("Do you ship to Austria?", to=sent.reply_address), dsn("anna@example.org")):
        r = _post(client, sales, raw)
        assert r.status_code == 202
        ids.append(r.json()["id"])
        service.process(ids[-1])
    listed = client.get("/api/v1/inbound", params={"kind": "reply"}, headers=sales).json()["items"]
    assert [i["id"] for i in listed] == [ids[0]]
    assert listed[0]["text"] == "Do you ship to Austria?" and listed[0]["contact_id"] == sent.contact_id
    assert client.get("/api/v1/inbound", params={"kind": "nonsense"}, headers=sales).status_code == 422
    raw = client.get(f"/api/v1/inbound/{ids[0]}/raw", headers=sales)
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("message/rfc822")
    assert b"Do you ship to Austria?" in raw.content


def test_empty_and_wrongly_typed_bodies_are_refused(client, admin_headers) -> None:
    assert _post(client, admin_headers, b"").status_code == 422
    r = client.post("/api/v1/inbound", json={"raw": "x"}, headers=admin_headers)
    assert r.status_code == 415
    assert client.get("/api/v1/inbound/999999", headers=admin_headers).status_code == 404


def test_oversized_message_is_stored_truncated_and_marked(client, admin_headers, db) -> None:
    use_inbound_settings(InboundSettings(max_bytes=4096, hard_limit_bytes=64_000))
    raw = reply("hello " * 2000, quote=False)
    assert len(raw) > 4096
    r = _post(client, admin_headers, raw)
    assert r.status_code == 202
    body = r.json()
    assert body["truncated"] is True and body["size_bytes"] == len(raw)
    with Session(get_engine(db)) as s:
        row = s.get(InboundMessage, body["id"])
        assert row is not None and len(row.raw) == 4096 and row.error and "oversized" in row.error
    service.process(body["id"])
    got = client.get(f"/api/v1/inbound/{body['id']}", headers=admin_headers).json()
    assert got["kind"] == "reply" and got["truncated"] is True and "oversized" in got["error"]
    too_big = _post(client, admin_headers, b"X: y\n\n" + b"a" * 70_000)
    assert too_big.status_code == 413


def test_thirty_megabyte_attachment_is_stored_and_classified(client, admin_headers, db) -> None:
    msg = EmailMessage()
    msg["From"] = "anna@example.org"
    msg["To"] = f"reply@{DOMAIN}"
    msg["Subject"] = "Re: Spring offers"
    msg.set_content("Please unsubscribe me. The photo you asked for is attached.")
    msg.add_attachment(
        b"\x89PNG" + bytes(range(256)) * (30 * 1024 * 1024 // 256), maintype="image", subtype="png"
    )
    raw = msg.as_bytes()
    assert len(raw) > 30 * 1024 * 1024
    r = _post(client, admin_headers, raw)
    assert r.status_code == 202, r.text[:200]
    assert r.json()["truncated"] is True  # over the 25 MB default
    assert service.process(r.json()["id"]) == "optout"


MALFORMED = {
    "broken_mime": (
        b"From: a@example.org\nSubject: broken\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="nope"\n\n--wrong\nContent-Type: text/plain\n\nhello\n'
    ),
    "missing_boundary": (
        b"From: a@example.org\nContent-Type: multipart/alternative\n\nplease unsubscribe me\n"
    ),
    "wrong_charset": (
        b"From: a@example.org\nSubject: =?x-unknown?Q?caf=E9?=\nContent-Type: text/plain; charset=x-klingon\n"
        b"Content-Transfer-Encoding: 8bit\n\ncaf\xe9 \xff\xfe d\xe9sabonnez-moi\n"
    ),
    "bad_base64": (
        b"From: a@example.org\nContent-Type: text/plain\nContent-Transfer-Encoding: base64\n\n@@@!!!==\n"
    ),
    "empty_body": b"From: a@example.org\nSubject: nothing\n\n",
    "headers_only": b"From: a@example.org\nSubject: nothing",
    "binary_garbage": bytes(range(256)) * 64,
    "nul_bytes": b"\x00" * 1000,
    "whitespace": b"   \r\n\r\n   ",
    "deeply_nested": (
        b"From: a@example.org\nMIME-Version: 1.0\n"
        + b"".join(f'Content-Type: multipart/mixed; boundary="b{i}"\n\n--b{i}\n'.encode() for i in range(400))
        + b"Content-Type: text/plain\n\nremove me from your list\n"
    ),
    "long_header": b"From: a@example.org\nSubject: " + b"x" * 200_000 + b"\n\nhi\n",
    "html_bomb": b"From: a@example.org\nContent-Type: text/html\n\n" + b"<div>" * 50_000 + b"stop sending\n",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_input_is_stored_and_marked_never_a_500(name, client, admin_headers, db) -> None:
    raw = MALFORMED[name]
    r = _post(client, admin_headers, raw)
    assert r.status_code == 202, (name, r.status_code, r.text[:300])
    message_id = r.json()["id"]
    kind = service.process(message_id)
    assert kind in ("reply", "optout", "unparseable", "autoreply", "bounce"), (name, kind)
    got = client.get(f"/api/v1/inbound/{message_id}", headers=admin_headers)
    assert got.status_code == 200
    body = got.json()
    with Session(get_engine(db)) as s:
        row = s.get(InboundMessage, message_id)
        assert row is not None and row.raw == raw[: len(row.raw)] and row.processed_at is not None
    if name in ("binary_garbage", "nul_bytes", "whitespace"):
        assert body["kind"] == "unparseable" and body["detail"]["problems"]
    assert body["detail"].get("reason") != "parser_error", body["detail"]


def test_retry_is_for_admins(client, token_for, receive) -> None:
    message_id = receive(reply("hi", quote=False))
    assert client.post(f"/api/v1/inbound/{message_id}/retry", headers=token_for("sales")).status_code == 403
    r = client.post(f"/api/v1/inbound/{message_id}/retry", headers=token_for("admin"))
    assert r.status_code == 202 and r.json()["kind"] == "pending"
