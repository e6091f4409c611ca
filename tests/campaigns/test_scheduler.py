"""The periodic tick re-enqueues the open slices of a campaign only when this process is
not sending it: a worker busy with a campaign does not flood the broker with duplicates of
its slices (more of them the larger the campaign) on its first tick and every 30 s."""

from __future__ import annotations

import time

import pytest
from sqlmodel import Session

from app.auth.actor import Actor
from app.campaigns import dispatch, scheduler
from app.campaigns import service as campaigns
from app.campaigns.schemas import CampaignIn
from app.config import Settings
from tests.campaigns.helpers import CAMPAIGN, bulk_contacts


def test_slices_are_enqueued_again_only_when_this_process_is_not_sending_them(
    db: Settings, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.campaigns.service import build_audience

    bulk_contacts(session, ["a@example.com", "b@example.com"])
    session.commit()
    enqueued: list[int] = []
    monkeypatch.setattr(dispatch, "enqueue_build", lambda cid: None)
    monkeypatch.setattr(dispatch, "enqueue_slices", lambda cid, after=0: enqueued.append(cid) or 1)
    campaign = campaigns.create(session, CampaignIn(**CAMPAIGN), Actor.system())
    campaigns.send(session, campaign, Actor.system())
    session.commit()
    assert campaign.id is not None
    build_audience(campaign.id)
    monkeypatch.setattr(scheduler, "_last_requeue", {})
    monkeypatch.setattr(scheduler, "_last_sending", {})

    scheduler.note_sending(campaign.id)  # a slice of it is being sent here
    assert scheduler.tick(db, requeue_after=30).requeued == 0
    assert enqueued == []
    # Nothing sent here for requeue_after: the slices may have been lost; enqueue them.
    monkeypatch.setitem(scheduler._last_sending, campaign.id, time.monotonic() - 31)
    assert scheduler.tick(db, requeue_after=30).requeued == 1
    assert scheduler.tick(db, requeue_after=30).requeued == 0  # not again within requeue_after
    assert enqueued == [campaign.id]
    # A process that never sent it (a restarted embedded server) enqueues them at once.
    monkeypatch.setattr(scheduler, "_last_requeue", {})
    monkeypatch.setattr(scheduler, "_last_sending", {})
    assert scheduler.tick(db, requeue_after=30).requeued == 1
