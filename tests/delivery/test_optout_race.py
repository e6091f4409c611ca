"""Invariant 2, exactly: recipients opt out (through the API or the service) while a
campaign of thousands is sending; for each of them, no SMTP transaction begins after
their opt-out was acknowledged."""

from __future__ import annotations

import random
import threading
import time

from sqlmodel import Session

from app.auth.actor import Actor
from app.config import Settings, use_settings
from app.contacts import service as contacts
from app.db import session_scope
from app.delivery import repository
from app.models.base import Channel, PreferenceStatus
from app.preferences.service import PreferenceChange, apply_changes
from tests.campaigns.helpers import CAMPAIGN, bulk_contacts

N = 2000
OPT_OUTS = 120


def test_no_transaction_begins_after_an_acknowledged_opt_out(
    db: Settings, session: Session, client, admin_headers, smtp_server, stub_worker
) -> None:
    settings = db.model_copy(update={"smtp_url": smtp_server.url, "send_batch_size": 20, "slice_size": 250})
    use_settings(settings)
    smtp_server.handler.delay = 0.001
    emails = [f"r{i}@example.com" for i in range(N)]
    ids = bulk_contacts(session, emails)
    chosen = random.Random(42).sample(emails, OPT_OUTS)
    acknowledged: dict[str, float] = {}

    def opt_out_while_sending() -> None:
        rng = random.Random(7)
        while len(smtp_server.handler.received) < 50:
            time.sleep(0.005)
        for index, email in enumerate(chosen):
            cid = ids[email]
            if index % 2:
                r = client.put(
                    f"/api/v1/contacts/{cid}/preferences",
                    headers=admin_headers,
                    json={"preferences": [{"channel": "email", "status": "opted_out"}], "method": "email"},
                )
                assert r.status_code == 200, r.text
            else:
                with session_scope(settings) as s:
                    apply_changes(
                        s,
                        contacts.get(s, cid),
                        [PreferenceChange(Channel.EMAIL, None, PreferenceStatus.OPTED_OUT)],
                        method="link",
                        actor=Actor.recipient(ip="192.0.2.9"),
                    )
            acknowledged[email] = time.monotonic()
            time.sleep(rng.uniform(0.0, 0.02))

    campaign_id = client.post("/api/v1/campaigns", json=CAMPAIGN, headers=admin_headers).json()["id"]
    opt_outs = threading.Thread(target=opt_out_while_sending)
    opt_outs.start()
    client.post(f"/api/v1/campaigns/{campaign_id}/send", headers=admin_headers)
    stub_worker()
    opt_outs.join(timeout=120)
    assert len(acknowledged) == OPT_OUTS

    got = smtp_server.handler.by_rcpt()
    late = {
        email: [
            item.began - acknowledged[email]
            for item in got.get(email, [])
            if item.began >= acknowledged[email]
        ]
        for email in chosen
    }
    assert not any(late.values()), {k: v for k, v in late.items() if v}
    assert all(len(v) == 1 for v in got.values())  # nobody twice
    assert set(got) == set(emails) - {e for e in chosen if e not in got}  # everyone else exactly once
    with Session(session.get_bind()) as s:
        counts = repository.counts(s, campaign_id)
    # The race was real: some opted out before their turn (suppressed at claim time) and
    # some only after their message had gone.
    assert counts.get("suppressed", 0) > 0, counts
    assert sum(1 for e in chosen if e in got) > 0, counts
    assert counts.get("sent", 0) + counts.get("suppressed", 0) == N, counts
