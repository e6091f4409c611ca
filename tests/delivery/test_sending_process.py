"""With the embedded broker, campaign slices are sent by a child process of the server
(``workers.sending``): the same ledger, the same outcomes, nobody twice."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlmodel import Session, select

from app.config import Settings
from app.models import Delivery
from tests.campaigns.helpers import CAMPAIGN, bulk_contacts
from workers import sending


@pytest.fixture
def send_processes(db: Settings) -> Iterator[sending.SendProcesses]:
    processes = sending.SendProcesses(db, 1)
    sending.install(processes)
    yield processes
    sending.install(None)
    processes.close()


def test_a_child_process_sends_the_slices(
    db: Settings,
    session: Session,
    client,  # type: ignore[no-untyped-def]
    admin_headers: dict[str, str],
    stub_worker: Callable[[], None],
    send_processes: sending.SendProcesses,
) -> None:
    emails = [f"child{i}@example.com" for i in range(30)]
    bulk_contacts(session, emails)
    session.commit()
    campaign_id = client.post("/api/v1/campaigns", json=CAMPAIGN, headers=admin_headers).json()["id"]
    assert client.post(f"/api/v1/campaigns/{campaign_id}/send", headers=admin_headers).status_code == 200
    stub_worker()
    session.expire_all()
    rows = session.exec(select(Delivery).where(Delivery.campaign_id == campaign_id)).all()
    assert len(rows) == len(emails)
    assert {row.status for row in rows} == {"sent"}
    assert send_processes._pool is not None  # they went through the child
    url = db.resolved_smtp_url
    assert url.startswith("outbox:")
    assert len(list(Path(url.removeprefix("outbox:")).rglob("*.eml"))) == len(emails)
    assert client.get(f"/api/v1/campaigns/{campaign_id}", headers=admin_headers).json()["status"] == "sent"


def test_stopping_does_not_start_what_is_queued(db: Settings) -> None:
    processes = sending.SendProcesses(db, 1)
    processes.cancel_queued()
    with pytest.raises(RuntimeError):
        processes.run_slice(1, 1, 10)
    processes.close()
