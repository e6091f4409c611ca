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


def test_the_sending_processes_run_at_a_lower_priority_and_in_smaller_batches(db: Settings) -> None:
    """Recipients' requests come before a background campaign's throughput: the children
    add ``embedded_send_nice`` to the server's niceness and claim micro-batches of
    ``embedded_send_batch_size`` (0 keeps the server's priority and ``send_batch_size``)."""
    import os

    from app.config import get_settings

    for nice, batch in ((7, 30), (0, 0)):
        settings = db.model_copy(
            update={"embedded_send_nice": nice, "embedded_send_batch_size": batch, "send_batch_size": 120}
        )
        processes = sending.SendProcesses(settings, 1)
        try:
            child_nice = processes._get_pool().submit(os.nice, 0).result(timeout=60)
            child_settings = processes._get_pool().submit(get_settings).result(timeout=60)
        finally:
            processes.close()
        assert child_nice == min(19, os.nice(0) + nice)
        assert child_settings.send_batch_size == (batch or 120)
