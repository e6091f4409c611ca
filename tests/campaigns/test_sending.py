"""End to end through the stub broker and a real SMTP server: every recipient who passes
the gate gets exactly one message with the required headers; nobody else gets one."""

from __future__ import annotations

import time
from email.utils import parseaddr

import pytest
from sqlmodel import Session

from app.auth.actor import Actor
from app.config import Settings, use_settings
from app.contacts import service as contacts
from app.delivery import repository
from app.models.base import Channel, PreferenceStatus
from app.preferences.service import PreferenceChange, apply_changes
from app.recipients.tokens import TokenKind, read_address_token, read_url_token
from app.suppression.service import add_for_address
from tests.campaigns.helpers import CAMPAIGN, bulk_contacts


@pytest.fixture
def smtp_settings(db: Settings, smtp_server) -> Settings:  # type: ignore[no-untyped-def]
    s = db.model_copy(update={"smtp_url": smtp_server.url, "send_batch_size": 7, "slice_size": 25})
    use_settings(s)
    return s


def wait_status(client, headers, cid: int, wanted: str, timeout: float = 30) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"/api/v1/campaigns/{cid}", headers=headers).json()
        if body["status"] == wanted or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def test_everyone_who_passes_gets_exactly_one_message(
    smtp_settings: Settings, session: Session, client, admin_headers, smtp_server, stub_worker
) -> None:
    passing = [f"ok{i}@example.com" for i in range(40)]
    ids = bulk_contacts(session, [*passing, "out@example.com", "bounced@example.com", "topicout@example.com"])
    bulk_contacts(session, ["noconsent@example.com"], opted_in=False)
    bulk_contacts(session, ["other-topic@example.com"], topic="surveys", channel_level=False)
    erased = bulk_contacts(session, ["erased@example.com"])
    apply_changes(
        session,
        contacts.get(session, ids["out@example.com"]),
        [PreferenceChange(Channel.EMAIL, None, PreferenceStatus.OPTED_OUT)],
        method="link",
        actor=Actor.recipient(),
    )
    apply_changes(
        session,
        contacts.get(session, ids["topicout@example.com"]),
        [PreferenceChange(Channel.EMAIL, "special-offers", PreferenceStatus.OPTED_OUT)],
        method="preference_centre",
        actor=Actor.recipient(),
    )
    add_for_address(
        session,
        address="BOUNCED@example.com",
        channel="email",
        topic=None,
        reason="hard_bounce",
        method=None,
        note=None,
        actor=Actor.system(),
    )
    contacts.erase(
        session, contacts.get(session, erased["erased@example.com"]), Actor(kind="staff", role="admin")
    )
    session.commit()

    created = client.post("/api/v1/campaigns", json=CAMPAIGN, headers=admin_headers)
    assert created.status_code == 201, created.text
    cid = created.json()["id"]
    assert client.post(f"/api/v1/campaigns/{cid}/send", headers=admin_headers).json()["status"] == "sending"
    stub_worker()
    body = wait_status(client, admin_headers, cid, "sent")
    assert body["status"] == "sent", body
    extra = sorted(set(smtp_server.handler.by_rcpt()) - set(passing))
    assert body["counts"] == {"sent": 40}, (body["counts"], extra)

    got = smtp_server.handler.by_rcpt()
    assert sorted(got) == sorted(passing)
    assert all(len(v) == 1 for v in got.values())
    message_ids = set()
    for rcpt, (item,) in got.items():
        msg = item.message()
        cid_ = ids[rcpt]
        # VERP Return-Path and Reply-To name the delivery of this very contact.
        bounce = read_address_token(item.mail_from.split("+", 1)[1].split("@")[0], TokenKind.BOUNCE)
        reply = read_address_token(
            parseaddr(msg["Reply-To"])[1].split("+", 1)[1].split("@")[0], TokenKind.REPLY
        )
        assert bounce.contact_id == reply.contact_id == cid_ and bounce.delivery_id == reply.delivery_id
        https, mailto = [p.strip().strip("<>") for p in msg["List-Unsubscribe"].split(",")]
        assert https.startswith("https://lists.example.test/u/") and mailto.startswith("mailto:unsubscribe+")
        assert (
            read_url_token(https.rsplit("/", 1)[1], TokenKind.UNSUBSCRIBE).delivery_id == bounce.delivery_id
        )
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert msg["List-Id"].endswith("<special-offers.listwarden.example>")
        assert msg["Subject"] == f"Hello {rcpt.split('@')[0].title()}: autumn offers"
        message_ids.add(msg["Message-ID"])
        text = msg.get_body(("plain",)).get_content()
        html = msg.get_body(("html",)).get_content()
        for part in (text, html):
            assert https in part and smtp_settings.postal_address in part
    assert len(message_ids) == 40
    # The ledger records message ids that match what was sent.
    assert body["total"] == 40
    with Session(session.get_bind()) as s:
        assert repository.counts(s, cid) == {"sent": 40}


def test_opt_out_between_audience_and_send_is_honoured_at_send_time(
    smtp_settings: Settings, session: Session, client, admin_headers, smtp_server, stub_worker
) -> None:
    ids = bulk_contacts(session, [f"p{i}@example.com" for i in range(10)])
    cid = client.post("/api/v1/campaigns", json=CAMPAIGN, headers=admin_headers).json()["id"]
    from app.campaigns.service import build_audience

    assert build_audience(cid) == 10  # the ledger is written while everyone may be mailed …
    victim = ids["p3@example.com"]
    r = client.put(
        f"/api/v1/contacts/{victim}/preferences",
        headers=admin_headers,
        json={"preferences": [{"channel": "email", "status": "opted_out"}], "method": "phone"},
    )
    assert r.status_code == 200
    with Session(session.get_bind()) as s:
        from app.models import Campaign

        campaign = s.get(Campaign, cid)
        assert campaign is not None
        campaign.status = "sending"
        s.add(campaign)
        s.commit()
    from app.campaigns import dispatch

    dispatch.enqueue_slices(cid)
    stub_worker()
    body = wait_status(client, admin_headers, cid, "sent")
    assert body["counts"] == {"sent": 9, "suppressed": 1}
    assert "p3@example.com" not in smtp_server.handler.by_rcpt()


def test_pause_takes_effect_within_a_micro_batch_and_resume_finishes(
    smtp_settings: Settings, session: Session, client, admin_headers, smtp_server, stub_worker
) -> None:
    smtp_server.handler.delay = 0.02
    emails = [f"q{i}@example.com" for i in range(60)]
    bulk_contacts(session, emails)
    cid = client.post("/api/v1/campaigns", json=CAMPAIGN, headers=admin_headers).json()["id"]
    client.post(f"/api/v1/campaigns/{cid}/send", headers=admin_headers)
    deadline = time.monotonic() + 20
    while len(smtp_server.handler.received) < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert client.post(f"/api/v1/campaigns/{cid}/pause", headers=admin_headers).json()["status"] == "paused"
    at_pause = len(smtp_server.handler.received)
    stub_worker()
    time.sleep(0.5)
    after = len(smtp_server.handler.received)
    # Work already claimed finishes (at most one micro-batch per slice in flight); nothing more.
    assert after <= at_pause + 2 * smtp_settings.send_batch_size, (at_pause, after)
    assert after < 60
    assert client.post(f"/api/v1/campaigns/{cid}/pause", headers=admin_headers).status_code == 409
    assert client.post(f"/api/v1/campaigns/{cid}/resume", headers=admin_headers).json()["status"] == "sending"
    from app.campaigns import dispatch

    dispatch.enqueue_slices(cid)  # a duplicate delivery of every slice message is harmless
    dispatch.enqueue_slices(cid)
    stub_worker()
    body = wait_status(client, admin_headers, cid, "sent")
    assert body["counts"] == {"sent": 60}
    got = smtp_server.handler.by_rcpt()
    assert sorted(got) == sorted(emails) and all(len(v) == 1 for v in got.values())
    assert client.post(f"/api/v1/campaigns/{cid}/cancel", headers=admin_headers).status_code == 409


def test_cancel_stops_sending(
    smtp_settings: Settings, session: Session, client, admin_headers, smtp_server, stub_worker
) -> None:
    smtp_server.handler.delay = 0.02
    bulk_contacts(session, [f"c{i}@example.com" for i in range(60)])
    cid = client.post("/api/v1/campaigns", json=CAMPAIGN, headers=admin_headers).json()["id"]
    client.post(f"/api/v1/campaigns/{cid}/send", headers=admin_headers)
    deadline = time.monotonic() + 20
    while len(smtp_server.handler.received) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (
        client.post(f"/api/v1/campaigns/{cid}/cancel", headers=admin_headers).json()["status"] == "cancelled"
    )
    stub_worker()
    body = client.get(f"/api/v1/campaigns/{cid}", headers=admin_headers).json()
    assert body["status"] == "cancelled"
    assert body["counts"].get("sent", 0) < 60 and body["counts"].get("pending", 0) > 0
    assert client.post(f"/api/v1/campaigns/{cid}/resume", headers=admin_headers).status_code == 409


def test_schedule_survives_and_starts_when_due(
    smtp_settings: Settings, session: Session, client, admin_headers, smtp_server, stub_worker
) -> None:
    from datetime import UTC, datetime, timedelta

    from app.campaigns.scheduler import tick

    bulk_contacts(session, ["s1@example.com", "s2@example.com"])
    later = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    cid = client.post(
        "/api/v1/campaigns", json={**CAMPAIGN, "scheduled_at": later}, headers=admin_headers
    ).json()["id"]
    assert client.post(f"/api/v1/campaigns/{cid}/send", headers=admin_headers).json()["status"] == "scheduled"
    assert tick(smtp_settings).started == 0
    time.sleep(1.1)
    assert tick(smtp_settings).started == 1  # any process's scheduler picks it up from the database
    stub_worker()
    assert wait_status(client, admin_headers, cid, "sent")["counts"] == {"sent": 2}


def test_test_send_and_preview(
    smtp_settings: Settings, session: Session, client, admin_headers, smtp_server
) -> None:
    ids = bulk_contacts(session, ["real@example.com"])
    add_for_address(
        session,
        address="blocked@example.org",
        channel="email",
        topic=None,
        reason="complaint",
        method=None,
        note=None,
        actor=Actor.system(),
    )
    session.commit()
    cid = client.post("/api/v1/campaigns", json=CAMPAIGN, headers=admin_headers).json()["id"]
    preview = client.get(
        f"/api/v1/campaigns/{cid}/preview",
        params={"contact_id": ids["real@example.com"]},
        headers=admin_headers,
    )
    assert preview.status_code == 200 and preview.json()["subject"] == "Hello Real: autumn offers"
    r = client.post(
        f"/api/v1/campaigns/{cid}/test",
        json={"emails": ["me@example.org", "blocked@example.org"]},
        headers=admin_headers,
    )
    assert r.status_code == 200, r.text
    assert r.json()["sent"] == ["me@example.org"]
    assert r.json()["refused"] == {"blocked@example.org": "suppressed:complaint"}
    (item,) = smtp_server.handler.received
    assert item.message()["Subject"].startswith("[TEST] ")
    assert (
        client.get(f"/api/v1/campaigns/{cid}", headers=admin_headers).json()["total"] == 0
    )  # no ledger rows


def test_slices_are_enqueued_chunk_by_chunk_each_row_once(
    smtp_settings: Settings, session: Session, client, admin_headers, monkeypatch
) -> None:
    """The build actor enqueues the slices of each chunk of the ledger as soon as it is
    written, so sending starts early; together the slices cover every row exactly once."""
    from app.campaigns import dispatch
    from app.campaigns import service as campaign_service
    from workers import campaigns as actors

    bulk_contacts(session, [f"c{i}@example.com" for i in range(60)])
    cid = client.post("/api/v1/campaigns", json=CAMPAIGN, headers=admin_headers).json()["id"]
    monkeypatch.setattr(campaign_service, "AUDIENCE_CHUNK", 17)
    sent: list[tuple[int, int, int]] = []
    chunks: list[int] = []
    monkeypatch.setattr(actors.send_slice, "send", lambda *args: sent.append(args))
    feeder = dispatch.SliceFeeder(cid)

    def on_chunk() -> None:
        chunks.append(len(sent))
        feeder()

    campaign_service.build_audience(cid, on_chunk=on_chunk)
    feeder()
    assert len(chunks) >= 3 and chunks[1] > 0  # slices went out before the last chunk
    with Session(session.get_bind()) as s:
        from sqlmodel import select

        from app.models import Delivery

        ids = sorted(d.id for d in s.exec(select(Delivery).where(Delivery.campaign_id == cid)))
    covered = sorted(i for _cid, lo, hi in sent for i in ids if lo <= i <= hi)
    assert covered == ids  # every row in exactly one slice
