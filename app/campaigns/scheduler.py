"""The periodic tick: due schedules, lost claims, due retries, finished campaigns, slices
lost with an embedded broker's memory, and inbound mail stored but not yet classified.
Every step is idempotent, so every ``serve`` and ``worker`` process may run it."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

from sqlmodel import col, select

from app.campaigns import dispatch
from app.campaigns import service as campaigns
from app.config import Settings, get_settings
from app.db import session_scope
from app.delivery import repository as ledger
from app.delivery.service import finish_if_done
from app.errors import Conflict
from app.models import Campaign, utcnow

log = logging.getLogger("listwarden.scheduler")


@dataclass
class TickReport:
    started: int = 0
    expired_claims: int = 0
    requeued: int = 0
    finished: int = 0
    inbound_requeued: int = 0
    imports_requeued: int = 0


_last_requeue: dict[int, float] = {}
#: When this process last started or finished a slice of each campaign (``note_sending``).
_last_sending: dict[int, float] = {}


def note_sending(campaign_id: int) -> None:
    """This process is sending a slice of the campaign (called by the ``send_slice`` actor
    as a slice starts and ends)."""
    _last_sending[campaign_id] = time.monotonic()


def tick(settings: Settings | None = None, *, requeue_after: float = 30.0) -> TickReport:
    settings = settings or get_settings()
    report = TickReport()
    now = utcnow()
    with session_scope(settings) as session:
        due = session.exec(
            select(Campaign).where(Campaign.status == "scheduled", col(Campaign.scheduled_at) <= now)
        ).all()
        for campaign in due:
            try:
                campaigns.start_due(session, campaign)
                report.started += 1
            except Conflict:
                continue
    with session_scope(settings) as session:
        report.expired_claims = ledger.expire_stale_claims(
            session, lease=timedelta(seconds=settings.claim_lease_seconds)
        )
    with session_scope(settings) as session:
        from app.imports.service import purge_rejects
        from app.imports.service import requeue_stale as requeue_imports

        report.imports_requeued = len(requeue_imports(session))
        purge_rejects(session)
    with session_scope(settings) as session:
        sending = session.exec(select(Campaign).where(Campaign.status == "sending")).all()
        work = [(c.id, c.audience_built_at is not None) for c in sending if c.id is not None]
    for campaign_id, built in work:
        if finish_if_done(campaign_id, settings=settings):
            report.finished += 1
            continue
        now_seconds = time.monotonic()
        sending_here = _last_sending.get(campaign_id)
        if sending_here is not None and now_seconds - sending_here < requeue_after:
            # This process is sending the campaign: its slices are in the broker. Enqueueing
            # every open slice again (as on a first tick, and every ``requeue_after``) would
            # only add messages that compete for the same rows, more of them the larger the
            # campaign (and a scan of its ledger); slices lost with a broker, and retries
            # come due, are enqueued once this process has sent none for ``requeue_after``.
            continue
        last = _last_requeue.get(campaign_id, 0.0)
        if now_seconds - last < requeue_after:
            continue
        _last_requeue[campaign_id] = time.monotonic()
        if not built:
            dispatch.enqueue_build(campaign_id)
        else:
            report.requeued += dispatch.enqueue_slices(campaign_id)
    return report


def start_scheduler(settings: Settings | None = None) -> threading.Event:
    """Run :func:`tick` every few seconds in a daemon thread; set the event to stop."""
    settings = settings or get_settings()
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(settings.scheduler_interval_seconds):
            try:
                tick(settings)
            except Exception:  # keep ticking: the next tick retries
                log.exception("scheduler tick failed")

    threading.Thread(target=loop, name="listwarden-scheduler", daemon=True).start()
    return stop
