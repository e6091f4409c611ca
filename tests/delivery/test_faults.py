"""Fault tests against a scripted SMTP server: temporary failures are retried and delivered
once; permanent ones fail; "no such user" suppresses; a connection lost after the final dot
leaves the delivery ``unknown`` and it is never sent again; a relay that is down for a while
makes the campaign wait and then finish."""

from __future__ import annotations

import time

import pytest
from sqlmodel import Session, select

from app.campaigns.scheduler import tick
from app.config import Settings, use_settings
from app.models import Delivery, Suppression
from app.suppression import gate
from tests.campaigns.helpers import CAMPAIGN, bulk_contacts
from tests.smtp_server import SmtpServer, free_port


@pytest.fixture
def fast_retry(db: Settings, smtp_server) -> Settings:  # type: ignore[no-untyped-def]
    s = db.model_copy(update={"smtp_url": smtp_server.url, "retry_base_seconds": 0.05, "send_batch_size": 5})
    use_settings(s)
    return s


def run_until_done(settings: Settings, client, headers, cid: int, stub_worker, rounds: int = 40) -> dict:  # type: ignore[no-untyped-def]
    body: dict = {}
    for _ in range(rounds):
        stub_worker()
        body = client.get(f"/api/v1/campaigns/{cid}", headers=headers).json()
        if body["status"] == "sent":
            return body
        time.sleep(0.1)
        tick(settings, requeue_after=0)  # the scheduler re-enqueues due retries
    return body


def start(client, headers) -> int:  # type: ignore[no-untyped-def]
    cid = client.post("/api/v1/campaigns", json=CAMPAIGN, headers=headers).json()["id"]
    assert client.post(f"/api/v1/campaigns/{cid}/send", headers=headers).status_code == 200
    return int(cid)


def deliveries(session: Session) -> dict[int, Delivery]:
    session.expire_all()
    return {d.contact_id: d for d in session.exec(select(Delivery))}


def test_temporary_failures_are_retried_and_delivered_once(
    fast_retry, session, client, admin_headers, smtp_server, stub_worker
) -> None:  # type: ignore[no-untyped-def]
    ids = bulk_contacts(session, ["a@example.com", "b@example.com", "c@example.com", "ok@example.com"])
    smtp_server.handler.script = {
        "a@example.com": ["451", "451"],  # two 4xx replies, then accepted
        "b@example.com": ["drop-rcpt"],  # the connection drops mid-transaction
        "c@example.com": ["drop-data"],  # … and here after the final dot: may have been delivered
    }
    cid = start(client, admin_headers)
    body = run_until_done(fast_retry, client, admin_headers, cid, stub_worker)
    assert body["status"] == "sent", body
    assert body["counts"] == {"sent": 3, "unknown": 1}
    got = smtp_server.handler.by_rcpt()
    assert {k: len(v) for k, v in got.items()} == {
        "a@example.com": 1,
        "b@example.com": 1,
        "ok@example.com": 1,
    }
    rows = deliveries(session)
    assert rows[ids["a@example.com"]].attempts == 3 and rows[ids["b@example.com"]].attempts == 2
    assert rows[ids["c@example.com"]].attempts == 1  # never tried again: at most once
    assert smtp_server.handler.attempts["c@example.com"] == 1


def test_user_unknown_fails_and_suppresses(
    fast_retry, session, client, admin_headers, smtp_server, stub_worker
) -> None:  # type: ignore[no-untyped-def]
    ids = bulk_contacts(session, ["gone@example.com", "policy@example.com", "ok@example.com"])
    smtp_server.handler.script = {"gone@example.com": ["550"], "policy@example.com": ["554"]}
    cid = start(client, admin_headers)
    body = run_until_done(fast_retry, client, admin_headers, cid, stub_worker)
    assert body["counts"] == {"sent": 1, "bounced": 1, "failed": 1}
    rows = deliveries(session)
    assert (
        rows[ids["gone@example.com"]].smtp_code == 550 and rows[ids["gone@example.com"]].status == "bounced"
    )
    supp = session.exec(select(Suppression).where(Suppression.reason == "hard_bounce")).one()
    assert supp.delivery_id == rows[ids["gone@example.com"]].id
    # A hard bounce blocks even service mail; a policy rejection suppresses nobody.
    assert (
        gate.check_one(
            session, ids["gone@example.com"], channel="email", topic=None, purpose="service"
        ).reason
        == "suppressed:hard_bounce"
    )
    assert gate.check_one(
        session, ids["policy@example.com"], channel="email", topic="special-offers", purpose="marketing"
    ).allowed


def test_relay_down_for_a_while(db: Settings, session, client, admin_headers, stub_worker) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    settings = db.model_copy(
        update={
            "smtp_url": f"smtp://127.0.0.1:{port}?starttls=0&connections=2&timeout=5",
            "retry_base_seconds": 0.05,
        }
    )
    use_settings(settings)
    bulk_contacts(session, [f"w{i}@example.com" for i in range(6)])
    cid = start(client, admin_headers)
    stub_worker()
    body = client.get(f"/api/v1/campaigns/{cid}", headers=admin_headers).json()
    assert body["status"] == "sending" and body["counts"] == {"deferred": 6}
    with SmtpServer(port) as server:
        body = run_until_done(settings, client, admin_headers, cid, stub_worker)
        assert body["status"] == "sent" and body["counts"] == {"sent": 6}
        assert all(len(v) == 1 for v in server.handler.by_rcpt().values())


def test_retries_are_bounded(db: Settings, session, client, admin_headers, smtp_server, stub_worker) -> None:  # type: ignore[no-untyped-def]
    settings = db.model_copy(
        update={"smtp_url": smtp_server.url, "retry_base_seconds": 0.01, "max_attempts": 3}
    )
    use_settings(settings)
    bulk_contacts(session, ["busy@example.com"])
    smtp_server.handler.script = {"busy@example.com": ["451"] * 10}
    cid = start(client, admin_headers)
    body = run_until_done(settings, client, admin_headers, cid, stub_worker)
    assert body["counts"] == {"failed": 1}
    assert smtp_server.handler.attempts["busy@example.com"] == 3
